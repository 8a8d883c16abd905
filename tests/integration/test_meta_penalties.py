"""Meta's penalties and limits on a business number (the Cloud API engine against the fake
Meta): 138014/138015/613 refusals with hints, the ``account_update`` warning and pause
webhooks (``number.warning``, ``number.paused``, ``/call/make`` refused here, ``/readyz``),
``account_settings_update``, and one business call per user at a time."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any

import pytest

from bridge.api.keys import ENGINE, MANAGER, SWITCHBOARD
from bridge.timefmt import parse_iso_utc

from ..support.waits import until
from .test_call_permissions import next_event

USER = "5521977770000"


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def deliver(client: Any, meta: Any, body: dict[str, Any]) -> None:
    """Meta posts a webhook body and the bridge has worked through it."""
    resp = await meta.post(client, body)
    assert resp.status == 200, await resp.text()
    await until(client.app[ENGINE].graph_side.inbox.queue.empty, 2, "the webhook taken")


async def settings_read_at_start(client: Any) -> None:
    """The bridge has read Meta's settings once (at start: a pause that begins later is one it
    learns of only from Meta's refusal or webhook, or at the next read)."""
    setup = client.app[SWITCHBOARD].setup
    await until(lambda: "default" in setup.found, 5, "Meta's settings read at start")


def connects(meta: Any) -> int:
    return sum(1 for a in meta.actions if a.get("action") == "connect")


@pytest.mark.parametrize(
    ("code", "status", "api_code", "hint"),
    [
        (138014, 403, "calling_paused", "user-initiated calls still work"),
        (138015, 403, "messaging_limit_too_low", "raise the number's messaging limit"),
        (613, 429, "meta_rate_limit", "slow down"),
    ],
)
async def test_metas_limits_are_refusals_with_a_hint(cclient, meta, code, status, api_code, hint):
    client = await cclient()
    await settings_read_at_start(client)
    if code == 138014:
        meta.account.paused_until = time.time() + 3600
    elif code == 138015:
        meta.account.messaging_limit = 1000
    else:
        meta.account.rate_limited = 1
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == api_code
    assert body["error"]["details"]["metaCode"] == code
    assert hint in body["error"]["message"]
    if status == 429:  # Meta gave no Retry-After: the bridge's default for its limits
        assert int(resp.headers["Retry-After"]) == 60
    else:  # Meta did not say until when: no Retry-After is made up
        assert "Retry-After" not in resp.headers
    assert (await (await client.get("/call/status")).json())["calls"] == []


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_a_retry_after_from_meta_is_read_in_either_form(cclient, meta, form):
    """A ``Retry-After`` on Graph's 613, as seconds or as an HTTP date (RFC 9110 §10.2.3),
    is the 429's: the date form was not read (the bridge's own 60 s went out instead)."""
    client = await cclient()
    await settings_read_at_start(client)
    meta.account.rate_limited = 1
    later = "120" if form == "seconds" else formatdate(time.time() + 120, usegmt=True)
    meta.account.rate_limit_retry_after = later
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "meta_rate_limit", body
    assert 115 <= int(resp.headers["Retry-After"]) <= 121


async def test_a_138014_pauses_the_number_so_meta_is_not_asked_again(cclient, meta):
    client = await cclient()
    await settings_read_at_start(client)
    meta.account.paused_until = time.time() + 3600
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 403 and connects(meta) == 1
    again = await client.post("/call/make", json={"phone": "5521977771111"})
    body = await again.json()
    assert again.status == 403 and body["error"]["code"] == "calling_paused", body
    assert connects(meta) == 1  # refused here
    assert body["error"]["details"]["until"] is None  # Meta has not said until when yet


async def test_account_update_warns_then_pauses_calling(cclient, meta, caplog):
    client = await cclient()
    manager = client.app[MANAGER]
    bad_before = client.app[ENGINE].stats.bad_messages
    async with manager.events.subscribe() as sub:
        with caplog.at_level(logging.WARNING):
            await deliver(client, meta, meta.account.warning())
            warning = await next_event(sub, "number.warning")
            assert json_of(warning) == {
                "type": "number.warning",
                "numberID": "default",
                "tenantID": "",
                "violation": "BUSINESS_INITIATED_CALLING_QUALITY",
            }
            await deliver(client, meta, meta.account.pause(7 * 86400))
            paused = json_of(await next_event(sub, "number.paused"))
    until_s = parse_iso_utc(paused["until"])
    assert abs(until_s - meta.account.paused_until) < 1
    assert paused["reason"] == "RESTRICTED_BUSINESS_INITIATED_CALLING"
    assert (paused["numberID"], paused["tenantID"]) == ("default", "")
    assert client.app[ENGINE].stats.bad_messages == bad_before  # not malformed any more
    pauses = [r for r in caplog.records if "paused business-initiated calling" in r.message]
    assert len(pauses) == 1 and pauses[0].levelno == logging.WARNING

    # /call/make says why, and Meta is not asked.
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "calling_paused", body
    assert "RESTRICTED_BUSINESS_INITIATED_CALLING" in body["error"]["message"]
    assert body["error"]["details"]["until"] == paused["until"]
    assert 7 * 86400 - 60 < int(resp.headers["Retry-After"]) <= 7 * 86400 + 1
    assert connects(meta) == 0

    # Readiness stays up (user-initiated calls still work) and names the paused number.
    ready = await client.get("/readyz")
    state = await ready.json()
    assert ready.status == 200 and state["ready"] is True
    assert state["numbers"]["paused"] == [
        {"numberID": "default", "reason": paused["reason"], "until": paused["until"]}
    ]
    metrics = await (await client.get("/metrics")).text()
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith('bridge_number_calling_paused_until_seconds{number="default"}')
    )
    assert abs(float(line.split()[-1]) - until_s) < 1

    # A user's call still comes in.
    mcall = await meta.user_calls(client, "15550001111")
    await until(lambda: mcall.pre_accept_at, 5, "pre_accept")


async def test_the_pause_ends_when_meta_said(cclient, meta):
    client = await cclient()
    # 3 s, not 1: on a starved CI host the dial came after a 1 s pause had ended, reached the
    # fake Meta while it was still paused, and its 138014 began a pause of unknown length.
    await deliver(client, meta, meta.account.pause(3.0))
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 403
    meta.account.paused_until = None
    await until(lambda: client.app[ENGINE].calling_pause() is None, 8, "the pause over")
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 201, await resp.text()
    state = await (await client.get("/readyz")).json()
    assert state["numbers"]["paused"] == []


async def test_settings_changed_at_meta_is_announced_without_secrets(cclient, meta):
    client = await cclient()
    calling = {
        "status": "ENABLED",
        "call_icon_visibility": "DEFAULT",
        "sip": {
            "status": "ENABLED",
            "servers": [
                {"hostname": "sip.example.com", "port": 5061, "sip_user_password": "s3cret"}
            ],
        },
    }
    async with client.app[MANAGER].events.subscribe() as sub:
        await deliver(client, meta, meta.account.settings_changed(meta.phone_number_id, calling))
        event = json_of(await next_event(sub, "number.settings_changed"))
    assert event["numberID"] == "default"
    assert event["calling"]["status"] == "ENABLED"
    assert event["calling"]["sip"]["servers"] == [{"hostname": "sip.example.com", "port": 5061}]
    assert "s3cret" not in str(event)


async def test_a_malformed_account_update_is_counted(cclient, meta):
    client = await cclient()
    await settings_read_at_start(client)  # the pause below is known only from the webhook
    engine = client.app[ENGINE]
    before = engine.stats.bad_messages
    body = meta.account.pause()
    body["entry"][0]["changes"][0]["value"]["restriction_info"] = "soon"
    await deliver(client, meta, body)
    assert engine.stats.bad_messages == before + 1
    assert engine.calling_pause() is None


async def test_one_business_call_per_user_at_a_time(cclient, meta):
    client = await cclient()
    first = await client.post("/call/make", json={"phone": USER})
    assert first.status == 201, await first.text()
    second = await client.post("/call/make", json={"phone": f"+{USER}"})
    body = await second.json()
    assert second.status == 409 and body["error"]["code"] == "call_in_progress", body
    assert USER in body["error"]["message"]
    assert connects(meta) == 1  # refused before Meta was asked
    other = await client.post("/call/make", json={"phone": "5521977771111"})
    assert other.status == 201
    # Once the first call is over, the user may be called again.
    call_id = (await first.json())["callID"]
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    again = await client.post("/call/make", json={"phone": USER})
    assert again.status == 201, await again.text()


def json_of(event: Any) -> dict[str, Any]:
    """The event as SSE and webhooks send it (but its time), checked against the OpenAPI
    document: the webhook's body and the event stream's ``data`` (``number.*`` events, about
    a number rather than a call, were in neither: a receiver built from it refused them)."""
    import json

    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    from bridge.api.schema import openapi_document

    body = json.loads(event.to_json())
    doc = openapi_document()
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(doc))
    webhook = "#/webhooks/callEvent/post/requestBody/content/application~1json/schema"
    sse = "#/paths/~1call~1events/get/responses/200/content/text~1event-stream/x-event-schema"
    for where in (webhook, sse):
        schema = {"$ref": "urn:doc" + where}
        errors = [
            e.message for e in Draft202012Validator(schema, registry=registry).iter_errors(body)
        ]
        assert not errors, (where, body, errors)
    return {k: v for k, v in body.items() if k != "at"}


async def test_a_call_to_a_business_scoped_user_id(cclient, meta):
    client = await cclient()
    resp = await client.post("/call/make", json={"recipient": "US.13491208655302741918"})
    body = await resp.json()
    assert resp.status == 201, body
    connect = next(a for a in meta.actions if a.get("action") == "connect")
    assert connect["recipient"] == "US.13491208655302741918" and "to" not in connect
    assert body["peer"] == "US.13491208655302741918@s.whatsapp.net"
    # The call's peer given back calls the same user (a phone's peer is taken the same way).
    assert (await client.post("/call/hangup", json={"callID": body["callID"]})).status == 200
    again = await client.post("/call/make", json={"recipient": body["peer"]})
    assert again.status == 201, await again.text()
    connect = [a for a in meta.actions if a.get("action") == "connect"][-1]
    assert connect["recipient"] == "US.13491208655302741918" and "to" not in connect
    await client.post("/call/hangup", json={"callID": (await again.json())["callID"]})
    for bad in (
        {"recipient": "13491208655302741918"},
        {"recipient": "US.1349", "phone": USER},
        {},
    ):
        resp = await client.post("/call/make", json=bad)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_phone", (bad, error)


async def test_the_callers_context_and_identity_reach_the_call(cclient, meta):
    client = await cclient()
    _mcall, event = await meta.user_offer("15550001111")
    item = event["calls"][0]
    item["cta_payload"] = "support-button"
    item["deeplink_payload"] = "promo-42"
    item["from_user_id"] = "US.13491208655302741918"
    event["contacts"][0].update(
        {"user_id": "US.13491208655302741918", "profile": {"name": "Ana", "username": "@ana"}}
    )
    assert (await meta.post(client, meta.envelope(event))).status == 200
    calls = await until(lambda: _live(client), 5, "the call ringing")
    assert calls[0]["metadata"]["whatsapp"] == {
        "ctaPayload": "support-button",
        "deeplinkPayload": "promo-42",
        "userId": "US.13491208655302741918",
        "username": "@ana",
    }


async def _live(client: Any) -> list[dict[str, Any]]:
    return (await (await client.get("/call/status")).json())["calls"]


async def test_a_restriction_in_metas_settings_pauses_calling(cclient, meta):
    """Meta's settings list its restrictions (``restrictions.restrictions_list``): read with
    the settings (here by ``GET …/settings``), a calling restriction pauses the number as its
    ``account_update`` would, once, and the settings show it."""
    client = await cclient()
    meta.account.paused_until = time.time() + 86400
    got = await (await client.get("/numbers/default/settings")).json()
    [restriction] = got["restrictions"]["restrictionsList"]
    assert restriction == {
        "type": "RESTRICTED_BUSINESS_INITIATED_CALLING",
        "expiration": int(meta.account.paused_until),
    }
    pause = client.app[ENGINE].calling_pause()
    assert pause is not None and parse_iso_utc(pause["until"]) == restriction["expiration"]
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "calling_paused", body
    assert connects(meta) == 0  # refused here: Meta is not asked
    await client.get("/numbers/default/settings")  # read again: no second pause
    again = client.app[ENGINE].calling_pause()
    assert again is not None and (again["reason"], again["until"]) == (
        pause["reason"],
        pause["until"],
    )
    # Its seconds left count down meanwhile (a second boundary crossed on a slow host).
    assert pause["retryAfter"] - 2 <= again["retryAfter"] <= pause["retryAfter"]
