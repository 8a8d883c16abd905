"""The Cloud API Calling engine against a fake of Meta (Graph API, signed webhooks, and a
real aiortc peer on loopback for the WhatsApp user's media), with a browser agent (aiortc)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bridge.audio import dominant_frequency, rms_dbfs

from .conftest import wait_state
from .fakes.cloudapi import FakeMeta
from .rtc_client import RtcClient

TONE_DBFS = -9.0  # both sides send a tone at amplitude 0.5 (RMS -9 dBFS)


@pytest.fixture
async def meta():
    server = FakeMeta()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def until(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return value


async def live_calls(client) -> list[dict]:
    return (await (await client.get("/call/status")).json())["calls"]


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
    client = await cclient()
    mcall = await meta.user_calls(client, "15550001111")
    await until(lambda: mcall.pre_accept_at, 1.0, "pre_accept within 1 s")
    assert mcall.pre_accept_at - mcall.offered_at < 1.0
    assert_meta_sdp(mcall.pre_accept_sdp, answer=True)
    calls = await until(lambda: None, 0) if False else await live_calls(client)
    assert len(calls) == 1
    call = calls[0]
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

    await asyncio.sleep(2.0)
    assert_tone(heard(rtc.recorder), rtc.recorder.rate, 660, "agent hears the WhatsApp user")
    assert_tone(
        heard(mcall.peer.recorder), mcall.peer.recorder.rate, 440, "WhatsApp user hears the agent"
    )

    stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
    leg = stats["leg"]["webrtc"]
    assert leg["state"] == "connected" and leg["framesReceived"] > 50 and leg["framesSent"] > 50

    resp = await meta.post(client, meta.envelope(meta.terminate_event(mcall, duration=3)))
    assert resp.status == 200
    ended = await wait_state(client, call["callID"], "ended", timeout=3)
    assert ended["endReason"] == "remote_hangup"
    await rtc.close()
