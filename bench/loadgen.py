"""Load generator: N concurrent two-way calls, cheaper per call than the server.

Each call sends pre-encoded Opus (a 440 Hz tone encoded once at start-up) as RTP, so the
generator never encodes; and it counts the RTP packets it receives without decoding them.
It prints ``WINDOW_START <t>`` and ``WINDOW_END <t>`` lines (``time.monotonic()``, the same
clock in every process) around the measurement window, then one JSON line with its
measurements. ``bench/meta.py`` (the Meta stand-in of the ``cloudapi`` target) reuses the
packet track, the counting receive path and the on-time measure, and echoes what it hears.
``--participants 3`` makes each call a contact-centre call: an agent plus two supervisors (one
whispering, one barging), each its own peer connection sending the same pre-encoded Opus and
counting the RTP it receives (each hears its own mix, so the bridge mixes per participant).
``--audio silence`` sends Opus-encoded digital silence instead (nobody speaking: a sender long
settled into it); where the bridge's answer asks for DTX (``usedtx=1``), as a browser does: an
update and a packet of no audio every 420 ms (libopus' DTX, WebRTC's rule). Every call's offer
asks for DTX in turn (``usedtx=1``: a client that prefers it, as a mobile app does), so a silent
downlink is (almost) not sent either; ``--no-ask-dtx`` offers as Chromium does, without it.
``--click`` makes the first call a latency probe: it sends silence with a 20 ms 1 kHz click
once a second and decodes only its own downlink, timing each click from the moment its packet
leaves to the moment its echo arrives (RTP send to RTP arrival, the bridge both ways plus the
far end's echo delay). ``--report-every S`` prints a ``REPORT`` line with the last S seconds'
on-time share (the soak's timeline) and keeps only recent arrivals in memory. ``--hold`` keeps
the calls up after ``WINDOW_END`` until a line comes on stdin: ``bench/run.py`` reads the live
calls' stats there (forwarding, the engine's sinks), which a hang-up racing it would empty.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import itertools
import json
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics

from bridge.audio import tone
from bridge.rtc import restrict_host_addresses

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz
ON_TIME = 0.06  # a packet later than this behind its schedule is late


def encode_pcm(pcm: np.ndarray) -> list[bytes]:
    """48 kHz mono s16 → 20 ms Opus packets (encoded once, at start-up)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 32_000
    codec.options = {"frame_duration": "20", "application": "voip"}
    packets: list[bytes] = []
    for i in range(0, pcm.size, FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + FRAME].reshape(1, -1), "s16", "mono")
        frame.sample_rate = RATE
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


def encode_tone(seconds: float = 1.0) -> list[bytes]:
    return encode_pcm(tone(440.0, int(RATE * seconds), RATE, 0.5))


def encode_silence() -> list[bytes]:
    """One second of a sender settled into digital silence (a muted microphone): the last
    second of two, so the loop does not replay the encoder's start-up every second, which a
    real sender never does (and which no silent stream's decoder would meet)."""
    return encode_pcm(np.zeros(2 * RATE, np.int16))[-50:]


def encode_silence_dtx() -> list[bytes | None]:
    """What a WebRTC sender told ``usedtx=1`` sends for a muted microphone, long settled: two
    cycles of libopus' DTX (an update, then packets of no audio) where WebRTC sends only the
    first packet of no audio after each update (``None``: a frame not sent)."""
    from bridge.audio.opus import OpusEncoder

    enc = OpusEncoder(RATE, bitrate=32_000, complexity=5, fec=True, expected_loss=0, dtx=True)
    coded = [enc.encode(np.zeros(FRAME, np.int16)) for _ in range(200)]
    updates = [i for i, p in enumerate(coded) if len(p) > 2 and i > 100]
    out: list[bytes | None] = []
    for i in range(updates[0], updates[2]):  # two whole update cycles
        quiet = len(coded[i]) <= 2 and len(coded[i - 1]) <= 2
        out.append(None if quiet else coded[i])
    return out


def asking_for_dtx(sdp: str) -> str:
    """``sdp`` with its Opus parameters asking for DTX (``usedtx=1``, RFC 7587 §6.1)."""
    from bridge.rtc.browser_sdp import opus_parameters, with_opus_fmtp

    params = {**opus_parameters(sdp), "usedtx": "1"}
    return with_opus_fmtp(sdp, tuple(params.items()))


CLICK_EVERY = 50
"""Frames between two clicks of the probe call (1 s)."""


def encode_clicks() -> list[bytes]:
    """One second of probe audio: a 20 ms 1 kHz burst, then silence (loops every second)."""
    pcm = np.zeros(CLICK_EVERY * FRAME, dtype=np.int16)
    pcm[:FRAME] = tone(1000.0, FRAME, RATE, 0.5)
    return encode_pcm(pcm)[:CLICK_EVERY]


class ClickProbe:
    """Times the probe call's clicks through the echo: send time → first loud frame back."""

    def __init__(self) -> None:
        from bridge.audio.opus import OpusDecoder

        self.decoder = OpusDecoder(16_000)
        self.sent: deque[float] = deque(maxlen=8)
        self.loud = False
        self.round_trips: list[float] = []

    def on_send(self, n: int) -> None:
        if n % CLICK_EVERY == 0:
            self.sent.append(time.monotonic())

    def on_receive(self, payload: bytes, at: float) -> None:
        try:
            pcm = self.decoder.decode(payload)
        except Exception:
            return
        # -30 dBFS: far above Opus' noise in the echoed silence, far below the -6 dBFS click.
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 1036
        if loud and not self.loud:
            before = [t for t in self.sent if t < at]
            if before:
                self.round_trips.append(at - before[-1])
        self.loud = loud


PROBES: dict[int, ClickProbe] = {}
"""The probe's receiver (by id) → its probe."""


class PacketTrack(MediaStreamTrack):
    """Plays pre-encoded Opus packets on a 20 ms clock (aiortc only packs them into RTP); a
    ``None`` among them is a frame not sent (DTX), its RTP time skipped."""

    kind = "audio"

    def __init__(
        self,
        packets: list[bytes | None],
        echo: deque[bytes] | None = None,
        probe: ClickProbe | None = None,
        *,
        period: float = 0.02,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.packets = packets
        self.echo = echo
        """When given: send what arrived there (oldest first) instead, while there is any."""
        self.probe = probe
        self.n = 0
        self.start: float | None = None
        self.period = period
        """Its clock's 20 ms (a drifting clock's is a few ppm off)."""
        self.jitter = jitter
        """Each packet held up to this many seconds past its time (uniform, ``rng``): the
        network's jitter, its packets still in order (one path)."""
        self.rng = rng or random.Random(1)

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self.start is None:
                self.start = time.monotonic()
            else:
                due = self.start + self.n * self.period
                if self.jitter:
                    due += self.rng.uniform(0.0, self.jitter)
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            payload = self.echo.popleft() if self.echo else self.packets[self.n % len(self.packets)]
            if payload is not None:
                break
            self.n += 1
        packet = av.Packet(payload)
        packet.pts = self.n * FRAME
        packet.time_base = fractions.Fraction(1, RATE)
        if self.probe is not None:
            self.probe.on_send(self.n)  # aiortc sends it as soon as recv returns
        self.n += 1
        return packet


ARRIVALS: dict[int, list[tuple[float, int, bool]]] = {}
"""Per receiver (by id): (arrival, RTP timestamp, a packet of no audio: DTX) of each packet."""
ECHOES: dict[int, deque[bytes]] = {}
"""Per receiver (by id): a bounded deque its payloads are copied to, for an echoing track."""


async def _count_only(self: RTCRtpReceiver, packet, arrival_time_ms: int) -> None:
    """Replaces aiortc's receive path in the generator: record arrival, skip decoding.

    The packet still feeds aiortc's reception statistics, as its own receive path does, so
    the generator's RTCP receiver reports carry a report block for the server's stream as a
    browser's do (RFC 3550 §6.4.1): the bridge sets its downlink's loss protection from them,
    and without them it would plan in-band FEC for an unknown link for the whole run."""
    now = time.monotonic()
    streams = self._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    stats = streams.get(packet.ssrc)
    if stats is None:
        stats = streams[packet.ssrc] = StreamStatistics(RATE)
    stats.add(packet)
    ARRIVALS.setdefault(id(self), []).append((now, packet.timestamp, len(packet.payload) <= 2))
    probe = PROBES.get(id(self))
    if probe is not None and packet.payload:
        probe.on_receive(packet.payload, now)
    echo = ECHOES.get(id(self))
    if echo is not None and packet.payload:
        echo.append(packet.payload)


def count_only() -> None:
    """Install :func:`_count_only` on every aiortc receiver of this process (the load
    generator's and the Meta stand-in's mains; never on import, so a module that borrows a
    helper from here keeps aiortc's real receive path)."""
    RTCRtpReceiver._handle_rtp_packet = _count_only  # type: ignore[method-assign]


# (participantID, role) of each peer connection on a call, by --participants.
SEATS = {
    1: [],
    2: [("agent", "agent"), ("sup-whisper", "whisper")],
    3: [("agent", "agent"), ("sup-whisper", "whisper"), ("sup-barge", "barge")],
    4: [
        ("agent", "agent"),
        ("sup-whisper", "whisper"),
        ("sup-barge", "barge"),
        ("sup-listen", "listen"),
    ],
}


@dataclass
class Audio:
    """What a call sends: ``plain`` packets, or ``dtx`` ones where the answer asks for DTX;
    ``ask_dtx``: its offer asks for DTX."""

    plain: list[bytes | None]
    dtx: list[bytes | None] | None = None
    ask_dtx: bool = True


async def join(
    http: aiohttp.ClientSession,
    base: str,
    call_id: str,
    audio: Audio,
    seat: dict,
    probe: ClickProbe | None = None,
) -> tuple[RTCPeerConnection, float]:
    from bridge.rtc.browser_sdp import opus_parameters

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = PacketTrack(audio.plain, probe=probe)
    pc.addTrack(track)
    if probe is not None:
        PROBES[id(pc.getTransceivers()[0].receiver)] = probe
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    t0 = time.monotonic()
    async with http.post(
        base + "/call/webrtc/offer",
        json={
            "callID": call_id,
            "type": "offer",
            "sdp": asking_for_dtx(offer) if audio.ask_dtx else offer,
            **seat,
        },
    ) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"/call/webrtc/offer answered {r.status}: {answer}")
    offer_s = time.monotonic() - t0
    if audio.dtx is not None and opus_parameters(answer["sdp"]).get("usedtx") == "1":
        track.packets = audio.dtx  # a browser told usedtx=1 sends its silence in DTX
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return pc, offer_s


PHONES = itertools.count(os.getpid() % 1000 * 100_000)
"""Distinct callees: one load generator's calls never share a WhatsApp user."""


async def place_call(
    http: aiohttp.ClientSession,
    base: str,
    audio: Audio,
    participants: int = 1,
    probe: ClickProbe | None = None,
):
    """A call and its peer connections: the agent first (the call's direct path), then any
    supervisors. Returns (callID, [pc…], the agent's offer-to-answer seconds)."""
    # Each call to a user of its own: WhatsApp allows a business one call per user at a time
    # (the Cloud API engine refuses a second one with 409 call_in_progress).
    phone = f"5521{next(PHONES):09d}"
    async with http.post(base + "/call/make", json={"phone": phone}) as r:
        call = await r.json()
        if r.status != 201:
            raise RuntimeError(f"/call/make answered {r.status}: {call}")
    pcs, offers = [], []
    for pid, role in SEATS[participants] or [(None, None)]:
        seat = {"participantID": pid, "role": role} if pid else {}
        # Only the call's first peer connection (the agent) carries the probe.
        pc, offer_s = await join(http, base, call["callID"], audio, seat, probe)
        probe = None
        pcs.append(pc)
        offers.append(offer_s)
    return call["callID"], pcs, offers[0]


def arrivals_of(pc: RTCPeerConnection) -> list[tuple[float, int, bool]]:
    receivers = [t.receiver for t in pc.getTransceivers()]
    return ARRIVALS.get(id(receivers[0]), []) if receivers else []


@dataclass(frozen=True)
class FrameCounts:
    """A receiver's frames inside a window: on time, received at all, and expected."""

    on_time: int
    received: int
    expected: int


def frame_counts(arrivals: list[tuple[float, int, bool]], t0: float, t1: float) -> FrameCounts:
    """The frames inside [t0, t1]: lateness against the RTP clock. A packet of no audio (DTX)
    counts for the frames up to the next packet's RTP time (at most 25, those inside the
    window): a sender in DTX sends one for many. ``received`` counts them early or late: a
    stall of this process (a loaded host) makes frames late, never missing."""
    expected = round((t1 - t0) / 0.02)
    if not arrivals:
        return FrameCounts(0, 0, expected)
    times = np.array([t for t, _, _ in arrivals])
    stamps = np.array([ts for _, ts, _ in arrivals], dtype=np.int64)
    stamps = np.unwrap(stamps, period=2**32).astype(np.float64) if stamps.size > 1 else stamps
    order = np.argsort(stamps, kind="stable")
    gaps = np.full(stamps.size, 25.0)  # the latest packet's silence runs on, as far as we know
    gaps[order[:-1]] = np.clip(np.round(np.diff(stamps[order]) / FRAME), 1, 25)
    dtx = np.array([d for _, _, d in arrivals], dtype=bool)
    covers = np.where(dtx, gaps, 1.0)
    # The frames of each packet that fall inside the window (a DTX packet just before it
    # covers its first frames).
    first = np.maximum(0.0, np.ceil((t0 - times) / 0.02 - 1e-9))
    last = np.minimum(covers - 1, np.floor((t1 - times) / 0.02 + 1e-9))
    counted = np.maximum(0.0, last - first + 1)
    near = (times >= t0 - 0.5) & (times <= t1)
    if not (near & (times >= t0)).any():
        return FrameCounts(0, 0, expected)
    times, stamps, counted = times[near], stamps[near], counted[near]
    schedule = times[0] + (stamps - stamps[0]) / RATE
    # The earliest packet defines the clock's phase; lateness is measured against it.
    offset = np.min(times - schedule)
    late = (times - schedule - offset) > ON_TIME
    received = min(expected, int(np.sum(counted)))
    return FrameCounts(min(expected, int(np.sum(counted[~late]))), received, expected)


def summed(counts: list[FrameCounts]) -> FrameCounts:
    return FrameCounts(
        sum(c.on_time for c in counts),
        sum(c.received for c in counts),
        sum(c.expected for c in counts),
    )


def on_time_share(arrivals: list[tuple[float, int, bool]], t0: float, t1: float) -> tuple[int, int]:
    """(frames on time, frames expected) inside [t0, t1] (see :func:`frame_counts`)."""
    counts = frame_counts(arrivals, t0, t1)
    return counts.on_time, counts.expected


AUDIO_WAIT = 20.0
"""Seconds the warm-up waits at most for every seat's first packet (a seat that never hears
anything is the window's to show)."""


async def audio_flowing(pcs: list[RTCPeerConnection], limit: float) -> None:
    """Until each of ``pcs`` has received a packet, at most ``limit`` seconds."""
    end = time.monotonic() + limit
    while True:
        if all(arrivals_of(pc) for pc in pcs) or time.monotonic() > end:
            return
        await asyncio.sleep(0.02)


HOLD_LIMIT = 30.0
"""Seconds ``--hold`` keeps the calls up at most, should the bench never say."""


async def held_until_told(limit: float) -> None:
    """Wait for a line on stdin (the bench has read what it needs of the live calls), at most
    ``limit`` seconds. Read through the loop, so a bench that never writes holds nothing up."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        await asyncio.wait_for(reader.readline(), limit)
    except TimeoutError:
        pass
    finally:
        transport.close()


async def main() -> None:
    count_only()
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--hangup", action="store_true", help="POST /call/hangup at the end")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after WINDOW_END keep the calls up until a line on stdin (at most 30 s): the "
        "bench reads the calls' stats first",
    )
    parser.add_argument(
        "--participants",
        type=int,
        default=1,
        choices=sorted(SEATS),
        help="peer connections per call: 1 = the plain call; 3 = agent + whisper + barge",
    )
    parser.add_argument("--click", action="store_true", help="the first call is a latency probe")
    parser.add_argument(
        "--audio",
        default="tone",
        choices=("tone", "silence"),
        help="what every call sends: the 440 Hz tone (someone speaking) or digital silence "
        "(nobody speaking; the bridge's sim peer echoes it, so silence both ways)",
    )
    parser.add_argument(
        "--no-ask-dtx",
        action="store_true",
        help="offer as Chromium does, without usedtx=1 (the bridge then sends silence in full)",
    )
    parser.add_argument(
        "--report-every", type=float, default=0.0, help="seconds between REPORT lines (0: none)"
    )
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])
    ask = not args.no_ask_dtx
    if args.audio == "tone":
        audio = Audio(list(encode_tone()), ask_dtx=ask)
    else:
        audio = Audio(list(encode_silence()), encode_silence_dtx(), ask_dtx=ask)
    probe = ClickProbe() if args.click else None
    calls = []
    async with aiohttp.ClientSession() as http:
        for i in range(args.calls):
            if i == 0 and probe is not None:
                clicks = Audio(list(encode_clicks()), ask_dtx=ask)
                call = await place_call(http, args.base, clicks, args.participants, probe)
            else:
                call = await place_call(http, args.base, audio, args.participants)
            calls.append(call)
        # The warm-up counts from every seat's first packet (bounded): on a loaded host the
        # last seats' connections and the callee's answer may take longer than the warm-up,
        # and a window begun before a seat hears anything counts its frames as never received.
        await audio_flowing([pc for _, pcs, _ in calls for pc in pcs], AUDIO_WAIT)
        await asyncio.sleep(args.warmup)
        t0 = time.monotonic()
        print(f"WINDOW_START {t0}", flush=True)
        if probe is not None:
            probe.round_trips.clear()
        reported_agents = reported_seats = FrameCounts(0, 0, 0)
        last, end = t0, t0 + args.window
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(end - now, args.report_every or end - now))
            if not args.report_every:
                continue
            now = time.monotonic()
            agents = summed([frame_counts(arrivals_of(pcs[0]), last, now) for _, pcs, _ in calls])
            seats = summed(
                [frame_counts(arrivals_of(pc), last, now) for _, pcs, _ in calls for pc in pcs]
            )
            reported_agents = summed([reported_agents, agents])
            reported_seats = summed([reported_seats, seats])
            rtts = probe.round_trips[-10:] if probe is not None else []
            share = agents.on_time / agents.expected if agents.expected else 0.0
            line = {"t0": last, "t1": now, "on_time": share}
            line["click_rtt_ms"] = [round(1000 * r, 1) for r in rtts]
            print("REPORT " + json.dumps(line), flush=True)
            # A long run keeps only the last second of arrivals (the next interval's start).
            for key, rows in ARRIVALS.items():
                ARRIVALS[key] = [r for r in rows if r[0] >= now - 1.0]
            last = now
        t1 = time.monotonic()
        print(f"WINDOW_END {t1}", flush=True)
        if args.hold:
            await held_until_told(HOLD_LIMIT)
        # The agents' downlinks (what WhatsApp sends each) and every seat's (its own mix).
        if args.report_every:  # arrivals were trimmed: the window is the sum of its reports
            agents, seats = reported_agents, reported_seats
        else:
            agents = summed([frame_counts(arrivals_of(pcs[0]), t0, t1) for _, pcs, _ in calls])
            seats = summed(
                [frame_counts(arrivals_of(pc), t0, t1) for _, pcs, _ in calls for pc in pcs]
            )
        offers = sorted(o for _, _, o in calls)
        connected = sum(
            1 for _, pcs, _ in calls if all(pc.connectionState == "connected" for pc in pcs)
        )
        for call_id, pcs, _ in calls:
            if args.hangup:
                async with http.post(args.base + "/call/hangup", json={"callID": call_id}):
                    pass
            for pc in pcs:
                await pc.close()
    n_seats = max(1, sum(len(c[1]) for c in calls))
    print(
        json.dumps(
            {
                "calls": args.calls,
                "participants": args.participants,
                "connected": connected,
                "window_s": t1 - t0,
                "window_t0": t0,
                "window_t1": t1,
                "downlink_on_time": agents.on_time / agents.expected if agents.expected else 0.0,
                "downlink_frames_per_call": agents.on_time / max(1, args.calls),
                "downlink_received_per_call": agents.received / max(1, args.calls),
                "downlink_expected_per_call": agents.expected / max(1, args.calls),
                # every participant's own mix, per participant: on time, and received at all
                "participants_on_time": seats.on_time / seats.expected if seats.expected else 0.0,
                "participant_frames": seats.on_time / n_seats,
                "participant_frames_received": seats.received / n_seats,
                "offer_to_answer_s": offers,
                "click_rtt_s": probe.round_trips if probe is not None else [],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
