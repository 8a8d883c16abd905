"""The Cloud API Calling engine against a fake of Meta (Graph API, signed webhooks, and a
real aiortc peer on loopback for the WhatsApp user's media), with a browser agent (aiortc)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import numpy as np
import pytest

from bridge.api.keys import ENGINE, MANAGER
from bridge.audio import rms_dbfs
from bridge.engines.cloudapi.peer import WhatsAppPeer

from ..support.calls import events_counted, wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes

TONE_DBFS = -9.0  # both sides send a tone at amplitude 0.5 (RMS -9 dBFS)


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def live_calls(client, headers=None) -> list[dict]:
    return (await (await client.get("/call/status", headers=headers)).json())["calls"]


async def the_live_call(client) -> dict:
    """The one live call, once the engine reported it: Meta sees ``pre_accept`` before the
    engine's INCOMING event reaches the manager (the answer is sent first)."""
    calls = await until(lambda: live_calls(client), 5.0, "a live call")
    assert len(calls) == 1, calls
    return calls[0]


def heard(recorder, seconds: float = 1.0) -> np.ndarray:
    data = np.concatenate(recorder.chunks) if recorder.chunks else np.zeros(0)
    return data[-int(recorder.rate * seconds) :]


def assert_tone(samples: np.ndarray, rate: int, freq: float, what: str) -> None:
    assert samples.size > rate // 2, f"{what}: heard nothing"
    f = dominant_frequency(samples, rate)
    level = rms_dbfs(samples / 32768)
    print(f"{what}: {f:.1f} Hz at {level:.1f} dBFS")
    assert f == pytest.approx(freq, abs=5), what
    assert level == pytest.approx(TONE_DBFS, abs=2.5), what


async def hears_tone(recorder, freq: float, what: str, seconds: float = 1.0) -> None:
    """:func:`assert_tone` on the last ``seconds`` ``recorder`` heard, once the tone reached it
    (``Recorder.tone_arrives``, bounded: a loaded host delivers the first audio later), polled
    for up to 3 s while the window fills (where a fixed 1-2 s was slept before)."""
    await recorder.tone_arrives(freq)
    await until_passes(
        lambda: assert_tone(heard(recorder, seconds), recorder.rate, freq, what), 3.0
    )


def sdp_lines(sdp: str) -> list[str]:
    return [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]


def assert_meta_sdp(sdp: str, *, answer: bool) -> None:
    lines = sdp_lines(sdp)
    fingerprints = [ln for ln in lines if ln.startswith("a=fingerprint:")]
    assert fingerprints and all(ln.startswith("a=fingerprint:sha-256 ") for ln in fingerprints)
    assert any(ln.startswith("a=candidate:") and " 127.0.0.1 " in ln for ln in lines)
    assert "a=end-of-candidates" in lines or any(ln.startswith("a=candidate:") for ln in lines)
    m = next(ln for ln in lines if ln.startswith("m=audio "))
    assert m.split()[2] == "UDP/TLS/RTP/SAVPF"
    pts = m.split()[3:]
    assert "126" in pts
    assert "a=rtpmap:126 telephone-event/8000" in lines
    opus = [ln for ln in lines if " opus/48000" in ln and ln.startswith("a=rtpmap:")]
    assert len(opus) == 1
    opus_pt = opus[0].split(":")[1].split()[0]
    assert set(pts) == {opus_pt, "126"}  # Opus only (and DTMF)
    fmtp = next(ln for ln in lines if ln.startswith(f"a=fmtp:{opus_pt} "))
    for param in ("maxaveragebitrate=20000", "maxplaybackrate=16000", "useinbandfec=1"):
        assert param in fmtp
    if answer:
        assert "a=setup:active" in lines
    else:
        assert "a=setup:actpass" in lines


async def connect_browser(client, call_id: str, freq: float = 440.0) -> RtcClient:
    rtc = RtcClient(client, call_id, freq=freq)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    return rtc


async def test_inbound_pre_accept_accept_audio_both_ways_and_remote_hangup(cclient, meta):
    client = await cclient(call_reports=True)
    mcall = await meta.user_calls(client, "15550001111")
    await until(lambda: mcall.pre_accept_at, 5, "pre_accept")  # its time: bench.first_packet
    assert_meta_sdp(mcall.pre_accept_sdp, answer=True)
    call = await the_live_call(client)
    assert (call["state"], call["direction"]) == ("ringing", "inbound")
    assert call["peer"] == "15550001111@s.whatsapp.net"
    # ICE and DTLS come up on pre_accept, before the agent answers.
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)

    rtc = await connect_browser(client, call["callID"])
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 200 and (await resp.json())["state"] == "active"
    accept = next(a for a in meta.actions if a["action"] == "accept")
    assert accept["call_id"] == mcall.wacid
    assert accept["session"] == {"sdp_type": "answer", "sdp": mcall.pre_accept_sdp}
    assert not meta.refused

    await asyncio.sleep(2.0)  # two seconds of the call: its timeline's rows, the counts below
    await hears_tone(rtc.recorder, 660, "agent hears the WhatsApp user")
    await hears_tone(mcall.peer.recorder, 440, "WhatsApp user hears the agent")

    stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
    leg = stats["leg"]["webrtc"]
    assert leg["state"] == "connected" and leg["framesSent"] > 50
    # WhatsApp's packets all arrived; forwarded to the browser with nothing else on the bus,
    # they are counted but not decoded into frames (rtc/uplink.py's idle leg, issue 47).
    assert leg["receiver"]["packetsReceived"] > 50 and leg["packetsNotDecoded"] > 40
    # The call's timeline: both legs' tones at their level, Opus bit rates both ways on the
    # WhatsApp side's own WebRTC leg as on the browser's.
    report = await (await client.get(f"/call/{call['callID']}/report")).json()
    for name in ("whatsapp", "browser:agent"):
        rows = [r for r in report["timeline"] if r["leg"] == name and r["packetsReceived"] > 45]
        assert rows, (name, report["timeline"])
        row = rows[-1]
        assert abs(row["levelReceivedDbfs"] - TONE_DBFS) < 2 and row["levelSentDbfs"] > -20, row
        # (The fake Meta peer and this browser send with aiortc's own encoder, over 100
        # kbit/s, and the browser's packets go to Meta untouched: rtc/passthrough.py.)
        assert 5 < row["kbpsReceived"] < 160 and 5 < row["kbpsSent"] < 160, row

    resp = await meta.post(client, meta.envelope(meta.terminate_event(mcall, duration=3)))
    assert resp.status == 200
    ended = await wait_state(client, call["callID"], "ended", timeout=3)
    assert ended["endReason"] == "remote_hangup"
    await rtc.close()


async def test_outbound_connect_ringing_answer_accepted_audio_and_hangup(cclient, meta):
    client = await cclient()
    resp = await client.post("/call/make", json={"phone": "+5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    connect = next(a for a in meta.actions if a["action"] == "connect")
    assert connect["to"] == "5521999999999"
    assert connect["biz_opaque_callback_data"] == call["callID"]
    assert connect["session"]["sdp_type"] == "offer"
    assert_meta_sdp(connect["session"]["sdp"], answer=False)
    mcall = next(iter(meta.meta_calls.values()))
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "calling"

    rtc = await connect_browser(client, call["callID"])
    resp = await meta.post(client, meta.envelope(meta.status_event(mcall, "RINGING")))
    assert resp.status == 200
    await wait_state(client, call["callID"], "ringing", timeout=2)
    # The answer and ACCEPTED in one body (two changes): both handled, in order.
    body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, call["callID"], "active", timeout=3)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)

    await hears_tone(rtc.recorder, 660, "agent hears the WhatsApp user")
    await hears_tone(mcall.peer.recorder, 440, "WhatsApp user hears the agent")
    resp = await client.post("/call/hangup", json={"callID": call["callID"]})
    assert (await resp.json())["endReason"] == "hangup"
    assert [a["action"] for a in meta.actions if a.get("call_id") == mcall.wacid] == ["terminate"]
    assert not meta.refused
    await rtc.close()


async def test_no_call_permission_is_403_and_other_graph_errors_502(cclient, meta):
    client = await cclient()
    meta.no_permission.add("5521888888888")
    resp = await client.post("/call/make", json={"phone": "5521888888888"})
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "no_call_permission", body
    assert "No approved call permission" in body["error"]["message"]
    assert body["error"]["details"]["metaCode"] == 138006
    assert await live_calls(client) == []

    meta.numbers = {"1": meta.token}  # Meta now answers 100 "object does not exist"
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "engine_error", body
    assert body["error"]["details"]["metaCode"] == 100

    await meta.stop()  # nothing listens any more
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "engine_unavailable"
    await meta.start()


async def test_meta_refuses_other_fingerprints_like_meta(meta):
    import aiohttp

    from ..fakes.cloudapi import MetaPeer

    peer = MetaPeer(0)
    try:
        await peer.offer()
        sdp = peer.pc.localDescription.sdp  # aiortc's own: sha-256, sha-384 and sha-512
        assert "a=fingerprint:sha-384" in sdp
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{meta.graph_url}/{meta.phone_number_id}/calls",
                json={
                    "messaging_product": "whatsapp",
                    "action": "connect",
                    "to": "5521999999999",
                    "session": {"sdp_type": "offer", "sdp": sdp},
                },
                headers={"Authorization": f"Bearer {meta.token}"},
            )
            body = await resp.json()
        assert resp.status == 400
        assert (body["error"]["code"], body["error"]["error_subcode"]) == (100, 2494010)
    finally:
        await peer.close()


async def test_webhook_verification_signature_duplicates_and_hostile_bodies(cclient, meta):
    client = await cclient(api_tokens=("apitok",))
    auth = {"Authorization": "Bearer apitok"}
    q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
    resp = await client.get(f"/engine/webhook?{q}verify-me")
    assert resp.status == 200 and await resp.text() == "1158201444"
    resp = await client.get(f"/engine/webhook?{q}wrong")
    assert resp.status == 403

    mcall, event = await meta.user_offer("15550002222")
    body = meta.envelope(event)
    for signature in (None, "sha256=" + "0" * 64, "garbage"):
        resp = await meta.post(client, body, signature=signature)
        assert resp.status == 401, signature
    await asyncio.sleep(0.3)
    assert await live_calls(client, auth) == [] and not meta.actions

    # The same connect delivered twice (and once more in one batch): one call, one pre_accept.
    for _ in range(2):
        assert (await meta.post(client, body)).status == 200
    assert (await meta.post(client, meta.envelope(event, event))).status == 200
    await until(lambda: mcall.pre_accept_at, 2, "pre_accept")
    await asyncio.sleep(0.3)
    calls = await live_calls(client, auth)
    assert len(calls) == 1 and calls[0]["state"] == "ringing"
    assert [a["action"] for a in meta.actions] == ["pre_accept"]

    # A batch with two events: a second user's call and the first one's terminate.
    other, event2 = await meta.user_offer("15550003333")
    batch = meta.envelope(event2, meta.terminate_event(mcall, "COMPLETED"))
    assert (await meta.post(client, batch)).status == 200
    await wait_state(client, calls[0]["callID"], "ended", timeout=3, headers=auth)
    await until(lambda: other.pre_accept_at, 2, "second pre_accept")
    # A redelivered terminate for an ended call, and a status for an unknown one: no change.
    assert (await meta.post(client, batch)).status == 200
    unknown = meta.envelope({"statuses": [{"id": "wacid.nope", "status": "ACCEPTED"}]})
    assert (await meta.post(client, unknown)).status == 200
    await asyncio.sleep(0.3)
    live = await live_calls(client, auth)
    assert len(live) == 1 and live[0]["peer"] == "15550003333@s.whatsapp.net"

    hostile = [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"entry": 5}',
        b"{" * 100_000,
        b'{"entry": [{"changes": [{"field": "calls", "value": {"calls": [5, {"id": 7}], '
        b'"statuses": "x", "errors": 3}}]}, 4, {"changes": "x"}]}',
        b'{"entry": [{"changes": [{"field": "calls", "value": {"calls": [{"id": "wacid.x", '
        b'"event": "connect", "direction": "USER_INITIATED", "session": {"sdp_type": "offer", '
        b'"sdp": "v=0 garbage"}}]}}]}]}',
        '{"entry": [], "\udcff": 1}'.encode("utf-8", "surrogateescape"),
    ]
    for raw in hostile:
        resp = await meta.post(client, raw)
        assert 400 <= resp.status < 500 or resp.status == 200, (raw[:40], resp.status)
    await asyncio.sleep(0.5)
    assert len(await live_calls(client, auth)) == 1
    assert client.app[ENGINE].stats.bad_messages >= 3
    # The bridge's own API still needs its token.
    assert (await client.get("/call/status")).status == 401


async def test_dtmf_digits_from_the_whatsapp_user(cclient, meta):
    client = await cclient()
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, "15550004444")
    await until(lambda: mcall.pre_accept_at, 2, "pre_accept")
    call = await the_live_call(client)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)
    async with manager.events.subscribe() as sub:
        resp = await client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200
        await asyncio.sleep(0.3)
        for digit in "15#":
            await mcall.peer.send_dtmf(digit)
            await asyncio.sleep(0.1)
        dtmf = [e.data for e in await events_counted(sub, {"call.dtmf"}, 3)]
    assert dtmf == [
        {"digit": "1", "durationMs": 200, "source": "whatsapp"},
        {"digit": "5", "durationMs": 200, "source": "whatsapp"},
        {"digit": "#", "durationMs": 200, "source": "whatsapp"},
    ]
    metrics = await (await client.get("/metrics")).text()
    assert 'bridge_dtmf_events_total{direction="received",source="whatsapp"} 3.0' in metrics


def drop_udp(pc) -> None:
    """The WhatsApp side goes away without a word: its ICE sockets close, nothing more is sent
    (no DTLS close_notify, no terminate webhook)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        for protocol in list(connection._protocols):
            protocol.transport.close()


async def collect_until_ended(sub, call_id: str, timeout: float) -> list:
    """The call's events until (and with) its ``call.ended``; fails after ``timeout``."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = await sub.get(0.1)
        except TimeoutError:
            continue
        if event is None or event.call.get("callID") != call_id:
            continue
        events.append(event)
        if event.type == "call.ended":
            return events
    raise AssertionError(f"call {call_id} did not end within {timeout} s: {events}")


@pytest.mark.parametrize("how", ["udp_dropped", "pc_closed"])
async def test_whatsapp_peer_going_away_fails_the_call(cclient, meta, monkeypatch, how):
    """The WhatsApp side going away mid-call with no terminate webhook ends the call
    ``failed``, with its events: its UDP silently dropped (ICE consent lost), or its peer
    connection closed abruptly (DTLS close, nothing more)."""
    import aioice.ice

    # RFC 7675's 5 s consent interval (6 misses: ~30 s) shortened so the test stays short.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    client = await cclient()
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, "15550005555")
    await until(lambda: mcall.pre_accept_at, 2, "pre_accept")
    call = await the_live_call(client)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)
    rtc = await connect_browser(client, call["callID"])
    assert (await client.post("/call/answer", json={"callID": call["callID"]})).status == 200
    await hears_tone(rtc.recorder, 660, "agent hears the user", seconds=0.6)

    peer = client.app[ENGINE].calls[mcall.wacid].leg  # the bridge's WhatsApp-side peer
    async with manager.events.subscribe() as sub:
        if how == "udp_dropped":
            drop_udp(mcall.peer.pc)
        else:
            await mcall.peer.pc.close()
        events = await collect_until_ended(sub, call["callID"], timeout=20)
    ended = events[-1]
    assert ended.call["state"] == "ended" and ended.call["endReason"] == "failed", ended
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert (snap["state"], snap["endReason"]) == ("ended", "failed")
    # The leg says why (its peer connection closed by itself: consent expired), and counts it.
    assert peer.state == "failed" and peer.failure and "consent" in peer.failure
    metrics = await (await client.get("/metrics")).text()
    assert (
        'reason="connection lost",stage="ice"' in metrics
        or 'stage="ice",reason="connection lost"' in metrics
    )
    # The bridge told Meta it is over (the terminate is answered even though media is gone),
    # and no webhook was needed for it.
    assert "terminate" in mcall.actions
    # The browser leg was torn down with the call, and the bridge has no live call left.
    assert await live_calls(client) == []
    await rtc.close()


async def test_ringing_inbound_call_times_out_as_missed_and_is_rejected_at_meta(cclient, meta):
    client = await cclient(ring_timeout=1.0)
    manager = client.app[MANAGER]
    async with manager.events.subscribe() as sub:
        mcall = await meta.user_calls(client, "15550006666")
        await until(lambda: mcall.pre_accept_at, 2, "pre_accept")
        call = await the_live_call(client)
        assert call["state"] == "ringing"
        events = await collect_until_ended(sub, call["callID"], timeout=10)
    types = [e.type for e in events]
    assert types[0] == "call.created" and "call.ringing" in types, types
    ended = events[-1]
    assert (ended.call["state"], ended.call["endReason"]) == ("ended", "missed"), ended
    # Meta heard a reject (not a terminate) for that call, and nothing after it.
    assert mcall.actions == ["pre_accept", "reject"]
    assert mcall.state == "ended"
    assert not meta.refused


async def test_webhooks_before_connect_answers_are_applied(cclient, meta):
    """Meta's RINGING, answer and ACCEPTED can reach the bridge before the connect request
    has returned the call id: they are found by ``biz_opaque_callback_data`` (our callID)."""
    client = await cclient()
    engine = client.app[ENGINE]
    early = {}

    async def webhooks_first(mcall) -> None:
        body = meta.envelope(
            meta.status_event(mcall, "RINGING"),
            meta.answer_event(mcall),
            meta.status_event(mcall, "ACCEPTED"),
        )
        early["status"] = (await meta.post(client, body)).status
        # The bridge works through them (finding no call with that wacid yet) before we answer.
        await until(engine.graph_side.inbox.queue.empty, 3, "the early webhook taken")
        await asyncio.sleep(0.3)
        dialling = getattr(engine, "_dialling", {})
        early["parked"] = [ev.kind for q in dialling.values() for ev in q]

    meta.before_connect_answer = webhooks_first
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    assert early == {"status": 200, "parked": ["status", "connect", "status"]}
    mcall = next(iter(meta.meta_calls.values()))
    assert mcall.opaque == call["callID"]
    rtc = await connect_browser(client, call["callID"])
    await wait_state(client, call["callID"], "active", timeout=3)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)
    await hears_tone(rtc.recorder, 660, "agent hears the WhatsApp user")
    await hears_tone(mcall.peer.recorder, 440, "WhatsApp user hears the agent")
    assert not engine._dialling
    resp = await client.post("/call/hangup", json={"callID": call["callID"]})
    assert (await resp.json())["endReason"] == "hangup"
    await rtc.close()


@pytest.mark.parametrize("ending", ["hangup", "terminate", "runtime_closed", "missed"])
async def test_the_runtime_owns_the_whatsapp_peer_and_closes_it_once(
    cclient, meta, monkeypatch, ending
):
    """The WhatsApp-side peer connection belongs to the call's runtime from the call's
    creation: however the call ends (our hang-up, Meta's terminate, the runtime closed with
    the engine told nothing, a ringing call missed), the runtime closes it, exactly once, and
    the engine keeps nothing of the call."""
    closes: Counter[int] = Counter()
    real_close = WhatsAppPeer.close

    async def counted_close(self: WhatsAppPeer) -> None:
        closes[id(self)] += 1
        await real_close(self)

    monkeypatch.setattr(WhatsAppPeer, "close", counted_close)
    client = await cclient(ring_timeout=1.0 if ending == "missed" else 60.0)
    engine, manager = client.app[ENGINE], client.app[MANAGER]
    mcall = await meta.user_calls(client, "15550007777")
    await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "the call ringing")
    call_id = manager.registry.by_engine_id(mcall.wacid).id
    runtime = manager.find_runtime(call_id)
    peer = engine.calls[mcall.wacid].leg
    assert runtime.media.leg is peer and engine.calls[mcall.wacid].handed_over
    rtc = None
    if ending != "missed":
        rtc = await connect_browser(client, call_id)
        assert (await client.post("/call/answer", json={"callID": call_id})).status == 200
        await until(lambda: runtime.media.webrtc_leg is not None, 3, "the engine media open")
        assert runtime.media.webrtc_leg is peer  # the pump's channel is on the runtime's leg

    if ending == "hangup":
        assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    elif ending == "terminate":
        await meta.post(client, meta.envelope(meta.terminate_event(mcall)))
    elif ending == "runtime_closed":
        await runtime.close()  # nothing told the engine: the leg's closing does
        assert closes[id(peer)] == 1 and peer.closed and mcall.wacid not in engine.calls
        assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    reasons = {"terminate": "remote_hangup", "missed": "missed"}
    ended = await wait_state(client, call_id, "ended", timeout=5)
    assert ended["endReason"] == reasons.get(ending, "hangup")
    await until(lambda: runtime.closed and peer.closed, 3, "the runtime and its leg closed")
    await asyncio.sleep(0.2)  # anything late (webhook answers, the pump's end) comes now
    assert closes == {id(peer): 1}, "the peer was closed once, by its runtime"
    assert peer.state == "closed" and peer.failure is None
    assert engine.calls == {} and engine._dialling == {}
    assert (await engine.health()).info["calls"] == 0
    if rtc is not None:
        await rtc.close()


async def test_metas_terminate_after_the_business_ended_the_call_changes_nothing(
    cclient, meta, caplog
):
    """Meta reports every end with a terminate webhook, the business's own too (its
    ``terminate``, its ``reject`` of a user's call): the fake sends it after its Graph
    answer, as Meta does. Each call stays ended once, with the bridge's reason, and nothing
    is said about a terminate for a call that has ended."""
    client = await cclient()
    manager = client.app[MANAGER]
    async with manager.events.subscribe() as sub:
        declined = await meta.user_calls(client, "15550007001")
        ringing = await until(lambda: manager.registry.by_engine_id(declined.wacid), 3, "ringing")
        assert (await client.post("/call/hangup", json={"callID": ringing.id})).status == 200
        answered = await meta.user_calls(client, "15550007002")
        live = await until(lambda: manager.registry.by_engine_id(answered.wacid), 3, "ringing")
        assert (await client.post("/call/answer", json={"callID": live.id})).status == 200
        await wait_state(client, live.id, "active", timeout=3)
        made = await (await client.post("/call/make", json={"phone": "5521977770003"})).json()
        ours = next(c for c in meta.meta_calls.values() if c.opaque == made["callID"])
        assert (await meta.post(client, meta.envelope(meta.answer_event(ours)))).status == 200
        await wait_state(client, made["callID"], "active", timeout=3)
        caplog.clear()
        for call_id in (live.id, made["callID"]):
            assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
        await until(lambda: len(meta.ends_reported) == 3, 3, "Meta's three terminates")
        ended = await events_counted(sub, {"call.ended"}, 3, settle=0.5)
    assert [status for _, status in meta.ends_reported] == [200, 200, 200]
    engine = client.app[ENGINE]
    await until(engine.graph_side.inbox.queue.empty, 2, "the webhooks taken")
    assert sorted(e.call["callID"] for e in ended) == sorted([ringing.id, live.id, made["callID"]])
    reasons = {e.call["callID"]: e.call["endReason"] for e in ended}
    assert reasons[live.id] == reasons[made["callID"]] == "hangup", reasons
    assert reasons[ringing.id] == "declined", reasons
    assert engine.stats.bad_messages == 0  # Meta's terminates read, not skipped
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not said, [r.getMessage() for r in said]
