"""``"format": "twilio"`` media forks: Twilio Media Streams as Twilio documents it, checked
field by field against a plain WebSocket server (pipecat's own ``TwilioFrameSerializer`` over
its WebSocket server transport is in test_pipecat.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import numpy as np
import pytest

from bridge.api.keys import ENGINE
from bridge.audio import tone
from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.engines.base import EngineEvent, EngineEventKind

from ..support.calls import wait_state
from ..support.spectrum import band_energy, dominant_frequency
from ..support.waits import until
from .test_streams import active_call, fork_server, sim_call


def press_on_whatsapp(client, digit: str) -> None:
    """The WhatsApp user presses a key: the engine reports it, as a real engine does."""
    engine = client.app[ENGINE]
    engine_call = next(iter(engine.calls.values()))
    engine.events.put_nowait(
        EngineEvent(EngineEventKind.DTMF, engine_call.id, data={"digit": digit, "durationMs": 90})
    )


async def test_twilio_fork_speaks_media_streams_as_documented(make_client, aiohttp_server) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server)
    call = await active_call(client)
    resp = await client.post(
        f"/call/{call['callID']}/streams",
        json={
            "url": url,
            "type": "oneway",
            "format": "twilio",
            "customParameters": {"from_number": "+5521999999999", "lang": "pt-BR"},
        },
    )
    assert resp.status == 201, await resp.text()
    stream_sid = (await resp.json())["streamId"]
    assert re.fullmatch(r"MZ[0-9a-f]{32}", stream_sid)

    def forked(event: str) -> list[dict]:
        return [m for m in fs.messages if m.get("event") == event]

    await until(lambda: len(forked("media")) >= 50, 10, "a second of media")
    press_on_whatsapp(client, "7")
    await until(lambda: forked("dtmf") and len(forked("media")) >= 75, 10, "the key press")
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await asyncio.wait_for(fs.closed.wait(), 3)

    connected, start, *rest = fs.messages
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    # Field names and their order as in Twilio's Media Streams docs.
    assert list(start) == ["event", "sequenceNumber", "start", "streamSid"]
    assert list(start["start"]) == [
        "accountSid",
        "streamSid",
        "callSid",
        "tracks",
        "customParameters",
        "mediaFormat",
    ]
    assert start["sequenceNumber"] == "1" and start["streamSid"] == stream_sid
    assert re.fullmatch(r"AC[0-9a-f]{32}", start["start"]["accountSid"])
    assert start["start"]["callSid"] == call["callID"]
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["customParameters"] == {"from_number": "+5521999999999", "lang": "pt-BR"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert [m["sequenceNumber"] for m in rest] == [str(i) for i in range(2, len(rest) + 2)]
    media = [m for m in rest if m["event"] == "media"]
    assert len(media) >= 60
    assert all(list(m) == ["event", "sequenceNumber", "media", "streamSid"] for m in media)
    assert all(list(m["media"]) == ["track", "chunk", "timestamp", "payload"] for m in media)
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    # Each 20 ms chunk its own timestamp: milliseconds of media since the stream started.
    assert np.diff(stamps).tolist() == [20] * (len(stamps) - 1)
    assert 0 <= stamps[0] < 1000
    payloads = [base64.b64decode(m["media"]["payload"]) for m in media]
    assert {len(p) for p in payloads} == {160}  # 20 ms of 8 kHz µ-law
    assert dominant_frequency(ulaw_decode(b"".join(payloads[-40:])), 8000) == pytest.approx(
        660, abs=4
    )
    dtmf = [m for m in rest if m["event"] == "dtmf"]
    assert dtmf == [
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": dtmf[0]["sequenceNumber"],
            "dtmf": {"track": "inbound_track", "digit": "7"},
        }
    ]
    stop = rest[-1]
    assert stop == {
        "event": "stop",
        "sequenceNumber": str(len(rest) + 1),
        "stop": {"accountSid": start["start"]["accountSid"], "callSid": call["callID"]},
        "streamSid": stream_sid,
    }


async def test_twilio_twoway_plays_marks_and_clears(make_client, aiohttp_server) -> None:
    # What an agent sends Twilio: µ-law media in any chunking, a mark behind it.
    clip = ulaw_encode(tone(1000, 8000, 8000, 0.4))  # 1 s
    reply = [
        {"event": "media", "streamSid": "MZx", "media": {"payload": base64.b64encode(c).decode()}}
        for c in (clip[i : i + 1000] for i in range(0, len(clip), 1000))
    ]
    reply.append({"event": "mark", "streamSid": "MZx", "mark": {"name": "said"}})
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server, reply)
    call = await active_call(client)
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "type": "twoway", "format": "twilio"}
    )
    assert resp.status == 201
    sc = sim_call(client)
    n0 = sc.frames_heard
    await until(
        lambda: any(m["event"] == "mark" for m in fs.messages), 10.0, "the mark", every=0.02
    )
    played = list(sc.heard)[-(sc.frames_heard - n0) :]
    loud = [f for f in played if np.abs(f).max() > 1000]
    # The mark came back once the whole second had played (50 frames at 16 kHz) and not before.
    assert len(loud) >= 49
    assert band_energy(np.concatenate(loud), 16_000, 1000) > 0.9
    mark = next(m for m in fs.messages if m["event"] == "mark")
    assert list(mark) == ["event", "sequenceNumber", "streamSid", "mark"]
    assert mark["mark"] == {"name": "said"}
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await asyncio.wait_for(fs.closed.wait(), 3)
    assert fs.messages[-1]["event"] == "stop"


async def test_an_empty_media_payload_is_skipped_and_the_fork_goes_on(
    make_client, aiohttp_server
) -> None:
    """``"payload": ""`` (an agent flushing an empty buffer): the µ-law resampler raised
    FFmpeg's MemoryError on it, which ended the fork's reader: nothing it sent after played."""
    clip = ulaw_encode(tone(1000, 4000, 8000, 0.4))  # 0.5 s
    reply = [
        {"event": "media", "streamSid": "MZx", "media": {"payload": ""}},
        {
            "event": "media",
            "streamSid": "MZx",
            "media": {"payload": base64.b64encode(clip).decode()},
        },
        {"event": "mark", "streamSid": "MZx", "mark": {"name": "said"}},
    ]
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server, reply)
    call = await active_call(client)
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "type": "twoway", "format": "twilio"}
    )
    assert resp.status == 201
    sc = sim_call(client)
    n0 = sc.frames_heard
    await until(lambda: any(m["event"] == "mark" for m in fs.messages), 5.0, "the mark", every=0.02)
    played = list(sc.heard)[-(sc.frames_heard - n0) :]
    assert sum(np.abs(f).max() > 1000 for f in played) >= 24
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await asyncio.wait_for(fs.closed.wait(), 3)
    assert fs.messages[-1]["event"] == "stop"


async def test_marks_over_the_bound_are_said_once_not_lost_silently(
    make_client, aiohttp_server, caplog
) -> None:
    """An app that sends more marks than may wait behind its audio (MAX_MARKS): those within
    the bound come back as their audio plays; those over it are dropped, said once at WARNING
    and counted at the fork's end (they vanished without a word: the protocol has no refusal
    to send)."""
    from bridge.attachments.queued_source import MAX_MARKS

    caplog.set_level(logging.WARNING, logger="bridge.attachments.forks")
    clip = ulaw_encode(tone(1000, 1600, 8000, 0.4))  # 0.2 s
    media = {"event": "media", "streamSid": "MZx", "media": {"payload": ""}}
    media["media"]["payload"] = base64.b64encode(clip).decode()
    marks = [{"event": "mark", "streamSid": "MZx", "mark": {"name": f"m{i}"}} for i in range(3)]
    over = [{"event": "mark", "streamSid": "MZx", "mark": {"name": "x"}}] * (MAX_MARKS - 3 + 5)
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server, [media, *marks, *over])
    call = await active_call(client)
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "type": "twoway", "format": "twilio"}
    )
    assert resp.status == 201

    def answered() -> list[str]:
        return [m["mark"]["name"] for m in fs.messages if m["event"] == "mark"]

    # (Answered all at once as the clip ends, a thousand of them outrun the fork's bounded
    # queue to the app: the first are what this checks.)
    await until(lambda: answered()[:3] == ["m0", "m1", "m2"], 5.0, "the first marks answered")
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await until(lambda: any("marks over the bound" in r.getMessage() for r in caplog.records), 3)
    said = [r.getMessage() for r in caplog.records if "mark" in r.getMessage()]
    assert len(said) == 2 and "more marks than may wait" in said[0], said
    assert "dropped 5 marks over the bound" in said[1], said


async def test_twilio_fork_request_is_checked(make_client) -> None:
    client = await make_client(fork_url_allow=("127.0.0.1",))
    call = await active_call(client)
    for body in (
        {"format": "twilio", "customParameters": ["a"]},
        {"format": "twilio", "customParameters": {"a": 1}},
        {"format": "pcmu", "customParameters": {"a": "b"}},
        {"format": "opus"},
    ):
        resp = await client.post(
            f"/call/{call['callID']}/streams", json={"url": "ws://127.0.0.1:9/x", **body}
        )
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == "bad_request"
    await wait_state(client, call["callID"], "active")
