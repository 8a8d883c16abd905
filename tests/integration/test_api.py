"""The v1 HTTP API: status codes, error bodies, state machine, auth, WebRTC session rules."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import unquote

import numpy as np
import pytest

from bridge.api.keys import ENGINE, MANAGER
from bridge.audio import rms_dbfs, s16_to_f32

from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def assert_error(body: dict, code: str | None = None) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


async def make_call(client, phone: str = "5521999999999", headers=None) -> dict:
    resp = await client.post("/call/make", json={"phone": phone}, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_make_returns_snapshot_and_rings_then_answers(make_client) -> None:
    client = await make_client(sim_answer_delay=1.0)
    call = await make_call(client, "5521999999999@s.whatsapp.net")
    assert set(call) == {
        "callID",
        "numberID",
        "tenantID",
        "peer",
        "direction",
        "state",
        "transport",
        "webrtc",
        "muted",
        "held",
        "participants",
        "metadata",
        "createdAt",
        "answeredAt",
        "endedAt",
        "endReason",
        "endDetail",
        "duration",
        "owner",
    }
    assert call["state"] == "calling" and call["transport"] is None and call["webrtc"] is None
    assert call["participants"] == [] and call["held"] is False
    assert call["createdAt"].endswith("Z") and call["answeredAt"] is None
    await wait_state(client, call["callID"], "ringing", timeout=1)
    active = await wait_state(client, call["callID"], "active", timeout=3)
    assert active["answeredAt"] is not None
    status = await (await client.get("/call/status")).json()
    assert [c["callID"] for c in status["calls"]] == [call["callID"]]


async def test_metadata_is_kept(client) -> None:
    resp = await client.post("/call/make", json={"phone": "+447700900123", "metadata": {"a": 1}})
    body = await resp.json()
    assert resp.status == 201 and body["metadata"] == {"a": 1}


@pytest.mark.parametrize(
    "payload,code",
    [
        ({}, "invalid_phone"),
        ({"phone": "abc"}, "invalid_phone"),
        ({"phone": 5521999}, "invalid_phone"),
        ({"phone": "12"}, "invalid_phone"),
        ({"phone": "5521999999999", "metadata": [1]}, "bad_request"),
    ],
)
async def test_make_rejects_bad_input(client, payload, code) -> None:
    resp = await client.post("/call/make", json=payload)
    assert resp.status == 400
    assert_error(await resp.json(), code)


async def test_make_says_which_of_phone_and_recipient_is_wrong(client) -> None:
    """Neither given is told as neither (before, both cases said "not both")."""
    for payload, said in (
        ({}, "neither was given"),
        ({"phone": "5521999999999", "recipient": "BR.1234567890"}, "not both"),
    ):
        resp = await client.post("/call/make", json=payload)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_phone", error
        assert said in error["message"], (payload, error)


@pytest.mark.parametrize(
    "route",
    [
        "/call/make",
        "/call/answer",
        "/call/hangup",
        "/call/mute",
        "/call/webrtc/offer",
        "/call/webrtc/close",
        "/call/sim/incoming",
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1,2]",
        b"\xff\xfe",
        b"null",
        # Python's json reads these; no JSON has them, and no UTF-8 encodes a lone surrogate.
        b'{"callID": "c", "muted": NaN, "phone": Infinity}',
        b'{"callID": "\\ud800", "phone": "\\udfff", "sdp": "\\udc80"}',
    ],
)
async def test_malformed_json_is_400(client, route, body) -> None:
    resp = await client.post(route, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_json")


async def test_unknown_call_is_404_everywhere(client) -> None:
    assert_error(await (await client.get("/call/nope")).json(), "call_not_found")
    for route in ["/call/answer", "/call/hangup", "/call/webrtc/close", "/call/mute"]:
        resp = await client.post(route, json={"callID": "nope"})
        assert resp.status == 404, route
        assert_error(await resp.json(), "call_not_found")
    resp = await client.post(
        "/call/webrtc/offer", json={"callID": "nope", "type": "offer", "sdp": "v=0\r\nm=audio 9"}
    )
    assert resp.status == 404


async def test_unknown_route_and_method_get_the_error_body(client) -> None:
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")
    resp = await client.put("/call/hangup")
    assert resp.status == 405
    assert_error(await resp.json(), "method_not_allowed")
    # RFC 9110 §15.5.6: the methods the path takes (GET too: /call/{callID} matches it).
    assert "POST" in resp.headers.get("Allow", "").split(","), resp.headers


async def test_a_method_a_route_does_not_have_is_405_whoever_asks(make_client) -> None:
    """With tokens and an internal secret set, a method a route does not have is 405 with
    ``Allow`` and the error body, asked with no token, a wrong internal secret or a valid
    token alike, on public and internal routes; a path no route has is 404. Before, auth
    answered first: 401 (schemathesis's ``unsupported_method`` on ``/call/adopt``)."""
    client = await make_client(api_tokens=(TOKEN,), internal_secret="internal-secret-0123456789")
    wrong_secret = {"X-Bridge-Internal": "not-the-secret"}
    for method, path, allow in [
        ("DELETE", "/call/adopt", "POST"),
        ("PUT", "/call/handover", "POST"),
        ("PATCH", "/call/status", "GET"),
        ("PUT", "/call/make", "POST"),
    ]:
        for headers in ({}, wrong_secret, AUTH):
            resp = await client.request(method, path, headers=headers)
            assert resp.status == 405, (method, path, headers, await resp.text())
            assert_error(await resp.json(), "method_not_allowed")
            assert allow in resp.headers["Allow"].split(","), resp.headers
    for headers in ({}, AUTH):
        resp = await client.get("/call/a/b/c/d", headers=headers)
        assert resp.status == 404
        assert_error(await resp.json(), "not_found")
    # A route's own method still needs the token.
    assert (await client.post("/call/make", json={"phone": "5521999999999"})).status == 401
    assert (await client.post("/call/adopt", json={}, headers=wrong_secret)).status == 401


async def test_oversize_body_is_413(client) -> None:
    resp = await client.post("/call/make", data=b'{"phone": "' + b"1" * 70_000 + b'"}')
    assert resp.status == 413
    assert_error(await resp.json(), "too_large")
    call = await make_call(client)
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + "a=x\r\n" * 4000
    resp = await client.post("/call/webrtc/offer", json={"callID": call["callID"], "sdp": sdp})
    assert resp.status == 413


async def test_state_machine_conflicts_are_409(client) -> None:
    call = await make_call(client)
    cid = call["callID"]
    resp = await client.post("/call/answer", json={"callID": cid})
    assert resp.status == 409  # an outbound call cannot be answered by us
    assert_error(await resp.json(), "invalid_call_state")
    resp = await client.post("/call/hangup", json={"callID": cid})
    assert resp.status == 200
    ended = await resp.json()
    assert ended["state"] == "ended" and ended["endReason"] == "canceled" and ended["endedAt"]
    for route, body in [
        ("/call/hangup", {"callID": cid}),
        ("/call/answer", {"callID": cid}),
        ("/call/mute", {"callID": cid, "muted": True}),
    ]:
        resp = await client.post(route, json=body)
        assert resp.status == 409, route
        assert_error(await resp.json())
    # Ended calls stay readable, and leave the live list.
    assert (await (await client.get(f"/call/{cid}")).json())["state"] == "ended"
    assert (await (await client.get("/call/status")).json())["calls"] == []


async def test_inbound_ring_answer_and_decline(client) -> None:
    resp = await client.post("/call/sim/incoming", json={"phone": "+15550001111"})
    assert resp.status == 201
    call = await resp.json()
    assert call["direction"] == "inbound" and call["state"] == "ringing"
    assert call["peer"] == "15550001111@s.whatsapp.net"
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 200 and (await resp.json())["state"] == "active"
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 409

    second = await (await client.post("/call/sim/incoming", json={"phone": "15550002222"})).json()
    resp = await client.post("/call/hangup", json={"callID": second["callID"]})
    assert (await resp.json())["endReason"] == "declined"
    engine = client.app[ENGINE]
    assert {c.state for c in engine.calls.values()} == {"active", "ended"}
    # A number to ring that does not exist: the error names the field the caller sent.
    resp = await client.post("/call/sim/incoming", json={"phone": "15550003333", "to": "nope"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "unknown_number", body
    assert "field 'to'" in body["error"]["message"], body


async def test_remote_hangup_ends_the_call(make_client) -> None:
    client = await make_client(sim_hangup_after=0.3)
    call = await make_call(client)
    ended = await wait_state(client, call["callID"], "ended", timeout=3)
    assert ended["endReason"] == "remote_hangup"


async def test_a_call_whose_teardown_is_slow_holds_up_no_other_calls_end(
    make_client, monkeypatch
) -> None:
    """The engine ends two calls, the first of which takes long to close (a fork to an app
    that never answers its close, a peer connection that will not go): the second's end is
    told at once. The engine's events were read by one task, which closed each ended call
    before reading the next event: every other call's ringing, answer and end waited for it."""
    from bridge.calls.runtime import CallRuntime
    from bridge.engines import EngineEvent, EngineEventKind
    from bridge.engines.base import emit
    from bridge.resources import CALL_EVENTS

    client = await make_client()
    slow, quick = await make_call(client), await make_call(client, "5521999999998")
    for call in (slow, quick):
        await wait_state(client, call["callID"], "active")
    manager = client.app[MANAGER]
    release = asyncio.Event()
    real_close = CallRuntime.close

    async def close(self: CallRuntime, ended: dict | None = None) -> None:
        if self.call.id == slow["callID"]:
            await release.wait()  # what will not close
        await real_close(self, ended)

    monkeypatch.setattr(CallRuntime, "close", close)
    told: list[str] = []
    client.app[CALL_EVENTS].observe(
        lambda event, call: told.append(call.id) if event.type == "call.ended" else None
    )
    engine = client.app[ENGINE]
    for call in (slow, quick):
        engine_id = manager.get(call["callID"]).engine_call_id
        emit(engine.events, EngineEvent(EngineEventKind.ENDED, engine_id, reason="remote_hangup"))
    try:
        await until(lambda: quick["callID"] in told, 3, "the second call's end told")
        assert slow["callID"] not in told  # still closing
        assert (await wait_state(client, slow["callID"], "ended"))["endReason"] == "remote_hangup"
    finally:
        release.set()
    await until(lambda: slow["callID"] in told, 3, "the first call's end told once it closed")
    assert told == [quick["callID"], slow["callID"]]


async def test_events_stream_reports_lifecycle(client) -> None:
    resp = await client.get("/call/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    call = await make_call(client)
    await client.post("/call/hangup", json={"callID": call["callID"]})
    seen: list[tuple[str, dict]] = []
    event = None
    while len(seen) < 3:
        line = (await asyncio.wait_for(resp.content.readline(), 3)).decode().strip()
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            seen.append((event, json.loads(line[6:])))
    types = [e for e, _ in seen]
    assert types[0] == "call.created" and types[-1] == "call.ended"
    assert all(
        d["callID"] == call["callID"] and d["call"]["callID"] == call["callID"] for _, d in seen
    )
    resp.close()


async def read_sse(resp, count: int) -> list[dict[str, str]]:
    """The next ``count`` events of an SSE response as ``{id, event, data}``."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(events) < count:
        line = (await asyncio.wait_for(resp.content.readline(), 3)).decode().rstrip("\n")
        if not line:
            if "event" in fields:
                events.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


async def test_events_carry_ids_and_a_reconnect_with_last_event_id_replays_what_it_missed(
    client,
) -> None:
    first = await client.get("/call/events")
    call = await make_call(client)
    await client.post("/call/hangup", json={"callID": call["callID"]})
    seen = await read_sse(first, 3)
    first.close()
    ids = [tuple(int(part) for part in e["id"].split("-")) for e in seen]  # boot-seq
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert seen[0]["event"] == "call.created" and seen[-1]["event"] == "call.ended"
    # Dropped after the first event: the reconnect gets the rest, in order, with the same ids.
    again = await client.get("/call/events", headers={"Last-Event-ID": seen[0]["id"]})
    replay = await read_sse(again, 2)
    again.close()
    assert [(e["id"], e["event"], e["data"]) for e in replay] == [
        (e["id"], e["event"], e["data"]) for e in seen[1:]
    ]


async def test_a_last_event_id_that_is_no_id_or_from_the_future_is_told_replay_unavailable(
    client, caplog
) -> None:
    """An id that is none (digits Python's ``isdigit`` takes and ``int`` does not, ``²``: it
    was an unhandled error), or one newer than any event this process logged (of a later boot,
    past its last event): where the client left off is unknown, and it is told so, as for an
    id too old: ``replay.unavailable`` with no id, then the stream ends. Before, the stream
    went on from now and the client believed it missed nothing."""
    caplog.set_level(logging.ERROR)
    first = await client.get("/call/events")
    call = await make_call(client)
    (created,) = await read_sse(first, 1)
    first.close()
    boot, seq = (int(part) for part in created["id"].split("-"))
    future = (f"{boot}-{seq + 1000}", f"{boot + 1}-0", "99999999999999-0")
    for last in ("%C2%B2-1", "1-%C2%B9", "x-y", "-", "1" * 50 + "-1", *future):
        resp = await client.get(f"/call/events?lastEventId={last}")
        assert resp.status == 200
        (told,) = await read_sse(resp, 1)
        rest = await asyncio.wait_for(resp.content.read(), 5)  # and the stream ends
        assert told["event"] == "replay.unavailable" and "id" not in told, (last, told)
        assert b"event:" not in rest, rest
        body = json.loads(told["data"])
        assert body["code"] == "replay_unavailable" and body["lastEventId"] == unquote(last)
    # An id it holds still resumes: the event after it.
    resp = await client.get("/call/events", headers={"Last-Event-ID": created["id"]})
    (after,) = await read_sse(resp, 1)
    resp.close()
    assert after["id"] == f"{boot}-{seq + 1}" and after["event"] != "replay.unavailable"
    await client.post("/call/hangup", json={"callID": call["callID"]})
    assert not caplog.records, caplog.text


async def test_offer_rules(client) -> None:
    call = await make_call(client)
    cid = call["callID"]
    for body, status in [
        ({"callID": cid}, 400),  # no sdp
        ({"callID": cid, "sdp": 42}, 400),
        ({"callID": cid, "type": "answer", "sdp": "v=0"}, 400),
        ({"callID": cid, "sdp": "garbage"}, 400),
        ({"callID": cid, "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"}, 400),
        ({"callID": cid, "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nx=garbage\r\n"}, 400),
        (
            {
                "callID": cid,
                "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
                "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n",
            },
            400,
        ),
    ]:
        resp = await client.post("/call/webrtc/offer", json=body)
        assert resp.status == status, (body, await resp.text())
        assert_error(await resp.json())
    # After failed offers the call has no session and nothing is left open.
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["transport"] is None
    media = client.app[MANAGER].find_runtime(cid)
    assert media is not None and media.participants.agent is None and not media.bus.users

    await client.post("/call/hangup", json={"callID": cid})
    rtc = RtcClient(client, cid)
    rtc.pc.addTrack(rtc.track)
    await rtc.pc.setLocalDescription(await rtc.pc.createOffer())
    resp = await client.post(
        "/call/webrtc/offer",
        json={"callID": cid, "type": "offer", "sdp": rtc.pc.localDescription.sdp},
    )
    assert resp.status == 409
    assert_error(await resp.json(), "invalid_call_state")
    await rtc.close()


async def test_reoffer_replaces_session_and_close_is_idempotent(client) -> None:
    call = await make_call(client)
    cid = call["callID"]
    first = RtcClient(client, cid, freq=440.0)
    await first.offer()
    await asyncio.wait_for(first.connected.wait(), 10)
    old_session = client.app[MANAGER].find_runtime(cid).participants.agent

    second = RtcClient(client, cid, freq=880.0)
    await second.offer()
    await asyncio.wait_for(second.connected.wait(), 10)
    media = client.app[MANAGER].find_runtime(cid)
    assert media.participants.agent is not old_session
    assert old_session.state == "closed" and old_session.pc.connectionState == "closed"
    assert len(old_session._tasks) == 0
    assert media.bus.users == {media.participants.agent.id}
    assert list(media.bus.conference.participants) == ["agent"]  # one listener, the new one

    await wait_state(client, cid, "active")
    await second.recorder.tone_arrives(880)
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    heard = second.recorder.since(t0)
    assert dominant_frequency(heard, second.recorder.rate) == pytest.approx(880, abs=6)

    for _ in range(2):
        resp = await client.post("/call/webrtc/close", json={"callID": cid})
        assert resp.status == 200
        assert await resp.json() == {"callID": cid, "closed": True}
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active"  # closing WebRTC leaves the WhatsApp call up
    assert snap["transport"] is None and snap["webrtc"] == {"state": "closed"}
    assert media.participants.agent is None and not media.bus.users
    assert not media.bus.conference.participants
    await first.close()
    await second.close()
    resp = await client.post("/call/hangup", json={"callID": cid})
    assert (await resp.json())["endReason"] == "hangup"
    resp = await client.post("/call/webrtc/close", json={"callID": cid})
    assert resp.status == 200


async def test_mute_sends_silence_to_whatsapp(client) -> None:
    call = await make_call(client)
    cid = call["callID"]
    rtc = RtcClient(client, cid, freq=440.0)
    await rtc.offer()
    await wait_state(client, cid, "active")
    sim_call = client.app[ENGINE].calls[client.app[MANAGER].get(cid).engine_call_id]

    def last_frames() -> np.ndarray:
        return np.concatenate(list(sim_call.heard)[-20:])

    def hears_tone() -> bool:
        if sim_call.frames_heard < 20:
            return False
        return abs(dominant_frequency(s16_to_f32(last_frames()), 16_000) - 440) <= 3

    await until(hears_tone, 10, "WhatsApp hears the browser's 440 Hz")

    resp = await client.post("/call/mute", json={"callID": cid, "muted": True})
    assert resp.status == 200 and (await resp.json())["muted"] is True
    n = sim_call.frames_heard
    # Frames keep flowing, as silence.
    await until(lambda: sim_call.frames_heard - n > 30, 10, "frames while muted")
    await until(lambda: not last_frames().any(), 5, "20 frames of digital silence")

    resp = await client.post("/call/mute", json={"callID": cid, "muted": False})
    assert (await resp.json())["muted"] is False
    await until(lambda: rms_dbfs(s16_to_f32(last_frames())) > -12, 5, "the tone again")
    resp = await client.post("/call/mute", json={"callID": cid, "muted": "yes"})
    assert resp.status == 400
    await rtc.close()


async def test_auth_required_on_every_call_route(make_client) -> None:
    client = await make_client(api_tokens=(TOKEN,))
    routes = [
        ("GET", "/call/status"),
        ("GET", "/call/abc"),
        ("GET", "/call/events"),
        ("GET", "/call/webrtc/config"),
        ("POST", "/call/make"),
        ("POST", "/call/answer"),
        ("POST", "/call/hangup"),
        ("POST", "/call/mute"),
        ("POST", "/call/webrtc/offer"),
        ("POST", "/call/webrtc/close"),
        ("POST", "/call/sim/incoming"),
    ]
    for method, path in routes:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"token": "wrong"}]:
            resp = await client.request(method, path, json={}, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert_error(await resp.json(), "unauthorized")
    # ?token= only on SSE/WebSocket routes.
    resp = await client.get(f"/call/status?token={TOKEN}")
    assert resp.status == 401
    resp = await client.get(f"/call/events?token={TOKEN}")
    assert resp.status == 200
    resp.close()
    # Both header forms work.
    call = await make_call(client, headers=AUTH)
    resp = await client.get(f"/call/{call['callID']}", headers={"token": TOKEN})
    assert resp.status == 200
    for path in ["/healthz", "/readyz"]:
        assert (await client.get(path)).status == 200


async def test_health_and_config(make_client) -> None:
    client = await make_client(stun_urls=("stun:stun.example.org:3478",), max_calls=1)
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await (await client.get("/readyz")).json()
    assert ready["ready"] is True and ready["engine"]["name"] == "sim"
    config = await (await client.get("/call/webrtc/config")).json()
    assert config == {
        "iceServers": [{"urls": ["stun:stun.example.org:3478"]}],
        "iceTransportPolicy": "all",
        "turn": {"enabled": False, "status": "disabled", "ttl": None},
    }
    await make_call(client)
    resp = await client.post("/call/make", json={"phone": "5511999999999"})
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert_error(await resp.json(), "at_capacity")
    resp = await client.get("/readyz")
    assert resp.status == 503 and "at capacity" in (await resp.json())["reasons"][0]


async def test_empty_stun_list_advertises_none(client) -> None:
    config = await (await client.get("/call/webrtc/config")).json()
    assert config["iceServers"] == []


async def test_hostile_bytes_never_500(client, make_client) -> None:
    resp = await client.post("/call/make", data=b"[" * 30_000)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_json")
    authed = await make_client(api_tokens=(TOKEN,))
    resp = await authed.get(
        "/call/status",
        headers={"token": "caf\udcc3".encode("utf-8", "surrogateescape").decode("latin-1")},
    )
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decompress_is_400(client, caplog, encoding) -> None:
    """A ``Content-Encoding`` whose body is not of it (aiohttp decompresses as it reads): a
    400 with the error body; it was a 500 and two tracebacks at ERROR, to any client. (An
    encoding aiohttp has no decoder for is refused by its parser, before any handler.)"""
    caplog.set_level(logging.ERROR)
    for path, content_type in (
        ("/call/make", "application/json"),
        ("/call/audio-assets", "multipart/form-data; boundary=x"),
    ):
        resp = await client.post(
            path,
            data=b'{"phone": "5521999999999"}',
            headers={"Content-Type": content_type, "Content-Encoding": encoding},
        )
        assert resp.status == 400, (path, await resp.text())
        assert_error(await resp.json(), "bad_encoding")
    assert not caplog.records, caplog.text


async def test_http_its_parser_refuses_is_said_once_per_client(client, caplog) -> None:
    """Malformed HTTP (a broken chunk) is answered 400 by aiohttp's parser, before any
    handler: said once per client address at WARNING, without a traceback (aiohttp logged a
    traceback at ERROR for each, from anyone on the internet)."""
    caplog.set_level(logging.INFO)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /call/make HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\nZZ\r\n'
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    said = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert said[0].exc_info is None and "chunk" in said[0].getMessage(), said[0].getMessage()


async def test_cors_headers_reach_streamed_responses(make_client) -> None:
    client = await make_client(cors_origins=("https://app.example",))
    resp = await client.get("/call/events", headers={"Origin": "https://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    resp.close()


async def test_large_json_bodies_are_read_whole(make_client) -> None:
    # A ~700 KB audioBase64 body arrives in many chunks; it must be read to its end.
    from ..support.audio_files import make

    client = await make_client()
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    import base64

    b64 = base64.b64encode(make("wav", 1000.0, 4.0)).decode()
    assert len(b64) > 500_000
    resp = await client.post("/call/play", json={"callID": call["callID"], "audioBase64": b64})
    assert resp.status == 201, await resp.text()
