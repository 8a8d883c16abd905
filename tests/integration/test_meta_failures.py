"""Meta's failures end calls with reasons a person can act on (the Cloud API engine against
the fake Meta): a ``terminate`` FAILED with Meta's error code, a Graph error on a call action,
and ``/call/make`` refused with a 4xx that names Meta's reason."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.api.keys import ENGINE, MANAGER

from ..support.calls import events_until_ended, wait_state
from ..support.waits import until

CASES = [
    (138021, "media_timeout"),
    (138022, "media_timeout"),
    (138023, "no_media"),
    (138007, "setup_failed"),
    (138019, "setup_failed"),
    (138020, "relay_failed"),
    (138002, "number_at_capacity"),
    (138012, "call_limit_reached"),
]


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def test_terminate_failed_with_metas_codes_ends_with_a_reason_counted_and_logged_once(
    cclient, meta, caplog
):
    client = await cclient()
    engine = client.app[ENGINE]
    caplog.set_level(logging.WARNING, logger="bridge.engines.cloudapi")
    ended = {}
    for i, (code, _reason) in enumerate(CASES):
        resp = await client.post("/call/make", json={"phone": f"552199999{i:04d}"})
        assert resp.status == 201, await resp.text()
        call = await resp.json()
        mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
        body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
        assert (await meta.post(client, body)).status == 200
        await wait_state(client, call["callID"], "active", timeout=3)
        errors = [{"code": code, "message": f"Meta says {code}", "error_data": {"details": "d"}}]
        terminate = meta.envelope(meta.terminate_event(mcall, "FAILED", errors=errors))
        for _ in range(2):  # Meta delivers it twice: one end, one warning
            assert (await meta.post(client, terminate)).status == 200
        ended[code] = await wait_state(client, call["callID"], "ended", timeout=3)
        await until(engine.graph_side.inbox.queue.empty, 2, "the repeated terminate taken")
    for code, reason in CASES:
        assert ended[code]["endReason"] == reason, ended[code]
        assert ended[code]["endDetail"] == f"{code}: Meta says {code} (d)"
    await asyncio.sleep(0.1)
    for code, _reason in CASES:
        lines = [r for r in caplog.records if f"Meta says {code} " in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING, lines
    metrics = await (await client.get("/metrics")).text()
    assert 'bridge_calls_ended_total{direction="outbound",reason="media_timeout"} 2.0' in metrics
    assert 'bridge_calls_ended_total{direction="outbound",reason="setup_failed"} 2.0' in metrics
    assert 'bridge_calls_ended_total{direction="outbound",reason="no_media"} 1.0' in metrics


async def test_unanswered_and_rejected_outbound_calls(cclient, meta):
    client = await cclient()
    reasons = {}
    for i, how in enumerate(["COMPLETED", "REJECTED", "status_rejected", "FAILED"]):
        call = await (await client.post("/call/make", json={"phone": f"55219888{i:04d}"})).json()
        mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
        assert (await meta.post(client, meta.envelope(meta.status_event(mcall, "RINGING")))).ok
        await wait_state(client, call["callID"], "ringing", timeout=3)
        if how == "status_rejected":
            body = meta.envelope(meta.status_event(mcall, "REJECTED"))
        else:
            body = meta.envelope(meta.terminate_event(mcall, how))
        assert (await meta.post(client, body)).status == 200
        snap = await wait_state(client, call["callID"], "ended", timeout=3)
        reasons[how] = (snap["endReason"], snap["endDetail"])
    assert reasons == {
        "COMPLETED": ("no_answer", None),
        "REJECTED": ("rejected", None),
        "status_rejected": ("rejected", None),
        "FAILED": ("failed", None),
    }


@pytest.mark.parametrize(
    ("code", "status", "api_code"),
    [
        (138006, 403, "no_call_permission"),
        (138012, 429, "call_limit_reached"),
        (138002, 429, "number_at_capacity"),
        (131055, 502, "wrong_signalling"),
        (138019, 502, "setup_failed"),
    ],
)
async def test_make_refused_by_meta_names_the_reason(cclient, meta, code, status, api_code):
    client = await cclient()
    meta.fail_next["connect"] = (code, f"Meta refuses {code}")
    resp = await client.post("/call/make", json={"phone": "5521977770000"})
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"]["code"] == api_code
    assert body["error"]["details"]["metaCode"] == code
    assert f"Meta refuses {code}" in body["error"]["message"]
    if status == 429:
        assert int(resp.headers["Retry-After"]) > 0
    calls = (await (await client.get("/call/status")).json())["calls"]
    assert calls == []


async def test_accept_refused_by_meta_ends_the_inbound_call_with_metas_reason(cclient, meta):
    client = await cclient()
    mcall = await meta.user_calls(client, "15550008888")
    await until(lambda: mcall.pre_accept_at, 2, "pre_accept")
    engine = client.app[ENGINE]
    await until(lambda: client.app[ENGINE].calls.get(mcall.wacid), 2, "the call known")

    async def listed() -> list:
        return (await (await client.get("/call/status")).json())["calls"]

    calls = await until(listed, 5.0, "the call listed", every=0.02)
    call_id = calls[0]["callID"]
    meta.fail_next["accept"] = (138007, "Connect timeout: SDP not applied in time")
    resp = await client.post("/call/answer", json={"callID": call_id})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "setup_failed", body
    snap = await wait_state(client, call_id, "ended", timeout=3)
    assert snap["endReason"] == "setup_failed"
    assert snap["endDetail"] == "138007: (#138007) Connect timeout: SDP not applied in time"
    assert mcall.wacid not in engine.calls


async def test_billable_pulses_of_business_initiated_calls(cclient, meta, tmp_path):
    """Meta bills business-initiated calls in 6-second pulses, rounded up, by the callee's
    country: the ended call and its record say how many (from Meta's duration when it sent
    one) and where, and the metrics count them by number, tenant and country."""
    import math

    from bridge.api.keys import METRICS
    from bridge.timefmt import parse_iso_utc

    client = await cclient(call_reports=True, data_dir=str(tmp_path))
    manager = client.app[MANAGER]
    pulses = {}
    async with manager.events.subscribe() as sub:
        for how in ("meta_13s", "meta_12s", "our_hangup", "unanswered"):
            call = await (await client.post("/call/make", json={"phone": "5521955550000"})).json()
            assert call["billablePulses"] is None  # not ended yet
            mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
            if how != "unanswered":
                body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
                assert (await meta.post(client, body)).status == 200
                await wait_state(client, call["callID"], "active", timeout=3)
            if how.startswith("meta_"):
                seconds = int(how[5:7])
                body = meta.envelope(meta.terminate_event(mcall, duration=seconds))
                assert (await meta.post(client, body)).status == 200
            else:
                await asyncio.sleep(0.2 if how == "our_hangup" else 0)
                await client.post("/call/hangup", json={"callID": call["callID"]})
            snap = await wait_state(client, call["callID"], "ended", timeout=3)
            pulses[how] = snap
        events = await events_until_ended(sub, {snap["callID"] for snap in pulses.values()})
        ended = {e.call["callID"]: e.call for e in events if e.type == "call.ended"}
    assert pulses["meta_13s"]["billablePulses"] == 3  # 13 s: 6 + 6 + 1 → 3 pulses
    assert pulses["meta_12s"]["billablePulses"] == 2
    ours = pulses["our_hangup"]
    talked = parse_iso_utc(ours["endedAt"]) - parse_iso_utc(ours["answeredAt"])
    assert ours["billablePulses"] == math.ceil(round(talked, 3) / 6) >= 1
    assert pulses["unanswered"]["billablePulses"] == 0
    assert len(ended) == 4
    in_order = [ended[pulses[how]["callID"]]["billablePulses"] for how in pulses]
    assert in_order == [3, 2, ours["billablePulses"], 0]
    assert {snap["destinationCountry"] for snap in pulses.values()} == {"BR"}  # +55
    for how, snap in pulses.items():  # the call's record says the same

        async def record(call_id: str = snap["callID"]) -> dict | None:
            resp = await client.get(f"/call/{call_id}/report")
            return (await resp.json())["summary"] if resp.status == 200 else None

        summary = await until(record, 3, f"the record of {how}")
        assert summary["billablePulses"] == snap["billablePulses"]
        assert summary["destinationCountry"] == "BR"
    billed = client.app[METRICS].registry.get_sample_value(
        "bridge_number_billable_pulses_total", {"number": "default", "tenant": "", "country": "BR"}
    )
    assert billed == 3 + 2 + ours["billablePulses"] + 0
    # A user's call is free: no pulses on it.
    mcall = await meta.user_calls(client, "15550007777")
    await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "ringing")
    snap = manager.registry.by_engine_id(mcall.wacid).snapshot()
    assert "billablePulses" not in snap and "destinationCountry" not in snap


async def test_a_leg_closed_before_its_ice_starts_leaves_no_task_failing(cclient, meta, caplog):
    """Meta refuses the ``pre_accept``: the engine closes the call's WhatsApp-side leg before
    its ICE checks ever ran. Nothing of aioice's may be left to fail afterwards (its
    connection's state was released with the peer connection: a task still on it logged
    "Task exception was never retrieved … no attribute '_nominated'")."""
    import gc

    client = await cclient()
    engine = client.app[ENGINE]
    caplog.set_level(logging.ERROR, logger="asyncio")
    meta.fail_next["pre_accept"] = (138007, "Connect timeout: SDP not applied in time")
    mcall = await meta.user_calls(client, "15550007777")
    await until(lambda: mcall.wacid in engine._ended, 3, "the refused call dropped")
    for _ in range(10):  # every task the closed leg left settles, and is collected
        await asyncio.sleep(0.1)
        gc.collect()
    failed = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not failed, [r.getMessage() + str(r.exc_info) for r in failed]


@pytest.mark.parametrize("answered", [True, False])
async def test_a_hangup_meta_fails_ends_the_call_and_is_sent_again(cclient, meta, answered):
    """Meta fails the business's ``terminate`` (or its ``reject`` of a ringing call): the user
    still gets out at once, and the same action goes to Meta again until it takes it (before,
    a 502, the call left up, and the engine having forgotten it, nothing sent again)."""
    client = await cclient()
    if answered:
        call = await (await client.post("/call/make", json={"phone": "5521966660000"})).json()
        call_id = call["callID"]
        mcall = next(c for c in meta.meta_calls.values() if c.opaque == call_id)
        body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
        assert (await meta.post(client, body)).status == 200
        await wait_state(client, call_id, "active", timeout=3)
        action = "terminate"
    else:
        mcall = await meta.user_calls(client, "15550007777")

        async def listed() -> list:
            return (await (await client.get("/call/status")).json())["calls"]

        call_id = (await until(listed, 5.0, "the call listed", every=0.02))[0]["callID"]
        action = "reject"
    meta.fail_next[action] = (131000, "Something went wrong")
    resp = await client.post("/call/hangup", json={"callID": call_id})
    assert resp.status == 200, await resp.text()
    snap = await wait_state(client, call_id, "ended", timeout=3)
    assert snap["endReason"] == ("hangup" if answered else "declined")
    await until(lambda: mcall.state == "ended", 3.0, f"the {action} sent again")
    sent = [a["action"] for a in meta.actions if a.get("call_id") == mcall.wacid]
    assert sent[-2:] == [action, action], sent


async def test_a_failed_hangup_is_not_sent_again_once_meta_says_the_call_is_over(cclient, meta):
    client = await cclient()
    engine = client.app[ENGINE]
    call = await (await client.post("/call/make", json={"phone": "5521966661111"})).json()
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
    body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, call["callID"], "active", timeout=3)
    meta.fail_next["terminate"] = (131000, "Something went wrong")
    assert (await client.post("/call/hangup", json={"callID": call["callID"]})).status == 200
    assert mcall.wacid in engine.pending_hangups.ids()
    # The user hung up meanwhile: Meta's terminate webhook says the call is over.
    assert (await meta.post(client, meta.envelope(meta.terminate_event(mcall)))).status == 200
    await until(lambda: not engine.pending_hangups.ids(), 3.0, "the pending hang-up settled")
    sent = [a["action"] for a in meta.actions if a.get("call_id") == mcall.wacid]
    assert sent == ["terminate"] and engine.pending_hangups.done == 1, sent
