"""Speech from a real Chromium through a real bridge process, scored with PESQ-WB next to an
ideal receiver fed the very same frames (``make quality``'s Chromium rows).

The quality bench's other senders are aiortc peers encoding with libopus directly
(``bench/quality_paths.py``); a browser's sender is WebRTC's own: its Opus settings, its
pacing, its packets. Here Debian's Chromium (driven by Playwright, as the interop tests do)
speaks the bench's Harvard sentences from its fake microphone into a call on a PCM engine
(the ZuckZapGo stand-in of ``tests/fakes``, which keeps the 16 kHz PCM the bridge hands it),
through a UDP hop of this process on loopback that applies the seeded profile to Chromium's
RTP (``Relay``: SRTP leaves the RTP header in clear, RFC 3711 §3.1, so the hop knows each
packet's timestamp without its keys) and forwards everything else untouched.

**The ideal receiver** is fed Chromium's own encoded frames, taken on the page before they
are packetised (WebRTC Encoded Transform, ``createEncodedStreams``), less those whose packets
the hop dropped, matched by RTP timestamp: every frame in order whatever its lateness, FEC
from the next frame, libopus' concealment for the rest (``quality_paths.ideal_decode``).
RED is not negotiated on these rows (``BRIDGE_OPUS_RED=false``): the hop cannot see which
copies a RED packet carries, so the ideal would not be fed what the bridge is.

Chromium's capture runs without its echo canceller, noise suppressor and gain control (the
score is the path's, not the voice processing's); the speech is found in what each heard by
cross-correlation.

    .venv/bin/python -m bench.quality --chromium [--profiles clean,loss3,jitter]

(``bench/quality.py``'s default run has these rows too). A benchmark, not a test: nothing
asserts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.quality_paths import (
    PROFILES,
    RATE,
    Bridge,
    Wire,
    _place_call,
    _receiver_delay_ms,
    _receiver_stats,
    ideal_decode,
    pcm_engine_bridge,
    rtp_header,
)
from bench.scoring import pesq_wb
from bridge.audio.resample import Resampler

LEAD_S, TAIL_S = 3.0, 30.0
"""Silence around the speech in Chromium's microphone file, which starts with the capture and
loops: the call is up well within the lead, and it ends long before the speech comes again,
so the bridge and the ideal receiver each hear it once, the same once."""
FRAME_TS = 960
"""RTP time of one 20 ms Opus frame (48 kHz clock)."""
DEFAULT_PROFILES = ("clean", "loss3", "loss10", "bursts", "jitter", "jitter+loss3")

SPEAK_JS = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: {
    echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  window.benchCaptured = performance.now();
  const pc = new RTCPeerConnection({encodedInsertableStreams: true});
  window.benchFrames = [];
  const sender = pc.addTrack(stream.getAudioTracks()[0], stream);
  const sent = sender.createEncodedStreams();
  sent.readable.pipeThrough(new TransformStream({transform(frame, out) {
    const bytes = new Uint8Array(frame.data);
    let text = '';
    for (const b of bytes) text += String.fromCharCode(b);
    window.benchFrames.push([frame.timestamp, btoa(text)]);
    out.enqueue(frame);
  }})).pipeTo(sent.writable);
  pc.ontrack = (e) => {  // every stream piped, or its media stops (encodedInsertableStreams)
    const got = e.receiver.createEncodedStreams();
    got.readable.pipeTo(got.writable);
  };
  window.benchPc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete')
    await new Promise((done) => pc.addEventListener('icegatheringstatechange',
      () => pc.iceGatheringState === 'complete' && done()));
  return pc.localDescription.sdp;
}"""


CONNECTED_JS = """async () => {
  const pc = window.benchPc;
  while (pc.connectionState !== 'connected') {
    if (pc.connectionState === 'failed') throw new Error('the peer connection failed');
    await new Promise((wait) => setTimeout(wait, 20));
  }
  return (performance.now() - window.benchCaptured) / 1000;
}"""
"""Seconds from the microphone's capture start (its file's start) to the call connected."""


class Relay:
    """The UDP hop between Chromium and the bridge (module docstring): two sockets on
    127.0.0.1, one Chromium is told is the bridge, one the bridge is told is Chromium."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.stamps: list[int] = []
        """RTP timestamps of Chromium's packets, in the order they came."""
        self.arrivals: list[float] = []
        """When each came (``time.monotonic()``): how steadily Chromium and the host sent."""
        self.lost: set[int] = set()
        """RTP timestamps of Chromium's packets the profile dropped."""
        self.rtp = 0
        self.browser: tuple[str, int] | None = None
        self.bridge: tuple[str, int] | None = None
        self._to_browser: asyncio.DatagramTransport | None = None
        self._to_bridge: asyncio.DatagramTransport | None = None
        self._timers: list[asyncio.TimerHandle] = []

    async def start(self) -> tuple[int, int]:
        """The two ports: the one facing Chromium, the one facing the bridge."""
        loop = asyncio.get_running_loop()
        relay = self

        class FromBrowser(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                relay._from_browser(data)

        class FromBridge(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if relay._to_browser is not None and relay.browser is not None:
                    relay._to_browser.sendto(data, relay.browser)

        self._to_browser, _ = await loop.create_datagram_endpoint(
            FromBrowser, local_addr=("127.0.0.1", 0)
        )
        self._to_bridge, _ = await loop.create_datagram_endpoint(
            FromBridge, local_addr=("127.0.0.1", 0)
        )
        return (
            self._to_browser.get_extra_info("sockname")[1],
            self._to_bridge.get_extra_info("sockname")[1],
        )

    def _from_browser(self, data: bytes) -> None:
        out, to = self._to_bridge, self.bridge
        if out is None or to is None:
            return
        header = rtp_header(data)  # RTP, not RTCP, STUN or DTLS: its clear header's time
        if header is None:
            out.sendto(data, to)
            return
        self.rtp += 1
        stamp = header[1]
        self.stamps.append(stamp)
        self.arrivals.append(time.monotonic())
        fate = self.wire.fate()
        if fate is None:
            self.lost.add(stamp)
        elif fate > 0:
            self._timers.append(asyncio.get_running_loop().call_later(fate, out.sendto, data, to))
        else:
            out.sendto(data, to)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for transport in (self._to_browser, self._to_bridge):
            if transport is not None:
                transport.close()


def arrival_jitter_ms(relay: Relay) -> dict[str, float]:
    """How late Chromium's packets came to the hop against their RTP time (the earliest as the
    reference, RFC 3550's transit): p50, p99 and max, ms, before any profile."""
    if len(relay.stamps) < 2:
        return {}
    rtp = np.unwrap(np.array(relay.stamps, np.float64), period=2**32) / 48_000
    transit = np.array(relay.arrivals) - rtp
    late = (transit - transit.min()) * 1000
    return {
        "p50": round(float(np.percentile(late, 50)), 1),
        "p99": round(float(np.percentile(late, 99)), 1),
        "max": round(float(late.max()), 1),
    }


def through(sdp: str, port: int) -> tuple[str, tuple[str, int]]:
    """``sdp`` with its one UDP host candidate on 127.0.0.1 moved to ``port`` (every other
    candidate dropped, as the interop tests keep only loopback), and the address it had."""
    kept, was = [], None
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split()
            if parts[2].lower() != "udp" or parts[4] != "127.0.0.1" or was is not None:
                continue
            was = (parts[4], int(parts[5]))
            parts[5] = str(port)
            line = " ".join(parts)
        elif line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
    if was is None:
        raise RuntimeError("no UDP candidate on 127.0.0.1")
    return "\r\n".join(kept), was


def mic_file(path: Path, speech: np.ndarray) -> str:
    """The speech, between :data:`LEAD_S` and :data:`TAIL_S` of silence, at 48 kHz for
    Chromium's fake microphone."""
    from tests.support.chromium import mic_wav

    lead = np.zeros(int(LEAD_S * RATE), np.int16)
    tail = np.zeros(int(TAIL_S * RATE), np.int16)
    up = Resampler(48_000).resample_array(np.concatenate([lead, speech, tail]), RATE)
    return mic_wav(path, up)


def ideal_frames(frames: list[tuple[int, bytes]], relay: Relay) -> dict[int, bytes]:
    """What the ideal receiver is fed, by frame index: Chromium's frames whose packets got
    through the hop. The page's timestamps and the packets' differ by the sender's random
    offset, found as the one that puts the most packets on a frame; a frame the page made
    before its packets flowed (the transport not up yet) reached nobody and is left out."""
    if not frames or not relay.stamps:
        return {}
    stamps = {ts for ts, _ in frames}
    first_sent = relay.stamps[0]
    offset = max(
        ((first_sent - ts) & 0xFFFFFFFF for ts, _ in frames[:500]),
        key=lambda o: sum(((h - o) & 0xFFFFFFFF) in stamps for h in relay.stamps[:200]),
    )
    through = {(h - offset) & 0xFFFFFFFF for h in relay.stamps if h not in relay.lost}
    first = frames[0][0]
    return {
        ((ts - first) & 0xFFFFFFFF) // FRAME_TS: payload for ts, payload in frames if ts in through
    }


async def chromium_call(
    speech: np.ndarray, profile_name: str, seed: int, bridge: Bridge, engine: Any, wav: str
) -> dict[str, Any]:
    """One call from Chromium under the profile: the bridge's and the ideal's PESQ-WB."""
    from tests.support.chromium import chromium_hearing
    from tests.support.loops import LoopLag

    relay = Relay(Wire(PROFILES[profile_name], seed))
    browser_side, bridge_side = await relay.start()
    until_spoken = LEAD_S + speech.size / RATE + 2.0
    try:
        async with chromium_hearing(wav) as chromium, aiohttp.ClientSession() as http:
            page = await chromium.new_page()
            await page.goto(f"{bridge.base}/healthz")  # a secure context (127.0.0.1)
            call_id = await _place_call(http, bridge.base)
            offer, relay.browser = through(await page.evaluate(SPEAK_JS), bridge_side)
            async with http.post(
                f"{bridge.base}/call/webrtc/offer",
                json={"callID": call_id, "type": "offer", "sdp": offer},
            ) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"offer refused: {body}")
            answer, relay.bridge = through(body["sdp"], browser_side)
            await page.evaluate(
                "(sdp) => window.benchPc.setRemoteDescription({type: 'answer', sdp})", answer
            )
            setup_s = await page.evaluate(CONNECTED_JS)
            if setup_s > LEAD_S:
                raise RuntimeError(f"the call took {setup_s:.1f} s to connect: speech missed")
            fake = list(engine.calls.values())[-1]
            fake.received.clear()
            cpu0, t0 = bridge.cpu_seconds(), time.monotonic()
            async with LoopLag() as lag:
                await asyncio.sleep(until_spoken)
            cpu = bridge.cpu_seconds() - cpu0
            heard = fake.heard()
            raw = await page.evaluate("window.benchFrames")
            async with http.get(f"{bridge.base}/call/{call_id}/stats") as r:
                stats = await r.json()
            async with http.post(f"{bridge.base}/call/hangup", json={"callID": call_id}):
                pass
            await page.close()
    finally:
        relay.close()
    frames = [(int(ts), base64.b64decode(b64)) for ts, b64 in raw]
    fed = ideal_frames(frames, relay)
    opus_pt = re.search(r"a=rtpmap:(\d+) opus/", answer)
    answer_opus = opus_pt and re.search(rf"a=fmtp:{opus_pt.group(1)} ([^\r\n]*)", answer)
    return {
        "bridge": pesq_wb(speech, heard),
        "ideal": pesq_wb(speech, ideal_decode(fed)),
        "ideal_plc_only": pesq_wb(speech, ideal_decode(fed, fec=False)),
        "frames_matched": len(fed),
        "setup_s": round(setup_s, 2),
        "hop_loop_worst_ms": round(lag.worst * 1000, 1),
        "packets": relay.rtp,
        "arrival_jitter_ms": arrival_jitter_ms(relay),
        "packets_lost": len(relay.lost),
        "frame_bytes_mean": round(float(np.mean([len(p) for _, p in frames])), 1),
        "receiver_delay_ms": _receiver_delay_ms(stats),
        "receiver": _receiver_stats(stats),
        "bridge_cpu_percent": round(100 * cpu / (time.monotonic() - t0), 2),
        "opus_fmtp_answered": answer_opus.group(1) if answer_opus else None,
    }


async def chromium_rows(
    speech: np.ndarray, profiles: list[str], *, seed: int = 1, log: Any = print
) -> dict[str, Any]:
    """Every profile, one call each, on one PCM-engine bridge with RED off (module docstring)."""
    import tempfile

    out: dict[str, Any] = {}
    async with pcm_engine_bridge(BRIDGE_OPUS_RED="false") as (bridge, engine):
        with tempfile.TemporaryDirectory(prefix="chromium-mic-") as tmp:
            wav = mic_file(Path(tmp) / "speech.wav", speech)
            for i, name in enumerate(profiles):
                out[name] = await chromium_call(speech, name, seed + i, bridge, engine, wav)
                log(f"  chromium {name}: {out[name]}")
    return out


def chromium_table(rows: dict[str, Any]) -> str:
    """Markdown: one row per profile, the bridge's score next to the ideal receiver's."""
    out = [
        "| network (Chromium's packets) | Chromium → engine: bridge | ideal receiver "
        "| ideal, PLC only | lost | receiver delay ms | late packets discarded | bridge CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        rx = r.get("receiver") or {}
        out.append(
            f"| {name} | {r['bridge']:.2f} | {r['ideal']:.2f} | {r['ideal_plc_only']:.2f} "
            f"| {r['packets_lost']}/{r['packets']} | {r['receiver_delay_ms']} "
            f"| {rx.get('packetsDiscarded', '-')} | {r['bridge_cpu_percent']:.1f} % |"
        )
    return "\n".join(out)
