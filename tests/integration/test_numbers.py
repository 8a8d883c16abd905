"""Numbers and tenants at run time (issue 46): the API, isolation between tenants, each number's
own engine and credentials (tones asserted through a real aiortc peer), Meta's webhooks of
several apps and numbers on one front door, and the store surviving a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import CATALOG, MANAGER, SWITCHBOARD
from bridge.engines.cloudapi.webhook import SIGNATURE_HEADER, sign
from bridge.logs import call_id_of

from ..fakes.cloudapi import FakeMeta
from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def nclient(make_client, tmp_path):
    """A bridge with an admin token and a data directory of its own (the numbers' store)."""

    async def factory(**kw: Any) -> Any:
        return await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path), **kw)

    return factory


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(client, path: str, body: Any, headers=ADMIN, status: int = 201) -> dict[str, Any]:
    resp = await client.post(path, json=body, headers=headers)
    payload = await resp.json()
    assert resp.status == status, payload
    return payload


async def new_tenant(client, name: str, **fields: Any) -> dict[str, Any]:
    return await post(client, "/tenants", {"name": name, **fields})


async def sim_number(client, phone: str, tone: float, headers=ADMIN, **fields: Any) -> dict:
    body = {"phone": phone, "engine": "sim", "sim": {"peer": "tone", "toneHz": tone}, **fields}
    return await post(client, "/numbers", body, headers=headers)


def assert_heard(rtc: RtcClient, freq: float, what: str) -> None:
    samples = np.concatenate(rtc.recorder.chunks[-50:])
    heard = dominant_frequency(samples, rtc.recorder.rate)
    level = 20 * np.log10(np.sqrt(np.mean((samples / 32768) ** 2)) + 1e-12)
    print(f"{what}: {heard:.1f} Hz at {level:.1f} dBFS")
    assert heard == pytest.approx(freq, abs=5), what
    assert level > -40, what


async def browser_on(client, call_id: str, headers, freq: float = 440.0) -> RtcClient:
    rtc = RtcClient(client, call_id, freq=freq, headers=headers)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await wait_state(client, call_id, "active", headers=headers)
    await asyncio.sleep(1.2)
    return rtc


async def test_numbers_crud_secrets_never_returned_and_bad_input_named(nclient) -> None:
    client = await nclient()
    listed = await (await client.get("/numbers", headers=ADMIN)).json()
    assert [n["numberID"] for n in listed["numbers"]] == ["default"]  # BRIDGE_ENGINE's
    body = {
        "phone": "+15550783881",
        "engine": "zuckzapgo",
        "label": "sales",
        "zuckzapgo": {"url": "http://127.0.0.1:9", "token": "zzg-secret-token"},
    }
    created = await post(client, "/numbers", body)
    number_id = created["numberID"]
    assert created["engine"] == "zuckzapgo" and created["label"] == "sales"
    assert created["zuckzapgo"] == {"url": "http://127.0.0.1:9", "tokenSet": True}
    shown = await (await client.get(f"/numbers/{number_id}", headers=ADMIN)).text()
    assert "zzg-secret-token" not in shown
    export = await (await client.get("/numbers?format=yaml", headers=ADMIN)).text()
    assert "zzg-secret-token" not in export and number_id in export

    # Bad input: 400/409 naming the field.
    cases = [
        ({**body, "engine": "nokia"}, 400, "engine"),
        ({**body, "phone": "15550783882"}, 400, "phone"),
        ({**body, "phone": "+15550783882", "zuckzapgo": {"url": "http://x"}}, 400, "token"),
        ({**body, "phone": "+15550783882", "zuckzapgo": {**body["zuckzapgo"], "x": 1}}, 400, "x"),
        (body, 409, "phone"),
    ]
    for bad, status, field in cases:
        resp = await client.post("/numbers", json=bad, headers=ADMIN)
        error = (await resp.json())["error"]
        assert resp.status == status and field in error["message"], (bad, error)

    page = await (await client.get("/numbers?limit=1", headers=ADMIN)).json()
    assert len(page["numbers"]) == 1 and page["nextCursor"] == "default"
    rest = await (await client.get("/numbers?limit=1&cursor=default", headers=ADMIN)).json()
    assert [n["numberID"] for n in rest["numbers"]] == [number_id]

    resp = await client.patch(f"/numbers/{number_id}", json={"label": "ventas"}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["label"] == "ventas"
    resp = await client.delete(f"/numbers/{number_id}", headers=ADMIN)
    assert resp.status == 200
    resp = await client.get(f"/numbers/{number_id}", headers=ADMIN)
    assert resp.status == 404
    assert (await client.get("/numbers")).status == 401  # no token at all


async def test_each_number_has_its_own_engine_and_from_picks_it(nclient, caplog) -> None:
    """Two sim numbers of one tenant with different tones: a call from each reaches the
    browser with its own number's tone; without "from" the tenant is asked which."""
    caplog.set_level(logging.INFO)
    client = await nclient()
    tenant = await new_tenant(client, "Acme")
    key = bearer(tenant["apiKey"])
    first = await sim_number(client, "+15550000001", 700.0, headers=key)
    second = await sim_number(client, "+15550000002", 1100.0, headers=key)
    assert first["tenantID"] == second["tenantID"] == tenant["tenantID"]

    resp = await client.post("/call/make", json={"phone": "5521999999999"}, headers=key)
    assert resp.status == 400 and "'from'" in (await resp.json())["error"]["message"]

    for number, tone, by in ((first, 700.0, "numberID"), (second, 1100.0, "phone")):
        call = await post(
            client, "/call/make", {"phone": "5521999999999", "from": number[by]}, headers=key
        )
        assert call["numberID"] == number["numberID"] and call["tenantID"] == tenant["tenantID"]
        rtc = await browser_on(client, call["callID"], key)
        assert_heard(rtc, tone, f"the browser hears number {number['phone']}")
        await rtc.close()
        await post(client, "/call/hangup", {"callID": call["callID"]}, headers=key, status=200)
        lines = [
            r
            for r in caplog.records
            if (getattr(r, "call_id", None) or call_id_of(r)) == call["callID"]
        ]
        assert lines and {getattr(r, "number_id", None) for r in lines} == {number["numberID"]}


async def test_a_tenant_sees_only_its_own_calls_events_and_numbers(nclient) -> None:
    client = await nclient()
    acme, globex = await new_tenant(client, "Acme"), await new_tenant(client, "Globex")
    acme_key, globex_key = bearer(acme["apiKey"]), bearer(globex["apiKey"])
    acme_number = await sim_number(client, "+15550000011", 600.0, headers=acme_key)
    await sim_number(client, "+15550000012", 900.0, headers=globex_key)

    # A tenant's key cannot manage tenants, nor create numbers for another tenant.
    assert (await client.get("/tenants", headers=acme_key)).status == 403
    resp = await client.post(
        "/numbers",
        json={"phone": "+15550000013", "engine": "sim", "tenantID": globex["tenantID"]},
        headers=acme_key,
    )
    assert resp.status == 403

    events: list[dict[str, Any]] = []

    async def follow(headers: dict[str, str]) -> None:
        async with client.get("/call/events", headers=headers) as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append({"as": headers, **json.loads(line[6:])})

    watchers = [asyncio.create_task(follow(k)) for k in (acme_key, globex_key)]
    await asyncio.sleep(0.3)
    call = await post(
        client, "/call/make", {"phone": "5521999999999"}, headers=acme_key
    )  # its only number
    assert call["numberID"] == acme_number["numberID"]
    cid = call["callID"]
    for path in (f"/call/{cid}", f"/call/{cid}/stats", f"/call/{cid}/report"):
        resp = await client.get(path, headers=globex_key)
        assert resp.status == 404, path  # not 403: existence is not leaked
    resp = await client.post("/call/hangup", json={"callID": cid}, headers=globex_key)
    assert resp.status == 404
    assert (await client.get(f"/call/{cid}", headers=acme_key)).status == 200
    listed = await (await client.get("/call/status", headers=globex_key)).json()
    assert listed["calls"] == []
    listed = await (await client.get("/call/status", headers=acme_key)).json()
    assert [c["callID"] for c in listed["calls"]] == [cid]
    mine = await (await client.get("/numbers", headers=globex_key)).json()
    assert [n["phone"] for n in mine["numbers"]] == ["+15550000012"]
    resp = await client.get(f"/numbers/{acme_number['numberID']}", headers=globex_key)
    assert resp.status == 404

    await post(client, "/call/hangup", {"callID": cid}, headers=acme_key, status=200)
    await until(lambda: any(e["type"] == "call.ended" for e in events), 5, "call.ended")
    for watcher in watchers:
        watcher.cancel()
    assert {e["callID"] for e in events if e["as"] == acme_key} == {cid}
    assert not [e for e in events if e["as"] == globex_key]


async def test_a_revoked_key_is_refused_and_max_calls_caps_a_tenant(nclient) -> None:
    client = await nclient()
    tenant = await new_tenant(client, "Acme", maxCalls=1)
    first_key = bearer(tenant["apiKey"])
    second = await post(client, f"/tenants/{tenant['tenantID']}/keys", {})
    await sim_number(client, "+15550000021", 600.0, headers=first_key)
    await post(client, "/call/make", {"phone": "5521999999999"}, headers=first_key)
    resp = await client.post("/call/make", json={"phone": "5521999999998"}, headers=first_key)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "at_capacity"
    first_id = tenant["keys"][0]["keyID"]
    resp = await client.delete(f"/tenants/{tenant['tenantID']}/keys/{first_id}", headers=ADMIN)
    assert resp.status == 200
    assert (await client.get("/call/status", headers=first_key)).status == 401
    assert (await client.get("/call/status", headers=bearer(second["apiKey"]))).status == 200


async def test_a_tenants_max_calls_counts_its_calls_still_being_dialled(nclient) -> None:
    """``maxCalls`` against calls made together: each was checked before the one before it
    was placed (a dial awaits the engine: Meta's Graph API, a PCM engine's REST call), and
    the tenant's calls still being dialled were not counted (the bridge's own limit counts
    them), so three at once all went out past a ``maxCalls`` of 1."""
    client = await nclient()
    tenant = await new_tenant(client, "Acme", maxCalls=1)
    key = bearer(tenant["apiKey"])
    number = await sim_number(client, "+15550000025", 600.0, headers=key)
    engine = client.app[SWITCHBOARD].engine(number["numberID"])
    dial = engine.dial

    async def slow_dial(phone: str, **kw: Any) -> str:
        await asyncio.sleep(0.05)  # the engine's answer to the dial, over its API
        return await dial(phone, **kw)

    engine.dial = slow_dial
    answers = await asyncio.gather(
        *(
            client.post("/call/make", json={"phone": f"552199999999{n}"}, headers=key)
            for n in range(3)
        )
    )
    assert sorted(r.status for r in answers) == [201, 503, 503]
    refused = [await r.json() for r in answers if r.status == 503]
    assert {b["error"]["code"] for b in refused} == {"at_capacity"}
    live = (await (await client.get("/call/status", headers=key)).json())["calls"]
    assert len(live) == 1


async def test_a_simulated_inbound_call_past_a_tenants_max_calls_is_refused_at_once(
    nclient,
) -> None:
    """``POST /call/sim/incoming`` on a number whose tenant is at its ``maxCalls``: the sim
    rang, the inbound policy turned the call away (busy) and the route waited for a call that
    never came, answering ``502`` after 2 s; now it is the ``503 at_capacity`` ``/call/make``
    gives at the cap, before anything rings."""
    client = await nclient()
    tenant = await new_tenant(client, "Acme", maxCalls=1)
    key = bearer(tenant["apiKey"])
    await sim_number(client, "+15550000026", 600.0, headers=key)
    await post(client, "/call/sim/incoming", {"phone": "5521999999999"}, headers=key)
    resp = await client.post("/call/sim/incoming", json={"phone": "5521999999998"}, headers=key)
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "at_capacity", body
    assert "maximum of 1 calls" in body["error"]["message"]
    live = (await (await client.get("/call/status", headers=key)).json())["calls"]
    assert len(live) == 1


async def test_two_simulated_inbound_calls_at_once_for_the_last_place_one_is_refused_at_once(
    nclient, redis
) -> None:
    """Two ``POST /call/sim/incoming`` together for a tenant one below its ``maxCalls`` (its
    calls on every worker counted: the shared directory's, Redis): both passed the check
    before either call rang, so the inbound policy turned the second away busy and its request
    waited for a call that never came (``502`` after 2 s). The check holds the place now, as a
    dial's does: the second is ``503 at_capacity`` at once."""
    client = await nclient(directory=redis.url, internal_secret="s" * 32)
    tenant = await new_tenant(client, "Acme", maxCalls=2)
    key = bearer(tenant["apiKey"])
    await sim_number(client, "+15550000027", 600.0, headers=key)
    await post(client, "/call/sim/incoming", {"phone": "5521999999990"}, headers=key)
    answers = await asyncio.gather(
        *(
            client.post("/call/sim/incoming", json={"phone": f"552199999999{n}"}, headers=key)
            for n in (1, 2)
        )
    )
    assert sorted(r.status for r in answers) == [201, 503]
    refused = await next(r for r in answers if r.status == 503).json()
    assert refused["error"]["code"] == "at_capacity", refused
    assert "maximum of 2 calls" in refused["error"]["message"]
    live = (await (await client.get("/call/status", headers=key)).json())["calls"]
    assert len(live) == 2
    # No place is left held: one call off, the next comes in.
    await post(client, "/call/hangup", {"callID": live[0]["callID"]}, headers=key, status=200)
    await post(client, "/call/sim/incoming", {"phone": "5521999999993"}, headers=key)


async def test_numbers_survive_a_restart_with_secrets_sealed(nclient, tmp_path) -> None:
    client = await nclient()
    tenant = await new_tenant(client, "Acme")
    await post(
        client,
        "/numbers",
        {
            "phone": "+15550000031",
            "engine": "wadial",
            "tenantID": tenant["tenantID"],
            "wadial": {"url": "http://127.0.0.1:9", "apiKey": "wadial-key-123", "sessionID": "s1"},
        },
    )
    await client.close()
    raw = (tmp_path / "catalog.sqlite").read_bytes()
    assert b"wadial-key-123" not in raw and tenant["apiKey"].encode() not in raw
    client = await nclient()
    catalog = client.app[CATALOG]
    number = catalog.by_phone("+15550000031")
    assert number is not None and number.secrets == {"apiKey": "wadial-key-123"}
    assert catalog.tenant_of_key(tenant["apiKey"]) == tenant["tenantID"]
    assert number.number_id in client.app[SWITCHBOARD].engines  # its engine runs again


async def meta_app(pnids: dict[str, str], secret: str, tone: float) -> FakeMeta:
    first = next(iter(pnids))
    meta = FakeMeta(token=pnids[first], phone_number_id=first, app_secret=secret, user_tone_hz=tone)
    for pnid, token in pnids.items():
        meta.add_number(pnid, token)
    await meta.start()
    return meta


def cloudapi_body(meta: FakeMeta, pnid: str, phone: str) -> dict[str, Any]:
    return {
        "phone": phone,
        "engine": "cloudapi",
        "cloudapi": meta.number_fields(pnid),
    }


async def test_meta_webhooks_of_two_apps_reach_the_right_number(nclient, caplog) -> None:
    """Two Meta apps (secrets of their own), three numbers (tokens of their own) on one
    webhook URL: each user call rings on its number, pre-accepted with that number's id and
    token; audio both ways on a sample; another app's signature, an unknown number."""
    apps = [
        await meta_app({"1001": "tok-1001", "1002": "tok-1002"}, "secret-a", 500.0),
        await meta_app({"2001": "tok-2001"}, "secret-b", 800.0),
    ]
    try:
        client = await nclient()
        numbers = {}
        for meta, pnid, phone in (
            (apps[0], "1001", "+15551001001"),
            (apps[0], "1002", "+15551001002"),
            (apps[1], "2001", "+15552001001"),
        ):
            created = await post(client, "/numbers", cloudapi_body(meta, pnid, phone))
            assert created["health"]["ok"] is True, created  # Meta took the token
            numbers[pnid] = created
        # The one GET verification answers any number's verify token.
        resp = await client.get(
            "/engine/webhook",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": "verify-2001",
                "hub.challenge": "42",
            },
        )
        assert resp.status == 200 and await resp.text() == "42"

        calls = {}
        for meta, pnid in ((apps[0], "1001"), (apps[0], "1002"), (apps[1], "2001")):
            calls[pnid] = await meta.user_calls(client, f"1555900{pnid}", number=pnid)
        for meta, pnid in ((apps[0], "1001"), (apps[0], "1002"), (apps[1], "2001")):
            mcall = calls[pnid]
            await until(lambda m=mcall: m.pre_accept_at, 5, f"pre_accept on {pnid}")
            index = next(i for i, a in enumerate(meta.actions) if a.get("call_id") == mcall.wacid)
            assert meta.action_numbers[index] == pnid  # through its own number and token

        def live_calls() -> dict[str, Any]:
            return {c.engine_call_id: c for c in client.app[MANAGER].live_calls()}

        # The engine pre-accepts first (Meta wants the answer fast) and then rings the call.
        await until(lambda: all(m.wacid in live_calls() for m in calls.values()), 5, "3 ringing")
        live = live_calls()
        for pnid, mcall in calls.items():
            assert live[mcall.wacid].number_id == numbers[pnid]["numberID"]

        # Audio both ways on one of them (app B's user sends 800 Hz).
        call = live[calls["2001"].wacid]
        rtc = RtcClient(client, call.id, freq=440.0, headers=ADMIN)
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await post(client, "/call/answer", {"callID": call.id}, status=200)
        await asyncio.sleep(1.5)
        assert_heard(rtc, 800.0, "the agent hears app B's user")
        user = np.concatenate(calls["2001"].peer.recorder.chunks[-50:])
        assert dominant_frequency(user, calls["2001"].peer.recorder.rate) == pytest.approx(
            440, abs=5
        )
        await rtc.close()

        # Call permissions are asked through the number named by "from".
        resp = await client.post(
            "/call/permissions",
            json={
                "phone": "15559998888",
                "from": "+15551001002",
                "template": {"name": "call_me", "language": "en_US"},
            },
            headers=ADMIN,
        )
        assert resp.status == 202, await resp.text()
        assert apps[0].actions[-1]["edge"] == "messages" and apps[0].action_numbers[-1] == "1002"
        resp = await client.post("/call/permissions", json={"phone": "15559998888"}, headers=ADMIN)
        assert resp.status == 404  # the default number (sim) has no call permissions
        resp = await client.get("/call/permissions/15559998888?from=1001", headers=ADMIN)
        assert resp.status == 400  # "from" names a phone or a numberID, not Meta's id

        # A body about number 1001 signed with app B's secret: refused, nothing rings.
        _, event = await apps[0].user_offer("15559990000")
        raw = json.dumps(apps[0].envelope(event, number="1001")).encode()
        resp = await client.post(
            "/engine/webhook",
            data=raw,
            headers={SIGNATURE_HEADER: sign("secret-b", raw), "Content-Type": "application/json"},
        )
        assert resp.status in (401, 403)
        refusals = [
            r for r in caplog.records if "refused" in r.getMessage() and "1001" in r.getMessage()
        ]
        assert len(refusals) == 1 and refusals[0].levelname == "WARNING"
        resp = await client.post(  # again: not logged again
            "/engine/webhook",
            data=raw,
            headers={SIGNATURE_HEADER: sign("secret-b", raw), "Content-Type": "application/json"},
        )
        assert resp.status == 401
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
        # A number no one here has: 200 (Meta would retry), nothing pre-accepted.
        before = len(apps[0].actions)
        _, event = await apps[0].user_offer("15559990001")
        resp = await apps[0].post(client, apps[0].envelope(event, number="9999"))
        assert resp.status == 200 and (await resp.json())["accepted"] is False
        await asyncio.sleep(0.3)
        assert len(apps[0].actions) == before
    finally:
        for meta in apps:
            await meta.stop()


async def test_the_default_numbers_token_is_checked_at_its_graph_url(nclient, meta) -> None:
    """BRIDGE_ENGINE_URL names the Graph API of the default Cloud API number: its health is
    probed there (here the fake), as its engine calls it; the probe went to Meta's own
    graph.facebook.com whatever the setting said (off loopback from every such test)."""
    client = await nclient(**meta.bridge_settings())

    async def default() -> dict[str, Any]:
        return await (await client.get("/numbers/default", headers=ADMIN)).json()

    async def checked() -> bool:
        return (await default())["health"].get("checkedAt") is not None

    await until(checked, timeout=5, what="the default number's check")
    number = await default()
    health = number["health"]
    assert health["ok"] is True and health["reason"] == "Graph API accepts the token", health
    assert number["cloudapi"]["graphURL"] == meta.graph_url, number


async def test_a_refused_graph_token_shows_in_health(nclient, meta) -> None:
    client = await nclient()
    body = cloudapi_body(meta, meta.phone_number_id, "+15553000001")
    body["cloudapi"]["accessToken"] = "not-the-token"
    created = await post(client, "/numbers", body)
    assert created["health"]["ok"] is False and "190" in created["health"]["reason"]
    metrics = await (await client.get("/metrics")).text()
    assert f'bridge_number_up{{number="{created["numberID"]}"}} 0.0' in metrics


async def test_a_deleted_number_takes_no_new_call_and_its_live_call_finishes(nclient) -> None:
    client = await nclient()
    number = await sim_number(client, "+15550000041", 750.0)
    call = await post(client, "/call/make", {"phone": "5521999999999", "from": number["phone"]})
    rtc = await browser_on(client, call["callID"], ADMIN)
    resp = await client.delete(f"/numbers/{number['numberID']}", headers=ADMIN)
    assert resp.status == 200
    resp = await client.post(
        "/call/make", json={"phone": "5521999999999", "from": number["phone"]}, headers=ADMIN
    )
    assert resp.status == 400  # no such number any more
    rtc.recorder.chunks.clear()
    await asyncio.sleep(1.2)
    assert_heard(rtc, 750.0, "the live call goes on after its number was deleted")
    await post(client, "/call/hangup", {"callID": call["callID"]}, status=200)
    await rtc.close()
    switchboard = client.app[SWITCHBOARD]
    await until(lambda: not switchboard.retired, 3, "the retired engine closed")


async def test_a_numbers_calls_leave_nothing_behind_in_the_switchboard(nclient) -> None:
    """Which number each call is on is known while the call lives (its hang-up, its media
    go to that number's engine), and forgotten when it ends or moves away: before, one entry
    a call stayed for the life of the process, a call on any number but the default one."""
    client = await nclient()
    switchboard = client.app[SWITCHBOARD]
    number = await sim_number(client, "+15550000045", 750.0)
    for _ in range(3):
        call = await post(client, "/call/make", {"phone": "5521999999999", "from": number["phone"]})
        assert len(switchboard._owner) == 1  # the live call's
        await post(client, "/call/hangup", {"callID": call["callID"]}, status=200)
        await wait_state(client, call["callID"], "ended", headers=ADMIN)
        await until(lambda: not switchboard._owner, 3, "the ended call's number forgotten")


async def test_a_deleted_numbers_series_go_once_its_last_call_ended(nclient) -> None:
    """The per-number series (calls started and ended, up, paused until) are labelled by the
    numbers that exist: a deleted number's go when its retired engine closes, so numbers
    created and deleted over weeks leave no series behind (before, every number there ever
    was kept its series for the life of the process)."""
    client = await nclient()
    manager, switchboard = client.app[MANAGER], client.app[SWITCHBOARD]
    number = await sim_number(client, "+15550000046", 750.0)
    kept = await sim_number(client, "+15550000047", 760.0)
    series = [f'number="{n["numberID"]}"' for n in (number, kept)]
    for n in (number, kept):
        call = await post(client, "/call/make", {"phone": "5521999999999", "from": n["phone"]})
        await post(client, "/call/hangup", {"callID": call["callID"]}, status=200)
        await wait_state(client, call["callID"], "ended", headers=ADMIN)
        manager.metrics.number_paused_until.labels(n["numberID"]).set(-1)  # Meta paused it
    metrics = await (await client.get("/metrics")).text()
    assert all(s in metrics for s in series)
    resp = await client.delete(f"/numbers/{number['numberID']}", headers=ADMIN)
    assert resp.status == 200
    await until(lambda: not switchboard.retired, 3, "the retired engine closed")
    metrics = await (await client.get("/metrics")).text()
    assert series[0] not in metrics
    assert f'bridge_number_calls_ended_total{{number="{kept["numberID"]}"' in metrics


async def test_a_retired_engine_whose_close_fails_holds_up_no_other(nclient, caplog) -> None:
    client = await nclient()
    switchboard = client.app[SWITCHBOARD]
    first = await sim_number(client, "+15550000043", 750.0)
    second = await sim_number(client, "+15550000044", 750.0)
    closed: list[str] = []
    first_engine = switchboard.engines[first["numberID"]]
    second_engine = switchboard.engines[second["numberID"]]
    first_close, second_close = first_engine.close, second_engine.close

    async def broken_close() -> None:  # a close that fails once its work is done
        closed.append("first")
        await first_close()
        raise RuntimeError("a bug in the engine's close")

    async def counted_close() -> None:
        closed.append("second")
        await second_close()

    first_engine.close = broken_close  # type: ignore[method-assign]
    second_engine.close = counted_close  # type: ignore[method-assign]
    for number in (first, second):  # the broken one first: it is closed first
        resp = await client.delete(f"/numbers/{number['numberID']}", headers=ADMIN)
        assert resp.status == 200
        await until(lambda n=number: n["numberID"] not in switchboard.engines, 3, "retired")
    await until(lambda: closed == ["first", "second"], 5, "both retired engines closed")
    await until(lambda: not switchboard.retired, 3, "nothing left to retire")
    assert any(r.exc_info and "retired" in r.getMessage() for r in caplog.records)


async def test_each_tenant_gets_its_own_calls_events_signed_with_its_own_secret(
    nclient, aiohttp_server
) -> None:
    from standardwebhooks import Webhook

    from .test_webhooks import SECRET, Receiver

    receiver = Receiver()
    server = await aiohttp_server(receiver.app, host="127.0.0.1")
    receiver.base = f"http://127.0.0.1:{server.port}"
    acme_secret = "whsec_" + "QWNtZUFjbWVBY21lQWNtZUFjbWVBY21lQWNtZUFjbWU="
    client = await nclient(
        webhook_url=receiver.url("service"), webhook_secret=SECRET, webhook_url_allow=("127.0.0.1",)
    )
    acme = await new_tenant(
        client, "Acme", webhookURL=receiver.url("acme"), webhookSecret=acme_secret
    )
    globex = await new_tenant(
        client, "Globex", webhookURL=receiver.url("globex"), webhookSecret=SECRET
    )
    await sim_number(client, "+15550000051", 600.0, headers=bearer(acme["apiKey"]))
    await sim_number(client, "+15550000052", 600.0, headers=bearer(globex["apiKey"]))
    call = await post(
        client, "/call/make", {"phone": "5521999999999"}, headers=bearer(acme["apiKey"])
    )
    await post(client, "/call/hangup", {"callID": call["callID"]}, headers=ADMIN, status=200)
    events = await receiver.wait_for("acme", 2)
    assert {e["callID"] for e in events} == {call["callID"]}
    assert all(e["call"]["tenantID"] == acme["tenantID"] for e in events)
    assert "call.ended" in [e["type"] for e in await receiver.wait_for("acme", 3)]
    for request in [r for r in receiver.requests if r["kind"] == "acme"]:
        Webhook(acme_secret).verify(request["body"], request["headers"])  # its own secret
    service = await receiver.wait_for("service", 3)  # the service-wide URL still gets all
    assert {e["callID"] for e in service} == {call["callID"]}
    await asyncio.sleep(0.3)
    assert receiver.events("globex") == []
    receiver.release.set()


async def test_a_tenants_call_whose_callback_is_the_tenants_url_is_signed_with_its_secret(
    nclient, aiohttp_server
) -> None:
    """A tenant's app places a call with ``statusCallback`` set to the tenant's own
    ``webhookURL``: its events go there once, as before, but they were signed with the
    service's ``BRIDGE_WEBHOOK_SECRET`` (the call's callback's signer), which the tenant does
    not have: its receiver refused every one of them."""
    from standardwebhooks import Webhook

    from .test_webhooks import SECRET, Receiver

    receiver = Receiver()
    server = await aiohttp_server(receiver.app, host="127.0.0.1")
    receiver.base = f"http://127.0.0.1:{server.port}"
    acme_secret = "whsec_" + "QWNtZUFjbWVBY21lQWNtZUFjbWVBY21lQWNtZUFjbWU="
    client = await nclient(webhook_secret=SECRET, webhook_url_allow=("127.0.0.1",))
    acme = await new_tenant(
        client, "Acme", webhookURL=receiver.url("acme"), webhookSecret=acme_secret
    )
    await sim_number(client, "+15550000053", 600.0, headers=bearer(acme["apiKey"]))
    body = {"phone": "5521999999999", "statusCallback": receiver.url("acme")}
    call = await post(client, "/call/make", body, headers=bearer(acme["apiKey"]))
    await post(client, "/call/hangup", {"callID": call["callID"]}, headers=ADMIN, status=200)
    events = await receiver.wait_for("acme", 3)
    assert "call.ended" in [e["type"] for e in events]
    requests = [r for r in receiver.requests if r["kind"] == "acme"]
    assert len(requests) == len({r["headers"]["webhook-id"] for r in requests})  # once each
    for request in requests:
        Webhook(acme_secret).verify(request["body"], request["headers"])  # its own secret
    receiver.release.set()


async def test_a_tenants_own_url_is_its_callback_without_a_service_secret(
    nclient, aiohttp_server
) -> None:
    """With no ``BRIDGE_WEBHOOK_SECRET`` (nor allow-list), a tenant's ``statusCallback`` equal
    to its own ``webhookURL`` is taken, in ``/call/make`` and ``/call/answer``, its events
    signed with its own secret; any other URL is 403 with the reason. It was 403 "webhooks are
    not configured", though the tenant's secret signs that URL's events."""
    from standardwebhooks import Webhook

    from .test_webhooks import Receiver

    receiver = Receiver()
    server = await aiohttp_server(receiver.app, host="127.0.0.1")
    receiver.base = f"http://127.0.0.1:{server.port}"
    acme_secret = "whsec_" + "QWNtZUFjbWVBY21lQWNtZUFjbWVBY21lQWNtZUFjbWU="
    client = await nclient(webhook_flush_timeout=0.1)
    acme = await new_tenant(
        client, "Acme", webhookURL=receiver.url("acme"), webhookSecret=acme_secret
    )
    key = bearer(acme["apiKey"])
    await sim_number(client, "+15550000054", 600.0, headers=key)
    other = {"phone": "5521999999999", "statusCallback": receiver.url("other")}
    error = await post(client, "/call/make", other, headers=key, status=403)
    assert error["error"]["code"] == "url_not_allowed", error
    assert "webhookURL" in error["error"]["message"], error
    body = {"phone": "5521999999999", "statusCallback": receiver.url("acme")}
    call = await post(client, "/call/make", body, headers=key)
    inbound = await post(client, "/call/sim/incoming", {"phone": "15550001111"}, headers=key)
    answer = {"callID": inbound["callID"], "statusCallback": receiver.url("other")}
    await post(client, "/call/answer", answer, headers=key, status=403)
    answer["statusCallback"] = receiver.url("acme")
    await post(client, "/call/answer", answer, headers=key, status=200)
    events = await receiver.wait_for("acme", 4)
    assert {call["callID"], inbound["callID"]} <= {e["callID"] for e in events}
    requests = [r for r in receiver.requests if r["kind"] == "acme"]
    assert len(requests) == len({r["headers"]["webhook-id"] for r in requests})  # once each
    for request in requests:
        Webhook(acme_secret).verify(request["body"], request["headers"])  # its own secret
    assert receiver.events("other") == []
    receiver.release.set()


async def test_a_change_whose_body_came_slowly_brings_back_nothing_removed_meanwhile(
    nclient,
) -> None:
    """``PATCH /tenants/{id}``, ``/numbers/{id}`` and ``/trunks/{id}`` read the record, then
    waited for the body (up to ``BRIDGE_BODY_TIMEOUT``), then stored the record with the
    change. What was revoked or deleted meanwhile came back with it: a revoked API key worked
    again, a deleted number (or tenant, or trunk) was live again. The change now applies to
    the record as it is once the body is in; a record deleted meanwhile is 404."""
    client = await nclient()
    acme = await new_tenant(client, "Acme")
    initech = await new_tenant(client, "Initech")
    revoked = bearer(acme["apiKey"])
    await post(client, f"/tenants/{acme['tenantID']}/keys", {})
    number = await sim_number(client, "+15550000048", 750.0)
    trunk = await post(client, "/trunks", {"name": "pbx", "uri": "sip:127.0.0.1:5999"})
    go = asyncio.Event()

    async def slow(body: dict[str, Any]) -> Any:
        yield b" "  # the request is under way; the rest waits
        await go.wait()
        yield json.dumps(body).encode()

    def patch(path: str, body: dict[str, Any]) -> Any:
        headers = {**ADMIN, "Content-Type": "application/json"}
        return asyncio.ensure_future(client.patch(path, data=slow(body), headers=headers))

    renamed = patch(f"/tenants/{acme['tenantID']}", {"name": "Acme Corp"})
    relabelled = patch(f"/numbers/{number['numberID']}", {"label": "sales"})
    gone = patch(f"/tenants/{initech['tenantID']}", {"name": "Initech Ltd"})
    repointed = patch(f"/trunks/{trunk['trunkID']}", {"name": "pbx2"})
    # Time for each handler to reach its body read (one that is late only lets this test
    # pass before the fix, never fail after it).
    await asyncio.sleep(0.5)
    key_id = acme["keys"][0]["keyID"]
    resp = await client.delete(f"/tenants/{acme['tenantID']}/keys/{key_id}", headers=ADMIN)
    assert resp.status == 200
    resp = await client.delete(f"/numbers/{number['numberID']}", headers=ADMIN)
    assert resp.status == 200
    resp = await client.delete(f"/tenants/{initech['tenantID']}", headers=ADMIN)
    assert resp.status == 200
    resp = await client.delete(f"/trunks/{trunk['trunkID']}", headers=ADMIN)
    assert resp.status == 200
    go.set()
    resp = await renamed
    assert resp.status == 200 and (await resp.json())["name"] == "Acme Corp"
    assert (await client.get("/call/status", headers=revoked)).status == 401
    resp = await relabelled
    assert resp.status == 404, await resp.text()
    assert (await client.get(f"/numbers/{number['numberID']}", headers=ADMIN)).status == 404
    resp = await gone
    assert resp.status == 404, await resp.text()
    assert (await client.get(f"/tenants/{initech['tenantID']}", headers=ADMIN)).status == 404
    resp = await repointed
    assert resp.status == 404, await resp.text()
    assert (await client.get(f"/trunks/{trunk['trunkID']}", headers=ADMIN)).status == 404


async def test_a_number_deleted_while_its_health_is_checked_leaves_no_series(
    nclient, aiohttp_server
) -> None:
    """A health check asks Meta (up to 5 s when Meta is slow); the number deleted meanwhile
    had its series forgotten when its engine closed, then the check's answer set
    ``bridge_number_up{number}`` again, and its health entry, for good: a deleted number in the
    metrics for the life of the process. A check whose engine went meanwhile is dropped."""
    from aiohttp import web

    held = asyncio.Event()
    held.set()
    asked = asyncio.Event()

    async def node(request: web.Request) -> web.Response:  # Meta's GET /{PHONE_NUMBER_ID}
        asked.set()
        await held.wait()
        return web.json_response({"id": request.match_info["pnid"]})

    graph = web.Application()
    graph.router.add_get("/{pnid}", node)
    server = await aiohttp_server(graph)
    client = await nclient()
    block = {
        "phoneNumberID": "4001",
        "graphURL": str(server.make_url("")).rstrip("/"),
        "accessToken": "token-4001",
        "appSecret": "secret-4001",
        "verifyToken": "verify-4001",
    }
    created = await post(
        client, "/numbers", {"phone": "+15553000002", "engine": "cloudapi", "cloudapi": block}
    )
    number_id = created["numberID"]
    assert created["health"]["ok"] is True, created["health"]
    switchboard = client.app[SWITCHBOARD]
    held.clear()
    asked.clear()
    checking = asyncio.ensure_future(switchboard.check_health(number_id))  # the 3-minute round
    await asyncio.wait_for(asked.wait(), 5)
    assert (await client.delete(f"/numbers/{number_id}", headers=ADMIN)).status == 200
    await until(lambda: not switchboard.retired, 3, "the retired engine closed")
    held.set()
    await asyncio.wait_for(checking, 5)
    metrics = await (await client.get("/metrics")).text()
    assert f'number="{number_id}"' not in metrics
    assert number_id not in switchboard.checks.results

    # The check a build starts (another worker's change, reconciled here) is the number's: its
    # deletion ends it, rather than leaving it asking Meta about a number gone (up to 5 s),
    # against an engine being closed. A POST waiting for it meanwhile is answered all the same.
    made = await post(
        client, "/numbers", {"phone": "+15553000003", "engine": "cloudapi", "cloudapi": block}
    )
    number_id = made["numberID"]
    held.clear()
    asked.clear()
    rebuilt = dataclasses.replace(client.app[CATALOG].numbers[number_id], label="rebuilt")
    rebuilt.config = {**rebuilt.config, "graphURL": block["graphURL"] + "/"}
    await client.app[CATALOG].update_number(rebuilt)
    await switchboard.reconcile()  # as on a worker that hears of the change
    await asyncio.wait_for(asked.wait(), 5)
    waiting = asyncio.ensure_future(switchboard.checked(number_id))
    assert (await client.delete(f"/numbers/{number_id}", headers=ADMIN)).status == 200
    await asyncio.wait_for(waiting, 2)  # answered, not cancelled with the check
    named = f"switchboard:health:{number_id}"
    await until(lambda: all(t.get_name() != named for t in asyncio.all_tasks()), 2, "its check")
    held.set()


async def test_a_tenants_key_posts_webhooks_for_its_own_numbers_only(nclient, zuckzapgo) -> None:
    """ZuckZapGo's webhooks take an API key, and name their number with ``?number=`` (or
    reach the one number that takes webhooks). Another tenant's key was taken too: it rang
    made-up calls on Acme's number (its webhook, its agents) and could end its calls
    (``v1.call.terminate``). Another tenant's number is now 404, as on every route."""
    client = await nclient()
    acme, globex = await new_tenant(client, "Acme"), await new_tenant(client, "Globex")
    acme_key, globex_key = bearer(acme["apiKey"]), bearer(globex["apiKey"])
    body = {
        "phone": "+15550000061",
        "engine": "zuckzapgo",
        "zuckzapgo": {"url": zuckzapgo.url, "token": zuckzapgo.token},
    }
    number = await post(client, "/numbers", body, headers=acme_key)
    offer = {"type": "v1.call.offer", "data": {"callId": "made-up-1", "from": "15550002222"}}
    unknown = await client.post("/engine/webhook?number=num_none", json=offer, headers=globex_key)
    assert unknown.status == 404
    for path in (f"/engine/webhook?number={number['numberID']}", "/engine/webhook"):
        resp = await client.post(path, json=offer, headers=globex_key)
        assert resp.status == 404, await resp.text()  # as for a number that does not exist
        assert (await resp.json())["error"]["code"] == (await unknown.json())["error"]["code"]
    await asyncio.sleep(0.2)
    listing = await (await client.get("/call/status", headers=acme_key)).json()
    assert listing["calls"] == []
    # The number's own tenant (and the service) still post its webhooks.
    resp = await client.post(
        f"/engine/webhook?number={number['numberID']}", json=offer, headers=acme_key
    )
    assert resp.status == 200 and (await resp.json()) == {"accepted": True}


async def test_a_write_decided_on_a_stale_view_of_the_sqlite_store_is_decided_again(
    tmp_path,
) -> None:
    """The single node's store decides as Redis does: a catalog whose view is behind the store
    (another writer's number not read yet) does not store the same phone again; its write is
    refused in the transaction that would have made it, the view catches up and the
    request is refused as a sequential duplicate is (duplicate_phone)."""
    from bridge.errors import Conflict
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.model import parse_number
    from bridge.numbers.store import LocalStore, Sealing

    a = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    b = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    await a.reload()
    await b.reload()
    try:
        body = {"phone": "+15557820001", "engine": "sim"}
        await a.create_number(parse_number(body, tenant_id=""))  # B has not read it
        with pytest.raises(Conflict) as refused:
            await b.create_number(parse_number(body, tenant_id=""))
        assert refused.value.code == "duplicate_phone"
        assert [n.phone for n in b.numbers.values()] == ["+15557820001"]
    finally:
        await a.close()
        await b.close()


async def test_a_store_that_fails_a_write_is_a_503_and_the_numbers_serve_on(
    nclient, caplog
) -> None:
    """The numbers store failing a change (a disk in error under SQLite; Redis away) answers
    503 with the error body, said once at WARNING while it lasts; the numbers read before
    serve on, and the change goes through once the store is back. Before, each was a 500
    ``internal_error`` with a traceback."""
    import sqlite3

    from bridge.api.keys import CATALOG

    client = await nclient()
    kept = await sim_number(client, "+15550000071", 750.0)
    store = client.app[CATALOG].store
    db = store._db

    class FailingDisk:
        def execute(self, *args: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        def close(self) -> None:
            db.close()

    store._db = FailingDisk()
    caplog.set_level(logging.WARNING)
    body = {"phone": "+15550000072", "engine": "sim"}
    for _ in range(2):
        resp = await client.post("/numbers", json=body, headers=ADMIN)
        error = (await resp.json())["error"]
        assert resp.status == 503 and error["code"] == "store_unavailable", error
        assert "disk I/O error" in error["message"]
    patched = await client.patch(f"/numbers/{kept['numberID']}", json={"label": "x"}, headers=ADMIN)
    assert patched.status == 503
    said = [r for r in caplog.records if "POST /numbers: 503 store_unavailable" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text  # once a route
    shown = await client.get(f"/numbers/{kept['numberID']}", headers=ADMIN)
    assert shown.status == 200 and (await shown.json())["label"] == ""
    store._db = db  # the disk is back
    await post(client, "/numbers", body)


async def test_a_live_call_goes_on_when_its_numbers_engine_is_rebuilt(nclient) -> None:
    """A change of a number's engine block (a token rotated, a sim setting) builds it a new
    engine for new calls; a call live on the old engine goes on there — its audio, the old
    engine's events about it (here the far end hanging up) — and the old engine closes once
    the call has ended. Before, the old engine was closed at once and its events dropped: the
    call lost its engine media and ended ``failed``."""
    client = await nclient()
    switchboard = client.app[SWITCHBOARD]
    sim = {"peer": "tone", "toneHz": 750.0, "hangupAfter": 2.3}  # the far end hangs up
    number = await sim_number(client, "+15550000081", 750.0, sim=sim)
    call = await post(client, "/call/make", {"phone": "5521999999999", "from": number["phone"]})
    rtc = await browser_on(client, call["callID"], ADMIN)
    old = switchboard.engines[number["numberID"]]
    resp = await client.patch(
        f"/numbers/{number['numberID']}", json={"sim": {"echoDelay": 0.2}}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    assert switchboard.engines[number["numberID"]] is not old  # new calls: the new engine
    rtc.recorder.chunks.clear()
    await asyncio.sleep(0.8)
    assert_heard(rtc, 750.0, "the live call goes on, on the old engine")
    ended = await wait_state(client, call["callID"], "ended", timeout=5, headers=ADMIN)
    assert ended["endReason"] == "remote_hangup", ended
    await rtc.close()
    await until(lambda: not switchboard.retired, 3, "the old engine closed")


@pytest.mark.parametrize("rotated", ["accessToken", "appSecret"])
async def test_meta_ends_a_call_live_on_its_numbers_retired_engine(nclient, rotated) -> None:
    """Meta's webhooks name the number (``phone_number_id``), not the engine: once the number
    was rebuilt (its token rotated) they went to its new engine, which does not know the call
    still live on the old one, so Meta ending it (``terminate``) was lost and the call went on
    until its media dropped. A webhook about a call now goes to the engine that carries it.
    Its app secret rotated, Meta signs with the new one: the old engine took only the secret
    it was built with (401: the terminate lost again); it takes the number's now too."""
    meta = await meta_app({"3001": "tok-3001"}, "secret-c", 600.0)
    try:
        client = await nclient()
        switchboard, manager = client.app[SWITCHBOARD], client.app[MANAGER]
        number = await post(client, "/numbers", cloudapi_body(meta, "3001", "+15553001001"))
        number_id = number["numberID"]
        mcall = await meta.user_calls(client, "15559003001", number="3001")
        key = f"{number_id}:{mcall.wacid}"
        await until(lambda: manager.registry.by_engine_id(key), 5, "the call ringing")
        call_id = manager.registry.by_engine_id(key).id
        await post(client, "/call/answer", {"callID": call_id}, status=200)
        await wait_state(client, call_id, "active", headers=ADMIN)
        old = switchboard.engines[number_id]
        if rotated == "accessToken":  # rotated at Meta, then here
            meta.numbers["3001"] = new = "tok-3001-rotated"
        else:  # Meta signs its webhooks with the new secret from now on
            meta.app_secret = new = "secret-c-rotated"
        block = {"cloudapi": {rotated: new}}
        resp = await client.patch(f"/numbers/{number_id}", json=block, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        assert switchboard.engines[number_id] is not old  # new calls: the new engine

        error = {"code": 138020, "message": "Relay failed", "error_data": {"details": "gone"}}
        terminate = meta.terminate_event(mcall, "FAILED", errors=[error])
        resp = await meta.post(client, meta.envelope(terminate, number="3001"))
        assert resp.status == 200, await resp.text()
        ended = await wait_state(client, call_id, "ended", timeout=3, headers=ADMIN)
        assert ended["endReason"] == "relay_failed", ended  # Meta's, not a media drop's
        assert ended["endDetail"] == "138020: Relay failed (gone)", ended
        await until(lambda: not switchboard.retired, 3, "the old engine closed")
    finally:
        await meta.stop()
