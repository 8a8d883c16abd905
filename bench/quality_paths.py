"""Speech through real bridge processes under seeded network profiles, scored with PESQ-WB next
to an ideal receiver fed the very same packets.

One call per profile, both directions at once:

* **browser → bridge → PCM engine**: an aiortc peer sends the speech as a browser does (Opus
  32 kbit/s, in-band FEC planned for 10 % loss, 20 ms); the profile is applied on the wire,
  after SRTP, to what it sends; the engine (the ZuckZapGo stand-in from ``tests/fakes``) keeps
  the 16 kHz PCM the bridge hands it. The *ideal receiver* decodes the packets that got through,
  offline: every packet in order whatever its lateness, FEC from the next packet, libopus
  concealment for the rest (and, to show what FEC is worth, concealment only).
* **PCM engine → bridge → browser**: the engine plays the same speech into the call; the bridge
  encodes it once; the browser's packets (after the profile, applied where they arrive) are
  decoded by the same ideal receiver, standing in for a browser's NetEq.
* **browser → sim echo → browser** (``echo``): the simulator echoes the call, so the speech goes
  through the bridge's receiver and its encoder; scored at the browser as above.

Sender clock drift (``drift±300``) runs the browser's 20 ms clock and the engine's sample clock
fast or slow for a minute.
Imported by ``bench/quality.py`` (``make quality``) and by the quality tests.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.aiortc_track import AiortcTrack, WorkerPacer
from bench.scoring import pesq_wb
from bench.speech import frames
from bridge.audio.opus import OpusDecoder, has_fec
from bridge.media.clock import WorkerClock
from bridge.rtc.browser_sdp import opus_parameters
from bridge.rtc.red import split_red

ROOT = Path(__file__).resolve().parent.parent
RATE = 16_000
FRAME = 320
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Profile:
    """A network, applied to every RTP packet of one direction."""

    name: str
    loss: float = 0.0
    """Packets lost (independently, or in Gilbert bursts when ``burst`` is set)."""
    burst: float = 0.0
    """Mean length of a loss burst, in packets (Gilbert model: a bad state that loses all)."""
    jitter: float = 0.0
    """Each packet delayed by a uniform 0..``jitter`` seconds (so packets reorder)."""
    drift_ppm: float = 0.0
    """The sender's clock runs this fast (+) or slow (-)."""
    repeats: int = 1
    """How many times the speech is sent (drift needs a minute)."""
    stall: float = 0.0
    """The sender stalls this long at the end of every :attr:`stall_every` seconds (a Wi-Fi or
    mobile hiccup): the packets of the stall are held, then released at once with the next."""
    stall_every: float = 5.0
    stall_max: float = 0.0
    """Irregular stalls instead (above :attr:`stall`): each stall lasts a seeded
    :attr:`stall`..``stall_max`` seconds and the next begins a seeded :attr:`stall_gap` after
    its release, the first one 2 s in (a sender, or a process that hosts both ends, stalling
    again and again: GC, a loaded host)."""
    stall_gap: tuple[float, float] = (1.0, 6.0)

    def stalls(self, seconds: float, seed: int) -> list[tuple[float, float]]:
        """(start, release) of each stall within ``seconds`` (sender's seconds), seeded apart
        from the packets' other fates."""
        if not self.stall:
            return []
        if not self.stall_max:
            every = self.stall_every
            return [(k * every - self.stall, k * every) for k in range(1, int(seconds / every) + 1)]
        rng, out, start = random.Random(f"stalls {seed}"), [], 2.0
        while start < seconds:
            release = start + rng.uniform(self.stall, self.stall_max)
            out.append((start, release))
            start = release + rng.uniform(*self.stall_gap)
        return out


PROFILES = {
    p.name: p
    for p in (
        Profile("clean"),
        Profile("loss3", loss=0.03),
        Profile("loss10", loss=0.10),
        Profile("loss20", loss=0.20),
        Profile("bursts", loss=0.05, burst=2.5),
        Profile("jitter", jitter=0.04),
        Profile("jitter+loss3", loss=0.03, jitter=0.04),
        Profile("stall", stall=0.4),
        Profile("stalls", stall=0.15, stall_max=0.4),
        Profile("drift+300", drift_ppm=300, repeats=4),
        Profile("drift-300", drift_ppm=-300, repeats=4),
    )
}


class Wire:
    """The fate of each packet on a seeded network: ``None`` (lost) or its extra delay."""

    def __init__(self, profile: Profile, seed: int, seconds: float = 600.0) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.bad = False
        self.sent = 0
        """Packets given a fate: the next is sent at ``sent`` × 20 ms (a stall's clock)."""
        self.stalls = profile.stalls(seconds, seed)
        """(start, release) of the sender's stalls (:meth:`Profile.stalls`)."""

    def fate(self) -> float | None:
        p, rng = self.profile, self.rng
        sent, self.sent = self.sent * 0.02, self.sent + 1
        if p.stall:
            for start, release in self.stalls:
                if start + 1e-9 < sent < release - 1e-9:
                    return release - sent  # held until the release
            return 0.0
        if p.burst:
            leave = 1 / p.burst
            enter = p.loss * leave / (1 - p.loss)  # stationary share of the bad state = loss
            self.bad = rng.random() >= leave if self.bad else rng.random() < enter
            if self.bad:
                return None
        elif p.loss and rng.random() < p.loss:
            return None
        return rng.uniform(0.0, p.jitter) if p.jitter else 0.0


def rtp_header(data: bytes) -> tuple[int, int, int] | None:
    """(sequence number, timestamp, header length) of an RTP packet (RFC 3550 §5.1), SRTP or
    not (its header is in the clear); ``None`` for RTCP (RFC 5761 §4) and anything else."""
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
        return None
    n = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= n + 4:
        n += 4 + 4 * struct.unpack_from("!H", data, n + 2)[0]
    seq, ts = struct.unpack_from("!HI", data, 2)
    return seq, ts, n


class Unwrap:
    """16-bit sequence numbers extended, in the order a sender produces them."""

    def __init__(self) -> None:
        self.last: int | None = None

    def peek(self, seq: int) -> int:
        """``seq`` extended, the state unchanged."""
        if self.last is None:
            return seq
        delta = (seq - self.last) % 65536
        return self.last + (delta - 65536 if delta >= 32768 else delta)

    def __call__(self, seq: int) -> int:
        ext = self.peek(seq)
        self.last = ext if self.last is None else max(self.last, ext)
        return ext


def recovery_s(
    trace: list[tuple[float, float]], releases: list[float], near: float = 0.04
) -> list[float | None]:
    """For each stall released at ``releases``, how long the receiver's delay (``trace``:
    (seconds, :attr:`Receiver.delay`) a tick) took after the release to come back within
    ``near`` of where it settles: its median over the second before the next stall (or the
    trace's last second; a stall with less than 3 s after it is left out; ``None``: not back
    before the next stall or the end). That is where it was
    before the stall unless the stall moved what the receiver wants (Opus: its concealed frames
    start the FEC floor's frame; a stall that comes back is kept, ``delay.PEAK_MEMORY``)."""
    out: list[float | None] = []
    for k, release in enumerate(releases):
        end = releases[k + 1] - 1.0 if k + 1 < len(releases) else trace[-1][0] + 0.02
        settled = [d for t, d in trace if end - 1.0 <= t < end]
        if end - release < 3.0 or not settled:
            continue  # too near the end to settle
        level = float(np.median(settled))
        off = [t for t, d in trace if release <= t < end and abs(d - level) > near]
        if off and max(off) > end - 0.1:
            out.append(None)  # not back before the next stall
        else:
            out.append(round((max(off) + 0.02 - release) if off else 0.0, 2))
    return out


def sender_stall_ms(wire_times: list[tuple[int, float]], period: float = 0.02) -> float:
    """The longest a packet reached the wire late against the sender's best pace so far: each
    one's send time less its place on the 20 ms grid, against the earliest of those before it.
    The test process sends the browser's packets, runs the PCM engine and scores, and the
    bridge's receiver hears a stall of it as jitter the profile never had (the ideal receiver,
    which ignores time, does not): a case whose sender stalled is not the bridge's score."""
    worst, best = 0.0, float("inf")
    if not wire_times:
        return 0.0
    first = wire_times[0][0]
    for seq, at in wire_times:
        lateness = at - (seq - first) * period
        best = min(best, lateness)
        worst = max(worst, lateness - best)
    return round(worst * 1000, 1)


def ideal_decode(
    packets: dict[int, bytes], *, fec: bool = True, copies: dict[int, bytes] | None = None
) -> np.ndarray:
    """What a receiver with unlimited delay makes of ``packets`` (extended seq → Opus payload):
    every packet in order, a lost frame decoded from a RED copy of it where one arrived
    (``copies``, by the seq it stands for: RFC 2198), else rebuilt from the next packet's FEC
    data where it has some (``fec``), else libopus' concealment."""
    if not packets:
        return np.zeros(0, dtype=np.int16)
    dec = OpusDecoder(RATE)
    out = []
    for seq in range(min(packets), max(packets) + 1):
        payload = packets.get(seq)
        if payload is None and copies is not None:
            payload = copies.get(seq)
        if payload is not None:
            out.append(dec.decode(payload))
            continue
        later = packets.get(seq + 1)
        if fec and later is not None and has_fec(later):
            out.append(dec.decode_fec(later, FRAME))
        else:
            out.append(dec.conceal(FRAME))
    return np.concatenate(out)


class SpeechSource:
    """What the browser's microphone says: silence until :meth:`start`, then the speech."""

    def __init__(self, pcm: np.ndarray) -> None:
        self._frames = frames(pcm)
        self._i = 0
        self.started = False

    def start(self) -> None:
        self.started = True

    @property
    def done(self) -> bool:
        return self._i >= len(self._frames)

    def take(self, now: float) -> np.ndarray | None:
        if not self.started or self.done:
            return None
        self._i += 1
        return self._frames[self._i - 1]

    def detach(self) -> None:
        pass


@dataclass
class Browser:
    """An aiortc peer that speaks (Opus, in-band FEC) and keeps every packet both ways: the
    browser, or with ``bitrate=20_000`` the WhatsApp user's side of a Cloud API call."""

    speech: np.ndarray
    up: Wire
    down: Wire
    drift_ppm: float = 0.0
    bitrate: int = 32_000
    expected_loss: int = 10
    red: bool = False
    """Offer RED (RFC 2198) as Chromium does; RED packets are split where they arrive."""
    down_after: float = 0.0
    """The downlink's wire loses nothing for this long after connecting (a link whose
    loss starts mid-call: the first receiver reports are clean)."""
    sent: dict[int, bytes] = field(default_factory=dict)
    """Uplink packets that got through the wire (extended seq → Opus payload)."""
    received: dict[int, bytes] = field(default_factory=dict)
    """Downlink packets that got through the wire."""
    received_rtp: list[tuple[int, int, float]] = field(default_factory=list)
    """(extended sequence number, RTP timestamp, arrival) of each, in arrival order."""
    copies: dict[int, bytes] = field(default_factory=dict)
    """RED copies that got through, by the extended seq of the frame they stand for."""
    down_octets: int = 0
    """Downlink payload octets the bridge sent (before the wire): its bit rate."""
    lost_up: int = 0
    up_wire_times: list[tuple[int, float]] = field(default_factory=list)
    """(extended sequence number, when it reached the wire before the profile's delay) of each
    uplink packet: how steadily this process sent (:func:`sender_stall_ms`)."""

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.source = SpeechSource(self.speech)
        # As Chromium sends speech once it has seen loss: 32 kbit/s with FEC data (WhatsApp:
        # the 20 kbit/s its SDP asks for).
        pacer = None
        if self.drift_ppm:
            # The far end's own clock: the worker clock's kind, at the peer's period.
            far_clock = WorkerClock(period=0.02 / (1 + self.drift_ppm * 1e-6))
            pacer = WorkerPacer(clock=far_clock)
        self.track = AiortcTrack(
            self.source,
            pacer=pacer,
            bitrate=self.bitrate,
            complexity=9,
            fec=True,
            expected_loss=self.expected_loss,
        )
        self.connected = asyncio.Event()
        self.connected_at: float | None = None
        self.red_pt: int | None = None
        self.opus_pt = 111
        self._pending: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._payloads: dict[int, bytes] = {}
        self._up_seq, self._down_seq = Unwrap(), Unwrap()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected_at = time.monotonic()
                self.connected.set()

    def _hook(self) -> None:
        dtls = self.pc.getSenders()[0].transport
        ice = dtls.transport
        send_rtp, send = dtls._send_rtp, ice._send

        async def keep_payload(data: bytes) -> None:  # plaintext RTP, before SRTP
            h = rtp_header(data)
            if h is not None:
                self._payloads[h[0]] = data[h[2] :]
            await send_rtp(data)

        async def impair(data: bytes) -> None:  # SRTP, on the wire
            h = rtp_header(data)
            if h is None:
                await send(data)
                return
            payload = self._payloads.pop(h[0], b"")
            self.up_wire_times.append((self._up_seq.peek(h[0]), time.monotonic()))
            fate = self.up.fate()
            if fate is None:
                self.lost_up += 1
                return
            self.sent[self._up_seq(h[0])] = payload
            if fate <= 0:
                await send(data)
                return
            self._timers.append(
                asyncio.get_running_loop().call_later(fate, self._send_later, send, data)
            )

        dtls._send_rtp = keep_payload
        ice._send = impair
        receiver = self.pc.getTransceivers()[0].receiver
        handle = receiver._handle_rtp_packet

        async def arrive(packet: Any, arrival_time_ms: int) -> None:
            self.down_octets += len(packet.payload)
            early = (
                self.connected_at is None or time.monotonic() - self.connected_at < self.down_after
            )
            if self.down.fate() is None and not early:
                return  # lost on the way (aiortc's RTCP then reports it to the bridge)
            if packet.payload:
                seq = self._down_seq(packet.sequence_number)
                if packet.payload_type == self.red_pt:
                    # RED (RFC 2198): copies by the frame they stand for; the primary goes on
                    # as plain Opus (aiortc knows no RED and would count it lost).
                    blocks = split_red(packet.payload) or [(0, self.opus_pt, b"")]
                    for offset, _, block in blocks[:-1]:
                        self.copies.setdefault(seq - offset // 960, block)
                    packet.payload_type, packet.payload = self.opus_pt, blocks[-1][2]
                self.received[seq] = packet.payload
                self.received_rtp.append((seq, packet.timestamp, time.monotonic()))
            await handle(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = arrive

    def _send_later(self, send: Callable[[bytes], Any], data: bytes) -> None:
        async def go() -> None:
            try:
                await send(data)
            except ConnectionError:
                pass  # the call ended while the packet was on its way

        task = asyncio.ensure_future(go())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def answer(self, offer: str) -> str:
        """Answer the bridge's offer (the WhatsApp side of a business-initiated call)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        transceiver = self.pc.getTransceivers()[0]
        transceiver.sender.replaceTrack(self.track)
        transceiver.direction = "sendrecv"
        self._hook()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def connect(self, http: aiohttp.ClientSession, base: str, call_id: str) -> None:
        self.pc.addTrack(self.track)
        self._hook()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        if self.red:
            sdp = self._offer_red(sdp)
        async with http.post(
            f"{base}/call/webrtc/offer", json={"callID": call_id, "type": "offer", "sdp": sdp}
        ) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {body}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        if self.red_pt is not None:  # aiortc knows no RED: its router would drop the packets
            # (this peer is aiortc's own, not the bridge's: it reaches its router directly)
            receiver = self.pc.getTransceivers()[0].receiver
            router = receiver.transport._rtp_router
            router.payload_type_table.setdefault(self.red_pt, set()).add(receiver)
        # As a browser does: send no more than the answer's maxaveragebitrate (RFC 7587 §6.1).
        cap = opus_parameters(body["sdp"]).get("maxaveragebitrate")
        if cap and cap.isdigit() and int(cap) < self.bitrate:
            self.track._encoder.set_bitrate(int(cap))
        await asyncio.wait_for(self.connected.wait(), 10)

    def _offer_red(self, sdp: str) -> str:
        """``sdp`` offering ``red/48000/2`` over its Opus, as Chromium's offer does."""
        lines = sdp.replace("\r\n", "\n").split("\n")
        opus = next(ln for ln in lines if ln.startswith("a=rtpmap:") and "opus/48000" in ln)
        self.opus_pt = int(opus[len("a=rtpmap:") :].split(" ", 1)[0])
        self.red_pt = 63
        out = []
        for ln in lines:
            if ln.startswith("m=audio "):
                ln = f"{ln} {self.red_pt}"
            out.append(ln)
            if ln == opus:
                out += [
                    f"a=rtpmap:{self.red_pt} red/48000/2",
                    f"a=fmtp:63 {self.opus_pt}/{self.opus_pt}",
                ]
        return "\r\n".join(out)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._pending):
            task.cancel()
        await self.pc.close()


def restrict_to_loopback() -> None:
    """Gather ICE candidates on 127.0.0.1 only (the bench never sends anywhere else)."""
    from tests.support.rtc_client import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])


@dataclass
class Bridge:
    """A bridge process (``python -m bridge``) with its environment."""

    env: dict[str, str]
    port: int = 0
    proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from tests.support.ports import free_port

        self.port = self.port or free_port()
        env = dict(
            os.environ,
            BRIDGE_PORT=str(self.port),
            BRIDGE_ICE_ADDRESSES="127.0.0.1",
            BRIDGE_STUN_URLS="",
            BRIDGE_LOG_LEVEL="warning",
            BRIDGE_STATS_INTERVAL="1",
            **self.env,
        )
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", env=env, cwd=ROOT
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{self.base}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the bridge did not start")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 15)


async def _place_call(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/call/make", json={"phone": "5521999999999"}) as r:
        call = await r.json()
    for _ in range(200):
        async with http.get(f"{base}/call/{call['callID']}") as r:
            if (await r.json()).get("state") == "active":
                return str(call["callID"])
        await asyncio.sleep(0.05)
    raise RuntimeError("the call never became active")


DOWN_AFTER = 2.0
"""The browser's link starts losing the bridge's packets this long after connecting (the
speech starts 0.5 s after connecting): a link whose loss starts mid-call, after clean reports."""
DOWNLINK_PROFILES = ("clean", "loss3", "loss10", "loss20", "bursts")
"""The profiles the downlink is also measured on with a browser that offers RED."""


async def engine_call(
    speech: np.ndarray,
    profile: Profile,
    seed: int,
    bridge: Bridge,
    engine: Any,
    *,
    red: bool = False,
) -> dict[str, Any]:
    """One call on a PCM engine under ``profile``: both directions scored (``red``: the
    browser offers RED, as Chromium does)."""
    restrict_to_loopback()
    sent = np.tile(speech, profile.repeats)
    browser = Browser(
        sent,
        Wire(profile, seed),
        Wire(profile, seed + 1000),
        drift_ppm=profile.drift_ppm,
        red=red,
        down_after=DOWN_AFTER,
    )
    async with aiohttp.ClientSession() as http:
        call_id = await _place_call(http, bridge.base)
        await browser.connect(http, bridge.base, call_id)
        fake = list(engine.calls.values())[-1]
        await asyncio.sleep(0.5)
        transit0 = await _transit(http, bridge.base)
        cpu0 = bridge.cpu_seconds()
        fake.received.clear()
        fake.clock_ppm = profile.drift_ppm  # the engine's clock drifts as the browser's does
        browser.source.start()
        fake.signal = sent
        seconds = sent.size / RATE
        octets0 = browser.down_octets
        await asyncio.sleep(seconds + 1.0)
        down_kbps = (browser.down_octets - octets0) * 8 / (seconds + 1.0) / 1000
        cpu = bridge.cpu_seconds() - cpu0
        transit1 = await _transit(http, bridge.base)
        async with http.get(f"{bridge.base}/call/{call_id}/stats") as r:
            stats = await r.json()
        async with http.post(f"{bridge.base}/call/hangup", json={"callID": call_id}):
            pass
    await browser.close()
    heard_by_engine = fake.heard()
    piece = speech.size  # a long (repeated) run is scored a repetition at a time
    uplink = {
        "bridge": pesq_wb(sent, heard_by_engine, piece),
        "ideal": pesq_wb(sent, ideal_decode(browser.sent), piece),
        "ideal_plc_only": pesq_wb(sent, ideal_decode(browser.sent, fec=False), piece),
        "packets_lost": browser.lost_up,
        "sender_stall_ms": sender_stall_ms(browser.up_wire_times),
        "receiver_delay_ms": _receiver_delay_ms(stats),
    }
    received = browser.received
    lost = [s for s in range(min(received), max(received)) if s not in received] if received else []
    downlink = {
        "bridge": pesq_wb(sent, ideal_decode(received, copies=browser.copies), piece),
        "ideal_plc_only": pesq_wb(sent, ideal_decode(received, fec=False), piece),
        "payload_kbps": round(down_kbps, 1),
        "packets_lost": len(lost),
        "red_copies_used": sum(1 for s in lost if s in browser.copies),
        "red_copies_differing": sum(
            1 for s, c in browser.copies.items() if s in received and received[s] != c
        ),
        "fec_frames": sum(
            1 for s in lost if s not in browser.copies and has_fec(received.get(s + 1, b""))
        ),
        "protection": (stats.get("webrtc") or {}).get("downlinkProtection"),
        # The engine's side of the downlink at the bridge: underruns (the engine late),
        # concealment and stretching change what reaches the encoder, before any network.
        "sink": (stats.get("webrtc") or {}).get("jitterBuffer"),
        "bridge_transit_ms": _mean_ms(transit0, transit1, "downlink"),
    }
    return {
        "uplink": uplink,
        "downlink": downlink,
        "bridge_cpu_percent": round(100 * cpu / (seconds + 1.0), 2),
        "receiver": _receiver_stats(stats),
    }


def _receiver_delay_ms(stats: dict[str, Any]) -> float | None:
    """The browser leg's receiver: the mean time a played sample waited in it (W3C
    ``jitterBufferDelay / jitterBufferEmittedCount``), ms."""
    rx = _receiver_stats(stats) or {}
    count = rx.get("jitterBufferEmittedCount") or 0
    return round(1000 * rx["jitterBufferDelay"] / count, 1) if count else None


async def _transit(http: aiohttp.ClientSession, base: str) -> dict[str, tuple[float, float]]:
    """``bridge_frame_transit_seconds`` (sum, count) per direction, from ``/metrics``: how
    long a frame waited between entering the bridge and leaving it (on the downlink, the
    listener's jitter buffer and its cushion)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != "bridge_frame_transit_seconds":
            continue
        for sample in fam.samples:
            pair = out.setdefault(sample.labels.get("direction", ""), [0.0, 0.0])
            if sample.name.endswith("_sum"):
                pair[0] = sample.value
            elif sample.name.endswith("_count"):
                pair[1] = sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def _mean_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], key: str
) -> float | None:
    s0, c0 = before.get(key, (0.0, 0.0))
    s1, c1 = after.get(key, (0.0, 0.0))
    return round(1000 * (s1 - s0) / (c1 - c0), 1) if c1 > c0 else None


def _receiver_stats(stats: dict[str, Any]) -> dict[str, Any] | None:
    """The browser leg's receiver figures from ``GET /call/{id}/stats``, where it has them."""
    webrtc = stats.get("webrtc") or {}
    return webrtc.get("receiver")  # type: ignore[no-any-return]


async def echo_call(speech: np.ndarray, seed: int, bridge: Bridge) -> dict[str, Any]:
    """Browser → bridge → simulator's echo → bridge → browser, clean network."""
    restrict_to_loopback()
    clean = PROFILES["clean"]
    browser = Browser(speech, Wire(clean, seed), Wire(clean, seed + 1))
    async with aiohttp.ClientSession() as http:
        call_id = await _place_call(http, bridge.base)
        await browser.connect(http, bridge.base, call_id)
        await asyncio.sleep(0.5)
        browser.received.clear()
        browser.source.start()
        await asyncio.sleep(speech.size / RATE + 1.5)
        async with http.get(f"{bridge.base}/call/{call_id}/stats") as r:
            stats = await r.json()
        async with http.post(f"{bridge.base}/call/hangup", json={"callID": call_id}):
            pass
    await browser.close()
    received = browser.received
    return {
        "round_trip": {"bridge": pesq_wb(speech, ideal_decode(received))},
        # What the round trip went through, to tell a low score's cause: the bridge's receiver
        # (concealment, stretching), the downlink's sink, and what the browser missed.
        "receiver": _receiver_stats(stats),
        "sink": (stats.get("webrtc") or {}).get("jitterBuffer"),
        "packets_received": len(received),
        "packets_lost": (max(received) - min(received) + 1 - len(received)) if received else 0,
    }


async def profile_calls(
    speech: np.ndarray,
    profiles: list[str],
    *,
    seed: int,
    red: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every profile on one PCM-engine bridge (started only for them: the echo alone needs
    none, and its process start and stop were a second or two of a serial test)."""
    out: dict[str, Any] = {}
    async with pcm_engine_bridge() as (bridge, engine):
        for i, name in enumerate(profiles):
            t0 = time.monotonic()
            out[name] = await engine_call(speech, PROFILES[name], seed + i, bridge, engine)
            log(
                f"  {name}: {out[name]['uplink']} {out[name]['downlink']} "
                f"({time.monotonic() - t0:.0f} s)"
            )
            if red and name in DOWNLINK_PROFILES:
                with_red = await engine_call(
                    speech, PROFILES[name], seed + i, bridge, engine, red=True
                )
                out[name]["downlink_red"] = with_red["downlink"]
                # The same seeded packets up again on a new call (RED is the downlink's): a
                # second take of the profile's uplink, as a test's retry would make.
                out[name]["uplink_red"] = with_red["uplink"]
                out[name]["bridge_cpu_percent_red"] = with_red["bridge_cpu_percent"]
                log(f"  {name}, browser offers RED: {with_red['downlink']}")
    return out


@asynccontextmanager
async def pcm_engine_bridge(**env: str) -> AsyncIterator[tuple[Bridge, Any]]:
    """A bridge process on a PCM engine (the ZuckZapGo stand-in of ``tests/fakes``, in this
    process), with ``env`` besides; both stopped at the end."""
    from tests.fakes.zuckzapgo import FakeZuckZapGo

    engine = FakeZuckZapGo(answer_delay=0.1)
    await engine.start()
    bridge = Bridge(
        {
            "BRIDGE_ENGINE": "zuckzapgo",
            "BRIDGE_ENGINE_URL": engine.url,
            "BRIDGE_ENGINE_TOKEN": engine.token,
            "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
            **env,
        }
    )
    try:
        await bridge.start()
        yield bridge, engine
    finally:
        await bridge.stop()
        await engine.stop()


async def run_paths(
    speech: np.ndarray,
    profiles: list[str],
    *,
    seed: int = 1,
    echo: bool = True,
    cloudapi: bool = False,
    red: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every profile on a PCM-engine bridge, the echo round trip on a sim bridge, and a Cloud
    API call (clean) on a bridge against the speaking Meta stand-in."""
    out = await profile_calls(speech, profiles, seed=seed, red=red, log=log) if profiles else {}
    if echo:
        # The callee answers at once: its ring (0.5 s by default) is nothing the echo scores.
        sim = Bridge(
            {"BRIDGE_ENGINE": "sim", "BRIDGE_SIM_PEER": "echo", "BRIDGE_SIM_ANSWER_DELAY": "0.05"}
        )
        try:
            await sim.start()
            out["echo"] = await echo_call(speech, seed, sim)
            log(f"  echo: {out['echo']}")
        finally:
            await sim.stop()
    if cloudapi:
        out["cloudapi"] = await cloudapi_call(speech, seed)
        log(f"  cloudapi: {out['cloudapi']}")
        out["cloudapi_transcoded"] = await cloudapi_call(speech, seed, passthrough=False)
        log(f"  cloudapi, forced transcoding: {out['cloudapi_transcoded']}")
    return out


META_TOKEN, META_PNID, META_SECRET = "quality-token", "1098765432", "quality-secret"


def speaking_meta(bridge_base: str, speech: np.ndarray, wire: Profile | None = None) -> Any:
    """``bench/meta.py``'s Meta (Graph endpoint, signed webhooks) whose WhatsApp user speaks
    ``speech`` at 20 kbit/s and keeps what it hears, instead of echoing."""
    from bench.meta import EchoCall, Meta

    class SpeakingMeta(Meta):
        def __init__(self) -> None:
            super().__init__(bridge_base, META_TOKEN, META_PNID, META_SECRET, 0.05)
            self.peers: list[Browser] = []

        async def connect(self, body: dict[str, Any]) -> Any:
            from aiohttp import web

            clean = PROFILES["clean"]
            peer = Browser(
                speech, Wire(wire or clean, 11), Wire(clean, 12), bitrate=20_000, expected_loss=3
            )
            wacid = f"wacid.QUALITY{len(self.peers):04d}"
            call = EchoCall(wacid, str(body.get("to")), "", peer.pc)
            call.answer = meta_sdp(await peer.answer(body["session"]["sdp"]))
            call.connected = True
            self.peers.append(peer)
            self.calls[wacid] = call
            self.spawn(self.answered(call))
            return web.json_response({"messaging_product": "whatsapp", "calls": [{"id": wacid}]})

    return SpeakingMeta()


def meta_sdp(sdp: str) -> str:
    """An answer as Meta's media servers write it (the test fake's rewriting)."""
    from tests.fakes.cloudapi import meta_answer

    return str(meta_answer(sdp))


@dataclass
class CloudCall:
    """A live Cloud API call on a bridge process: its id, the browser and the WhatsApp user."""

    bridge: Bridge
    http: aiohttp.ClientSession
    call_id: str
    browser: Browser
    whatsapp: Browser

    async def start_speaking(self) -> None:
        """Both sides start their speech now (what each kept so far is forgotten)."""
        for peer in (self.browser, self.whatsapp):
            peer.received.clear()
            peer.sent.clear()
            peer.received_rtp.clear()
            peer.source.start()


@asynccontextmanager
async def cloudapi(
    speech: np.ndarray,
    seed: int,
    env: dict[str, str] | None = None,
    whatsapp_wire: Profile | None = None,
    whatsapp_speech: np.ndarray | None = None,
) -> AsyncIterator[CloudCall]:
    """A Cloud API call on a bridge process (``BRIDGE_ENGINE=cloudapi``) against the speaking
    Meta stand-in, with a browser connected; ``whatsapp_wire`` impairs what WhatsApp sends,
    ``whatsapp_speech`` is what it says (else the same speech as the browser)."""
    from aiohttp import web

    from bench.meta import add_graph_routes
    from tests.support.ports import free_port

    restrict_to_loopback()
    meta_port, bridge_port = free_port(), free_port()
    meta = speaking_meta(
        f"http://127.0.0.1:{bridge_port}",
        speech if whatsapp_speech is None else whatsapp_speech,
        whatsapp_wire,
    )
    app = web.Application()
    add_graph_routes(app, meta)
    app.on_startup.append(meta.on_startup)
    app.on_shutdown.append(meta.on_shutdown)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", meta_port).start()
    bridge = Bridge(
        {
            "BRIDGE_ENGINE": "cloudapi",
            "BRIDGE_ENGINE_URL": f"http://127.0.0.1:{meta_port}/v23.0",
            "BRIDGE_ENGINE_TOKEN": META_TOKEN,
            "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": META_PNID,
            "BRIDGE_CLOUDAPI_APP_SECRET": META_SECRET,
            "BRIDGE_CLOUDAPI_VERIFY_TOKEN": "quality-verify",
            **(env or {}),
        },
        port=bridge_port,
    )
    clean = PROFILES["clean"]
    browser = Browser(speech, Wire(clean, seed), Wire(clean, seed + 1))
    try:
        await bridge.start()
        async with aiohttp.ClientSession() as http:
            call_id = await _place_call(http, bridge.base)
            await browser.connect(http, bridge.base, call_id)
            yield CloudCall(bridge, http, call_id, browser, meta.peers[-1])
            async with http.post(f"{bridge.base}/call/hangup", json={"callID": call_id}):
                pass
    finally:
        await browser.close()
        for peer in meta.peers:
            await peer.close()
        await bridge.stop()
        await runner.cleanup()


async def cloudapi_call(
    speech: np.ndarray, seed: int, *, passthrough: bool = True
) -> dict[str, Any]:
    """A Cloud API call, clean network: WhatsApp ⇄ bridge ⇄ browser, both directions, next to
    each sender's own packets decoded directly; ``passthrough=False`` forces the bridge to
    decode and encode again (``BRIDGE_OPUS_PASSTHROUGH``)."""
    env = {"BRIDGE_OPUS_PASSTHROUGH": "true" if passthrough else "false"}
    async with cloudapi(speech, seed, env) as call:
        await asyncio.sleep(0.5)
        cpu0 = call.bridge.cpu_seconds()
        await call.start_speaking()
        seconds = speech.size / RATE + 1.0
        await asyncio.sleep(seconds)
        cpu = call.bridge.cpu_seconds() - cpu0
        browser, whatsapp = call.browser, call.whatsapp
    forwarded = set(browser.received.values())
    return {
        "whatsapp_to_browser": {
            "bridge": pesq_wb(speech, ideal_decode(browser.received)),
            "whatsapp_packets": pesq_wb(speech, ideal_decode(whatsapp.sent)),
            "identical_payloads": round(
                sum(p in forwarded for p in whatsapp.sent.values()) / max(1, len(whatsapp.sent)),
                3,
            ),
        },
        "browser_to_whatsapp": {
            "bridge": pesq_wb(speech, ideal_decode(whatsapp.received)),
            "browser_packets": pesq_wb(speech, ideal_decode(browser.sent)),
        },
        "bridge_cpu_percent": round(100 * cpu / seconds, 2),
    }
