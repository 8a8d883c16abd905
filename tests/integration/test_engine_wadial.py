"""The WADial leg against a fake engine written from its spec, over loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from bridge.api.keys import ENGINE
from bridge.audio import rms_dbfs

from ..support.calls import listed_calls, wait_state, webrtc_call
from ..support.spectrum import dominant_frequency
from ..support.waits import until


async def test_outbound_float32_audio_both_ways(wclient, wadial) -> None:
    client = await wclient()
    _call, rtc = await webrtc_call(client)
    assert ("POST", "/api/v1/sessions/s1/calls", {"to": "5521999999999@s.whatsapp.net"}) in (
        wadial.requests
    )
    await rtc.recorder.tone_arrives(600)
    t0 = time.monotonic()
    await asyncio.sleep(1.5)
    heard = rtc.recorder.since(t0)
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(600, abs=5)
    assert rms_dbfs(heard / 32768) == pytest.approx(-11.0, abs=2.0)
    engine_call = next(iter(wadial.calls.values()))
    assert {len(f) % 4 for f in engine_call.received} == {0}
    pcm = wadial.heard_f32(engine_call.id)[-16_000:]
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(-9.0, abs=1.5)
    assert abs(pcm).max() <= 1.0
    await rtc.close()


async def test_ended_frame_ends_call_at_once(wclient, wadial) -> None:
    client = await wclient(engine_poll_interval=30.0)
    call, rtc = await webrtc_call(client)
    engine_id = next(iter(wadial.calls))
    await asyncio.sleep(0.3)
    await wadial.end_remote(engine_id)
    ended = await wait_state(client, call["callID"], "ended", timeout=1.0)
    assert ended["endReason"] == "remote_hangup"
    await rtc.close()


async def test_inbound_answer_and_hangup_use_guessed_routes(wclient, wadial) -> None:
    client = await wclient()
    engine_id = wadial.ring_inbound("15550001111")
    calls = await until(lambda: listed_calls(client), 5, "the ringing call listed")
    assert calls[0]["state"] == "ringing"
    await client.post("/call/answer", json={"callID": calls[0]["callID"]})
    assert wadial.calls[engine_id].answered
    await client.post("/call/hangup", json={"callID": calls[0]["callID"]})
    assert ("POST", f"/api/v1/sessions/s1/calls/{engine_id}/hangup", None) in wadial.requests


async def test_backpressure_watermarks_throttle_uplink(wclient, wadial) -> None:
    client = await wclient()
    wadial.text_frames.append(
        json.dumps(
            {"type": "buffer", "bufferedMs": 900, "lowWatermarkMs": 200, "highWatermarkMs": 800}
        )
    )
    _call, rtc = await webrtc_call(client)
    await asyncio.sleep(1.0)
    engine = client.app[ENGINE]
    engine_call = next(iter(wadial.calls.values()))
    assert engine.stats.uplink_dropped > 20  # above the high watermark: nothing sent
    assert len(engine_call.received) == 0
    await wadial.broadcast(
        engine_call,
        {"type": "buffer", "bufferedMs": 100, "lowWatermarkMs": 200, "highWatermarkMs": 800},
    )
    await asyncio.sleep(0.8)
    assert len(engine_call.received) > 20  # below the low watermark: flowing again
    await rtc.close()


async def test_garbage_text_and_bad_frames_are_counted(wclient, wadial) -> None:
    client = await wclient()
    wadial.text_frames += ["{not json", json.dumps({"type": "error", "message": "bad frame"})]
    call, rtc = await webrtc_call(client)
    engine_call = next(iter(wadial.calls.values()))
    await asyncio.sleep(0.3)
    for ws in engine_call.sockets:
        await ws.send_bytes(b"\x00\x01\x02")
    await asyncio.sleep(1.0)
    stats = client.app[ENGINE].stats
    assert stats.bad_messages >= 2 and stats.bad_frames == 1
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    assert dominant_frequency(rtc.recorder.since(t0), rtc.recorder.rate) == pytest.approx(
        600, abs=5
    )
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active"
    await rtc.close()


async def test_a_text_frame_nested_too_deeply_is_counted_and_the_call_goes_on(
    wclient, wadial
) -> None:
    """json.loads raises RecursionError (no ValueError) on it: it once escaped the socket's
    reader and took the call's media down."""
    client = await wclient()
    wadial.text_frames.append("[" * 100_000 + "]" * 100_000)
    call, rtc = await webrtc_call(client)
    await until(lambda: client.app[ENGINE].stats.bad_messages >= 1, 5, "the frame counted")
    await rtc.recorder.tone_arrives(600)
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active"
    assert next(iter(wadial.calls.values())).connects == 1
    await rtc.close()


async def test_bad_frames_and_garbage_text_in_a_stream_are_said_once_each(
    wclient, wadial, caplog
) -> None:
    """An engine that sends them sends them a frame: each was a WARNING line, 50 a second."""
    client = await wclient()
    call, rtc = await webrtc_call(client)
    engine_call = next(iter(wadial.calls.values()))
    await rtc.recorder.tone_arrives(600)
    with caplog.at_level(logging.WARNING, logger="bridge.engines"):
        for ws in engine_call.sockets:
            for _ in range(5):
                await ws.send_bytes(b"\x00\x01\x02")
                await ws.send_str("{not json")
                await ws.send_str(json.dumps({"type": "error", "message": "feed failed"}))
        stats = client.app[ENGINE].stats
        await until(lambda: stats.bad_frames == 5 and stats.bad_messages >= 10, 5, "all counted")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("not whole" in m for m in lines) == 1, lines
    assert sum("unparseable" in m for m in lines) == 1, lines
    assert sum("feed failed" in m for m in lines) == 1, lines
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["state"] == "active"
    await rtc.close()


async def test_ready_with_wrong_format_is_refused(wclient, wadial) -> None:
    client = await wclient()
    wadial.ready = {"type": "ready", "encoding": "s16le", "sampleRate": 8000, "channels": 1}
    call, rtc = await webrtc_call(client)
    ended = await wait_state(client, call["callID"], "ended", timeout=5)
    assert ended["endReason"] == "failed"
    assert next(iter(wadial.calls.values())).connects == 1  # a format error is not retried
    await rtc.close()


@pytest.mark.parametrize("envelope", ["bare", "calls", "data", "data.calls"])
async def test_the_call_list_is_read_in_any_envelope(wclient, wadial, envelope) -> None:
    """WADial's list route and its answer's shape are a guess (docs/engines/wadial.md): a bare
    list, ``{"calls": …}``, ``{"data": …}`` and ``{"data": {"calls": …}}`` (the envelope a
    dial's answer is read in) are each the list, the engine up and the call going on."""
    client = await wclient(engine_poll_interval=0.05)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    engine = client.app[ENGINE]
    listed = [wadial.snap(c) for c in wadial.calls.values()]
    shapes = {
        "bare": listed,
        "calls": {"calls": listed},
        "data": {"data": listed},
        "data.calls": {"data": {"calls": listed}},
    }
    wadial.list_answer = json.dumps(shapes[envelope]).encode()
    asked = wadial.lists_asked
    await until(lambda: wadial.lists_asked >= asked + 3, 5, "three polls of the list")
    assert engine.up, envelope
    assert (await (await client.get(f"/call/{call['callID']}")).json())["state"] == "active"


@pytest.mark.parametrize("answer", [b"<html>maintenance</html>", b'{"calls": "none"}', b"7"])
async def test_a_call_list_that_cannot_be_read_ends_no_call(wclient, wadial, answer) -> None:
    """A 200 whose body is no call list: the engine is down for the bridge, and its calls go
    on (they were ended as gone from the list)."""
    client = await wclient(engine_poll_interval=0.05)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    engine = client.app[ENGINE]
    for tracked in engine._calls._unlisted_since:  # past the grace a just-dialled call has
        engine._calls._unlisted_since[tracked] -= 60.0
    wadial.list_answer = answer
    await until(lambda: not engine.up, 5, "the engine down")
    await asyncio.sleep(0.5)  # ten polls
    assert (await (await client.get(f"/call/{call['callID']}")).json())["state"] == "active"
    wadial.list_answer = None
    await until(lambda: engine.up, 5, "the engine up again")
    assert (await (await client.get(f"/call/{call['callID']}")).json())["state"] == "active"
