"""A number's calling settings through the bridge (``GET``/``PATCH
/numbers/{numberID}/settings``) against the fake Meta's ``/{PHONE_NUMBER_ID}/settings``."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from bridge.api.keys import MANAGER, SWITCHBOARD

from ..support.calls import events_counted
from ..support.waits import until


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


HOURS = {
    "status": "ENABLED",
    "timezoneID": "America/Sao_Paulo",
    "weeklyOperatingHours": [
        {"dayOfWeek": "MONDAY", "openTime": "0900", "closeTime": "1200"},
        {"dayOfWeek": "MONDAY", "openTime": "1400", "closeTime": "1800"},
    ],
    "holidaySchedule": [{"date": "2026-12-25", "startTime": "0000", "endTime": "2359"}],
}


async def test_read_and_change_the_settings_in_camel_case(cclient, meta):
    client = await cclient()
    meta.account.calling["sip"] = {
        "status": "ENABLED",
        "servers": [{"hostname": "sip.example.com", "port": 5061, "sip_user_password": "pw"}],
    }
    got = await (await client.get("/numbers/default/settings")).json()
    assert got == {
        "status": "ENABLED",
        "callIconVisibility": "DEFAULT",
        "callbackPermission": "DISABLED",
        "srtpKeyExchange": "DTLS",
        "sip": {"status": "ENABLED", "servers": [{"hostname": "sip.example.com", "port": 5061}]},
    }
    resp = await client.patch(
        "/numbers/default/settings",
        json={"callHours": HOURS, "callbackPermission": "ENABLED", "additionalCodecs": ["PCMA"]},
    )
    body = await resp.json()
    assert resp.status == 200, body
    [posted] = meta.account.settings_posts
    assert posted == {
        "calling": {
            "call_hours": {
                "status": "ENABLED",
                "timezone_id": "America/Sao_Paulo",
                "weekly_operating_hours": [
                    {"day_of_week": "MONDAY", "open_time": "0900", "close_time": "1200"},
                    {"day_of_week": "MONDAY", "open_time": "1400", "close_time": "1800"},
                ],
                "holiday_schedule": [
                    {"date": "2026-12-25", "start_time": "0000", "end_time": "2359"}
                ],
            },
            "callback_permission_status": "ENABLED",
            "audio": {"additional_codecs": ["PCMA"]},
        }
    }
    assert body["callHours"] == HOURS and body["callbackPermission"] == "ENABLED"
    assert body["additionalCodecs"] == ["PCMA"]


@pytest.mark.parametrize(
    ("hours", "field"),
    [
        (
            {
                **HOURS,
                "weeklyOperatingHours": [
                    {"dayOfWeek": "MONDAY", "openTime": f"{h:02}00", "closeTime": f"{h:02}30"}
                    for h in (8, 10, 12)
                ],
            },
            "callHours.weeklyOperatingHours",
        ),
        ({**HOURS, "timezoneID": "Mars/Olympus"}, "callHours.timezoneID"),
        (
            {
                **HOURS,
                "holidaySchedule": [
                    {"date": f"2026-01-{d:02}", "startTime": "0000", "endTime": "2359"}
                    for d in range(1, 22)
                ],
            },
            "callHours.holidaySchedule",
        ),
        (
            {
                **HOURS,
                "weeklyOperatingHours": [
                    {"dayOfWeek": "FRIDAY", "openTime": "1800", "closeTime": "0900"}
                ],
            },
            "callHours.weeklyOperatingHours[0]",
        ),
        ({"status": "ENABLED"}, "callHours"),  # no timezone, no week: Meta refuses it
        ({"status": "ENABLED", "timezoneID": "America/Sao_Paulo"}, "callHours"),
    ],
)
async def test_metas_rules_are_checked_before_sending(cclient, meta, hours, field):
    client = await cclient()
    resp = await client.patch("/numbers/default/settings", json={"callHours": hours})
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "invalid_settings", error
    assert f"'{field}'" in error["message"]
    assert meta.account.settings_posts == []


async def test_bad_fields_and_metas_refusal(cclient, meta):
    client = await cclient()
    resp = await client.patch("/numbers/default/settings", json={"callIcon": "DEFAULT"})
    assert resp.status == 400 and "callIcon" in (await resp.json())["error"]["message"]
    resp = await client.patch("/numbers/default/settings", json={"status": "MAYBE"})
    assert resp.status == 400 and "status" in (await resp.json())["error"]["message"]
    meta.account.refuse_settings = "call_hours cannot be enabled while calling is disabled"
    resp = await client.patch("/numbers/default/settings", json={"callHours": HOURS})
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "settings_refused", error
    assert error["details"]["metaCode"] == 100
    assert "cannot be enabled while calling" in error["message"]
    assert "calling must be enabled" in error["message"]  # the hint
    # A code the bridge knows keeps its own status and hint.
    meta.account.messaging_limit = 1000
    resp = await client.patch("/numbers/default/settings", json={"status": "ENABLED"})
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "messaging_limit_too_low", error
    assert error["details"]["metaCode"] == 138015
    assert "raise the number's messaging limit" in error["message"]
    resp = await client.get("/numbers/nope/settings")
    assert resp.status == 404


async def test_a_number_without_meta_settings(make_client):
    client = await make_client()  # the simulator
    resp = await client.get("/numbers/default/settings")
    error = (await resp.json())["error"]
    assert resp.status == 404 and error["code"] == "settings_not_supported", error


async def test_sip_server_fields_keep_metas_names(cclient, meta):
    """``sip`` goes to Meta with Meta's names (``request_uri_user_params``, whose own keys are
    the operator's and pass as they are; ``webhook_delivery``) and comes back in ours."""
    client = await cclient()
    params = {"tgrp": "wa-sales", "trunk-context": "pbx.example"}
    server = {"hostname": "sip.example.com", "port": 5061, "requestUriUserParams": params}
    sip = {"status": "ENABLED", "webhookDelivery": "ENABLED", "servers": [server]}
    resp = await client.patch("/numbers/default/settings", json={"sip": sip})
    body = await resp.json()
    assert resp.status == 200, body
    [posted] = meta.account.settings_posts
    assert posted == {
        "calling": {
            "sip": {
                "status": "ENABLED",
                "webhook_delivery": "ENABLED",
                "servers": [
                    {"hostname": "sip.example.com", "port": 5061, "request_uri_user_params": params}
                ],
            }
        }
    }
    assert body["sip"]["servers"][0]["requestUriUserParams"] == params
    assert body["sip"]["webhookDelivery"] == "ENABLED"


async def test_call_icons_restricted_to_countries(cclient, meta):
    """``callIcons.restrictToUserCountries`` ↔ Meta's ``call_icons.restrict_to_user_countries``;
    a code that names no country is refused before Meta is asked."""
    client = await cclient()
    resp = await client.patch(
        "/numbers/default/settings", json={"callIcons": {"restrictToUserCountries": ["BR", "IN"]}}
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert meta.account.settings_posts == [
        {"calling": {"call_icons": {"restrict_to_user_countries": ["BR", "IN"]}}}
    ]
    assert body["callIcons"] == {"restrictToUserCountries": ["BR", "IN"]}
    for bad, field in (
        ({"callIcons": {"restrictToUserCountries": ["ZZ"]}}, "callIcons.restrictToUserCountries"),
        ({"callIcons": {"restrictToUserCountries": ["br"]}}, "callIcons"),
        ({"restrictions": {"restrictionsList": []}}, "restrictions"),
    ):
        resp = await client.patch("/numbers/default/settings", json=bad)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_settings", error
        assert field.split(".")[0] in error["message"], error
    assert len(meta.account.settings_posts) == 1  # none of those reached Meta


async def test_each_number_has_its_own_settings_at_meta(cclient, meta, tmp_path):
    """Meta keeps calling settings per phone number id: a second number's settings, changed
    through the bridge, go to that number (its id, its token) and change nothing of the
    first's; Meta's offers then carry G.711 on calls to the second number only."""
    client = await cclient(data_dir=str(tmp_path))
    meta.add_number("2098765432", "second-token")
    cloudapi = meta.number_fields("2098765432")
    body = {"phone": "+15550783000", "engine": "cloudapi", "cloudapi": cloudapi}
    resp = await client.post("/numbers", json=body)
    assert resp.status == 201, await resp.text()
    second = (await resp.json())["numberID"]
    patch = {"additionalCodecs": ["PCMU"], "callbackPermission": "ENABLED"}
    resp = await client.patch(f"/numbers/{second}/settings", json=patch)
    assert resp.status == 200, await resp.text()
    assert meta.accounts["2098765432"].settings_posts == [
        {
            "calling": {
                "callback_permission_status": "ENABLED",
                "audio": {"additional_codecs": ["PCMU"]},
            }
        }
    ]
    assert meta.account.settings_posts == []
    got = await (await client.get(f"/numbers/{second}/settings")).json()
    assert (got["additionalCodecs"], got["callbackPermission"]) == (["PCMU"], "ENABLED")
    first = await (await client.get("/numbers/default/settings")).json()
    assert "additionalCodecs" not in first and first["callbackPermission"] == "DISABLED"
    _, to_second = await meta.user_offer("15550001111", "2098765432")
    _, to_first = await meta.user_offer("15550002222")
    assert "PCMU/8000" in to_second["calls"][0]["session"]["sdp"]
    assert "PCMU/8000" not in to_first["calls"][0]["session"]["sdp"]


async def test_settings_meta_refuses_come_back_with_metas_reason(cclient, meta):
    """What the bridge's own checks let through and Meta refuses (a SIP server's host name
    that is none): 400 ``settings_refused`` with Meta's code and reason, nothing changed at
    Meta."""
    client = await cclient()
    for patch, reason in [
        ({"sip": {"status": "ENABLED", "servers": [{"hostname": "sip bridge"}]}}, "hostname"),
    ]:
        resp = await client.patch("/numbers/default/settings", json=patch)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "settings_refused", (patch, error)
        assert error["details"]["metaCode"] == 100 and reason in error["message"], error
    assert meta.account.calling.get("call_hours") is None
    assert meta.account.calling["sip"] == {"status": "DISABLED", "servers": []}


async def test_metas_own_settings_update_after_a_change_is_announced_once(cclient, meta):
    """Meta tells every settings change with an ``account_settings_update`` webhook, the
    business's own changes too: the fake sends it after answering the POST. The bridge
    announces it once (``number.settings_changed``, the number's settings as Meta has them
    now), with no SIP password in it."""
    client = await cclient()
    meta.subscribe(client)
    meta.account.calling["sip"] = {
        "status": "DISABLED",
        "servers": [{"hostname": "sip.example.com", "port": 5061, "sip_user_password": "s3"}],
    }
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.patch(
            "/numbers/default/settings", json={"callIconVisibility": "DISABLE_ALL"}
        )
        assert resp.status == 200, await resp.text()
        events = await events_counted(sub, {"number.settings_changed"}, 1, timeout=3)
    assert meta.told == [("account_settings_update", 200)]
    assert len(events) == 1
    said = json.loads(events[0].to_json())
    assert said["numberID"] == "default"
    assert said["calling"]["call_icon_visibility"] == "DISABLE_ALL"
    assert "s3" not in json.dumps(said)


async def test_a_deleted_numbers_comparison_asked_by_metas_webhook_ends_with_it(
    cclient, meta, tmp_path
):
    """Meta's ``account_settings_update`` starts a comparison of the number's settings (a
    Graph read): the number deleted meanwhile, the comparison ran on, asking Meta about a
    number gone. Its deletion ends it; no settings read for it reaches Meta after."""
    client = await cclient(data_dir=str(tmp_path))
    meta.add_number("2098765433", "third-token")
    body = {
        "phone": "+15550783001",
        "engine": "cloudapi",
        "cloudapi": meta.number_fields("2098765433"),
    }
    resp = await client.post("/numbers", json=body)
    assert resp.status == 201, await resp.text()
    number_id = (await resp.json())["numberID"]
    account = meta.accounts["2098765433"]
    reads: list[str] = []
    asked, held = asyncio.Event(), asyncio.Event()
    answer = account.settings_endpoint

    async def slow_meta(request: web.Request) -> web.StreamResponse:
        reads.append(request.method)
        asked.set()
        await held.wait()
        return await answer(request)

    account.settings_endpoint = slow_meta  # type: ignore[method-assign]
    resp = await meta.post(client, account.settings_changed("2098765433", account.calling))
    assert resp.status == 200, await resp.text()
    await asyncio.wait_for(asked.wait(), 3)
    named = f"switchboard:setup:{number_id}"
    assert any(t.get_name() == named for t in asyncio.all_tasks())
    resp = await client.delete(f"/numbers/{number_id}")
    assert resp.status == 200, await resp.text()
    await until(lambda: all(t.get_name() != named for t in asyncio.all_tasks()), 2, "its task")
    assert reads == ["GET"]
    held.set()
    resp = await meta.post(client, account.settings_changed("2098765433", account.calling))
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(0.2)
    assert reads == ["GET"]  # nothing asked about the deleted number since
    assert number_id not in client.app[SWITCHBOARD].setup.found
