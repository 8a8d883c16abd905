"""The ZuckZapGo leg against a fake engine written from its spec, over loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from bridge.api.keys import ENGINE, MANAGER
from bridge.audio import rms_dbfs

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.calls import listed_calls, wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency, steady_level_db
from ..support.waits import until


async def settle_audio(rtc: RtcClient, seconds: float = 1.0) -> np.ndarray:
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    return rtc.recorder.since(t0)


async def test_outbound_call_audio_both_ways(zclient, zuckzapgo) -> None:
    client = await zclient()
    resp = await client.post("/call/make", json={"phone": "+5521999999999"})
    assert resp.status == 201
    call = await resp.json()
    assert ("POST", "/call/dial", {"phone": "5521999999999"}) in zuckzapgo.requests
    rtc = RtcClient(client, call["callID"], freq=440.0)
    await rtc.offer()
    await wait_state(client, call["callID"], "active")
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await rtc.recorder.tone_arrives(700)
    heard = await settle_audio(rtc, 1.5)
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(700, abs=5)
    assert rms_dbfs(heard / 32768) == pytest.approx(-11.0, abs=2.0)  # sent at 0.4 = -11 dBFS

    engine_call = next(iter(zuckzapgo.calls.values()))
    assert engine_call.connects == 1
    sizes = {len(f) for f in engine_call.received}
    assert sizes == {1920}, sizes  # exactly 960-sample frames, never padded
    pcm = engine_call.heard()[-16_000:]
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert steady_level_db(pcm, 16_000) == pytest.approx(-9.0, abs=1.5)

    resp = await client.post("/call/hangup", json={"callID": call["callID"]})
    assert (await resp.json())["endReason"] == "hangup"
    assert ("POST", "/call/hangup", {"callId": engine_call.id}) in zuckzapgo.requests
    await rtc.close()


async def test_inbound_ring_answer_and_remote_hangup_by_poll(zclient, zuckzapgo) -> None:
    client = await zclient(engine_poll_interval=1.0)
    engine_id = zuckzapgo.ring_inbound("15550001111")

    async def listed() -> list:
        return (await (await client.get("/call/status")).json())["calls"]

    calls = await until(listed, 5.0, "the polled inbound call", every=0.05)
    assert calls[0]["state"] == "ringing" and calls[0]["direction"] == "inbound"
    cid = calls[0]["callID"]
    resp = await client.post("/call/answer", json={"callID": cid})
    assert resp.status == 200 and (await resp.json())["state"] == "active"
    assert zuckzapgo.calls[engine_id].answered

    zuckzapgo.remote_hangup(engine_id)
    ended = await wait_state(client, cid, "ended", timeout=5)  # found by the next poll
    assert ended["endReason"] == "remote_hangup"


async def test_webhook_rings_at_once(zclient, zuckzapgo) -> None:
    client = await zclient(engine_poll_interval=30.0)
    await asyncio.sleep(0.2)
    engine_id = zuckzapgo.ring_inbound("15550002222")
    resp = await client.post(
        "/engine/webhook",
        json={
            "type": "v1.call.offer",
            "data": {"callId": engine_id, "from": "15550002222@s.whatsapp.net"},
        },
    )
    assert resp.status == 200 and (await resp.json()) == {"accepted": True}
    calls = (await (await client.get("/call/status")).json())["calls"]
    if not calls:
        await asyncio.sleep(0.05)
        calls = (await (await client.get("/call/status")).json())["calls"]
    assert len(calls) == 1 and calls[0]["state"] == "ringing"
    assert calls[0]["peer"] == "15550002222@s.whatsapp.net"
    # A terminate webhook ends it at once, with no poll in between.
    resp = await client.post(
        "/engine/webhook",
        json={
            "type": "v1.call.terminate",
            "data": {"callId": engine_id},
        },
    )
    assert resp.status == 200 and (await resp.json()) == {"accepted": True}
    await wait_state(client, calls[0]["callID"], "ended", timeout=1)
    resp = await client.post("/engine/webhook", data=b"nope")
    assert resp.status == 400


async def ringing_by_webhook(client, zuckzapgo: FakeZuckZapGo, phone: str) -> tuple[str, str]:
    """An inbound call rung on the fake and told by its offer webhook: (engine id, call id)."""
    engine_id = zuckzapgo.ring_inbound(phone)
    offer = {"callId": engine_id, "from": f"{phone}@s.whatsapp.net"}
    await client.post("/engine/webhook", json={"type": "v1.call.offer", "data": offer})
    calls = await until(lambda: listed_calls(client), 5, "the ringing call listed")
    return engine_id, calls[0]["callID"]


async def test_two_answers_at_once_reach_the_engine_once(zclient, zuckzapgo) -> None:
    """An answer clicked twice (or the desk and an app answering one call together): both
    were checked before either reached the engine, and the engine was asked to answer twice
    (two Cloud API accepts, where Meta may take the second as an error and end the call).
    One answer reaches the engine; the other waits for it and shares its outcome."""
    client = await zclient(engine_poll_interval=30.0)
    engine_id, cid = await ringing_by_webhook(client, zuckzapgo, "15550004444")
    answers = await asyncio.gather(
        *(client.post("/call/answer", json={"callID": cid}) for _ in range(2))
    )
    assert [(r.status, (await r.json())["state"]) for r in answers] == [(200, "active")] * 2
    asked = [r for r in zuckzapgo.requests if r[1] == "/call/answer"]
    assert asked == [("POST", "/call/answer", {"callId": engine_id})], asked
    again = await client.post("/call/answer", json={"callID": cid})  # once active: 409
    assert again.status == 409 and (await again.json())["error"]["code"] == "invalid_call_state"


async def test_an_answer_as_the_caller_hangs_up_is_409_not_404(zclient, zuckzapgo) -> None:
    """The caller gives up just as the agent answers: the engine no longer knows the call
    (its 404). The bridge answered 404 ``call_not_found`` for a call the app had just been
    shown; it is a 409 now, and the call ends as the engine reports it."""
    client = await zclient(engine_poll_interval=30.0)
    engine_id, cid = await ringing_by_webhook(client, zuckzapgo, "15550005555")
    zuckzapgo.remote_hangup(engine_id)
    resp = await client.post("/call/answer", json={"callID": cid})
    body = await resp.json()
    assert resp.status == 409 and body["error"]["code"] == "invalid_call_state", body
    assert "caller hung up" in body["error"]["message"]
    terminate = {"type": "v1.call.terminate", "data": {"callId": engine_id}}
    await client.post("/engine/webhook", json=terminate)
    ended = await wait_state(client, cid, "ended", timeout=2)
    assert ended["endReason"] == "remote_canceled"


async def test_an_answer_as_the_ring_timeout_ends_the_call_is_409_and_the_call_missed(
    zclient, zuckzapgo
) -> None:
    """The ring timeout ends an inbound call (its hang-up on the engine, slow to answer) and
    the agent answers meanwhile: one outcome. The call is missed, never answered (no
    ``answeredAt``, no ``call.active``), and the answer is a 409. The answer went through while
    the engine took the hang-up, and the call then ended ``missed`` with ``answeredAt`` set."""
    client = await zclient(engine_poll_interval=30.0, ring_timeout=0.5)
    seen: list[str] = []
    client.app[MANAGER].events.listen(lambda type_, call: seen.append(type_))
    zuckzapgo.slow["/call/hangup"] = asyncio.Event()
    try:
        engine_id, cid = await ringing_by_webhook(client, zuckzapgo, "15550008888")
        hangup = ("POST", "/call/hangup", {"callId": engine_id})
        await until(lambda: hangup in zuckzapgo.requests, 5, "the ring timeout's hang-up")
        answering = asyncio.ensure_future(client.post("/call/answer", json={"callID": cid}))
        await asyncio.sleep(0.2)  # the answer under way while the engine takes the hang-up
    finally:
        zuckzapgo.slow["/call/hangup"].set()
    resp = await asyncio.wait_for(answering, 5)
    assert resp.status == 409, await resp.text()
    ended = await wait_state(client, cid, "ended", timeout=5)
    assert ended["endReason"] == "missed" and ended["answeredAt"] is None, ended
    assert "call.active" not in seen, seen


async def test_routes_of_capabilities_it_lacks_are_404(zclient, zuckzapgo) -> None:
    # No webhook verification (its webhooks take the API token), no simulated network.
    client = await zclient()
    resp = await client.get("/engine/webhook?hub.mode=subscribe&hub.challenge=1")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.post("/call/sim/incoming", json={"phone": "15550002222"})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    assert not zuckzapgo.calls


async def test_local_hangup_reaches_engine_and_decline(zclient, zuckzapgo) -> None:
    client = await zclient()
    engine_id = zuckzapgo.ring_inbound("15550003333")
    calls = await until(lambda: listed_calls(client), 5, "the ringing call listed")
    cid = calls[0]["callID"]
    resp = await client.post("/call/hangup", json={"callID": cid})
    assert (await resp.json())["endReason"] == "declined"
    assert zuckzapgo.calls[engine_id].state == "ended"


async def test_media_socket_dropped_reconnects_without_touching_webrtc(zclient, zuckzapgo) -> None:
    client = await zclient()
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    await rtc.offer()
    await wait_state(client, call["callID"], "active")
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await asyncio.sleep(0.8)
    engine_call = next(iter(zuckzapgo.calls.values()))
    pc_before = client.app[MANAGER].find_runtime(call["callID"]).participants.agent
    await zuckzapgo.kill_media(engine_call.id)
    # The reconnect and the engine's tone back, waited for (bounded), then a second listened
    # to; the counts read after it (one reconnect, no second drop meanwhile).
    await until(lambda: engine_call.connects >= 2, 10, "the media socket again")
    await rtc.recorder.tone_arrives(700)
    heard = await settle_audio(rtc, 1.0)
    assert engine_call.connects == 2
    assert client.app[ENGINE].stats.reconnects == 1
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(700, abs=5)
    received = len(engine_call.received)
    await asyncio.sleep(0.5)
    assert len(engine_call.received) > received  # uplink resumed too
    assert client.app[MANAGER].find_runtime(call["callID"]).participants.agent is pc_before
    assert rtc.pc.connectionState == "connected"
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active" and snap["webrtc"]["state"] == "connected"
    await rtc.close()


async def test_a_refused_media_socket_is_retried_and_the_token_never_logged(
    zclient, zuckzapgo, caplog
) -> None:
    """aiohttp's handshake error names the URL, ``?token=`` and all: the engine's token was
    in the WARNING line (and the pump's log of the media's end)."""
    client = await zclient()
    zuckzapgo.stream_refusals = 1
    with caplog.at_level(logging.DEBUG, logger="bridge"):
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        rtc = RtcClient(client, call["callID"], freq=440.0)
        await rtc.offer()
        await wait_state(client, call["callID"], "active")
        engine_call = next(iter(zuckzapgo.calls.values()))
        await until(lambda: engine_call.connects == 1, 5, "the socket opened at the retry")
        await rtc.recorder.tone_arrives(700)
    lines = [r.getMessage() for r in caplog.records]
    assert any("cannot open the engine media" in m and "503" in m for m in lines), lines
    assert not [m for m in lines if zuckzapgo.token in m]
    await rtc.close()


async def test_odd_length_frame_is_counted_and_call_survives(zclient, zuckzapgo) -> None:
    client = await zclient()
    zuckzapgo.extra_frames.append(b"\x01\x02\x03")
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=440.0)
    await rtc.offer()
    await wait_state(client, call["callID"], "active")
    await until(lambda: client.app[ENGINE].stats.bad_frames >= 1, 10, "the odd frame counted")
    await rtc.recorder.tone_arrives(700)
    heard = await settle_audio(rtc, 1.0)
    assert client.app[ENGINE].stats.bad_frames == 1
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(700, abs=5)
    await rtc.close()


async def test_engine_errors_map_to_ours(zclient, zuckzapgo) -> None:
    client = await zclient()
    zuckzapgo.enabled = False
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "engine_not_enabled"
    assert "callsEnabled" in body["error"]["message"] and "reconnect" in body["error"]["message"]
    zuckzapgo.enabled = True
    zuckzapgo.unreachable_peers.add("5521000000000")
    resp = await client.post("/call/make", json={"phone": "5521000000000"})
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "peer_unreachable"


async def test_engine_down_at_start_then_recovers(make_client) -> None:
    zuckzapgo = FakeZuckZapGo()  # not started yet
    client = await make_client(
        engine="zuckzapgo", engine_url=zuckzapgo.url, engine_token="ztok", engine_poll_interval=0.2
    )
    await asyncio.sleep(0.3)
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["engine"]["up"] is False
    assert any("engine down" in r for r in body["reasons"])
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "engine_unavailable"
    await zuckzapgo.start()
    try:
        await asyncio.sleep(0.5)
        assert (await client.get("/readyz")).status == 200
        resp = await client.post("/call/make", json={"phone": "5521999999999"})
        assert resp.status == 201
    finally:
        await zuckzapgo.stop()


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>maintenance</html>",  # a proxy's page, answered 200
        b"",
        b"[]",
        b'{"code": 200, "data": {"calls": "none"}, "success": true}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
async def test_a_call_list_that_cannot_be_read_ends_no_call(
    zclient, zuckzapgo, caplog, answer
) -> None:
    """A 200 whose body is no call list: the engine is down for the bridge (said once), and
    its calls go on; they were all ended as gone from the list (``remote_hangup``)."""
    client = await zclient(engine_poll_interval=0.05)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    engine = client.app[ENGINE]
    for tracked in engine._calls._unlisted_since:  # past the grace a just-dialled call has
        engine._calls._unlisted_since[tracked] -= 60.0
    caplog.set_level(logging.INFO, logger="bridge")
    zuckzapgo.list_answer = answer
    await until(lambda: not engine.up, 5, "the engine down")
    await asyncio.sleep(0.5)  # ten polls
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active", snap
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    zuckzapgo.list_answer = None
    await until(lambda: engine.up, 5, "the engine up again")
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active", snap
