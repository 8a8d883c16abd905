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
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import time
from collections import deque

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from bridge.audio import tone
from bridge.rtc import restrict_host_addresses

RATE = 48_000
FRAME = 960  # 20 ms at 48 kHz
ON_TIME = 0.06  # a packet later than this behind its schedule is late


def encode_tone(seconds: float = 1.0) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 32_000
    codec.options = {"frame_duration": "20", "application": "voip"}
    pcm = tone(440.0, int(RATE * seconds), RATE, 0.5)
    packets: list[bytes] = []
    for i in range(0, pcm.size, FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + FRAME].reshape(1, -1), "s16", "mono")
        frame.sample_rate = RATE
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


class PacketTrack(MediaStreamTrack):
    """Plays pre-encoded Opus packets on a 20 ms clock (aiortc only packs them into RTP)."""

    kind = "audio"

    def __init__(self, packets: list[bytes], echo: deque[bytes] | None = None) -> None:
        super().__init__()
        self.packets = packets
        self.echo = echo
        """When given: send what arrived there (oldest first) instead, while there is any."""
        self.n = 0
        self.start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            wait = self.start + self.n * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.echo:
            packet = av.Packet(self.echo.popleft())
        else:
            packet = av.Packet(self.packets[self.n % len(self.packets)])
        packet.pts = self.n * FRAME
        packet.time_base = fractions.Fraction(1, RATE)
        self.n += 1
        return packet


ARRIVALS: dict[int, list[tuple[float, int]]] = {}
ECHOES: dict[int, deque[bytes]] = {}
"""Per receiver (by id): a bounded deque its payloads are copied to, for an echoing track."""


async def _count_only(self: RTCRtpReceiver, packet, arrival_time_ms: int) -> None:
    """Replaces aiortc's receive path in the generator: record arrival, skip decoding."""
    ARRIVALS.setdefault(id(self), []).append((time.monotonic(), packet.timestamp))
    echo = ECHOES.get(id(self))
    if echo is not None and packet.payload:
        echo.append(packet.payload)


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


async def join(
    http: aiohttp.ClientSession, base: str, call_id: str, packets: list[bytes], seat: dict
) -> tuple[RTCPeerConnection, float]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PacketTrack(packets))
    await pc.setLocalDescription(await pc.createOffer())
    t0 = time.monotonic()
    async with http.post(
        base + "/call/webrtc/offer",
        json={"callID": call_id, "type": "offer", "sdp": pc.localDescription.sdp, **seat},
    ) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"/call/webrtc/offer answered {r.status}: {answer}")
    offer_s = time.monotonic() - t0
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return pc, offer_s


async def place_call(
    http: aiohttp.ClientSession, base: str, packets: list[bytes], participants: int = 1
):
    """A call and its peer connections: the agent first (the call's direct path), then any
    supervisors. Returns (callID, [pc…], the agent's offer-to-answer seconds)."""
    async with http.post(base + "/call/make", json={"phone": "5521999999999"}) as r:
        call = await r.json()
        if r.status != 201:
            raise RuntimeError(f"/call/make answered {r.status}: {call}")
    pcs, offers = [], []
    for pid, role in SEATS[participants] or [(None, None)]:
        seat = {"participantID": pid, "role": role} if pid else {}
        pc, offer_s = await join(http, base, call["callID"], packets, seat)
        pcs.append(pc)
        offers.append(offer_s)
    return call["callID"], pcs, offers[0]


def arrivals_of(pc: RTCPeerConnection) -> list[tuple[float, int]]:
    receivers = [t.receiver for t in pc.getTransceivers()]
    return ARRIVALS.get(id(receivers[0]), []) if receivers else []


def on_time_share(arrivals: list[tuple[float, int]], t0: float, t1: float) -> tuple[int, int]:
    """(on-time packets, expected packets) inside [t0, t1]: lateness against the RTP clock."""
    inside = [(t, ts) for t, ts in arrivals if t0 <= t <= t1]
    expected = round((t1 - t0) / 0.02)
    if not inside:
        return 0, expected
    times = np.array([t for t, _ in inside])
    stamps = np.array([ts for _, ts in inside], dtype=np.int64)
    stamps = np.unwrap(stamps, period=2**32).astype(np.float64) if stamps.size > 1 else stamps
    schedule = times[0] + (stamps - stamps[0]) / RATE
    # The earliest packet defines the clock's phase; lateness is measured against it.
    offset = np.min(times - schedule)
    late = (times - schedule - offset) > ON_TIME
    return int(np.sum(~late)), expected


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--hangup", action="store_true", help="POST /call/hangup at the end")
    parser.add_argument(
        "--participants",
        type=int,
        default=1,
        choices=sorted(SEATS),
        help="peer connections per call: 1 = the plain call; 3 = agent + whisper + barge",
    )
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])
    packets = encode_tone()
    calls = []
    async with aiohttp.ClientSession() as http:
        for _ in range(args.calls):
            calls.append(await place_call(http, args.base, packets, args.participants))
        await asyncio.sleep(args.warmup)
        t0 = time.monotonic()
        print(f"WINDOW_START {t0}", flush=True)
        await asyncio.sleep(args.window)
        t1 = time.monotonic()
        print(f"WINDOW_END {t1}", flush=True)
        per_call = []  # the agent's downlink (what WhatsApp sends it)
        per_seat = []  # every participant's downlink (its own mix)
        for _, pcs, _ in calls:
            per_call.append(on_time_share(arrivals_of(pcs[0]), t0, t1))
            per_seat += [on_time_share(arrivals_of(pc), t0, t1) for pc in pcs]
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
    on_time = sum(a for a, _ in per_call)
    expected = sum(b for _, b in per_call)
    seats_on_time = sum(a for a, _ in per_seat)
    seats_expected = sum(b for _, b in per_seat)
    print(
        json.dumps(
            {
                "calls": args.calls,
                "participants": args.participants,
                "connected": connected,
                "window_s": t1 - t0,
                "window_t0": t0,
                "window_t1": t1,
                "downlink_on_time": on_time / expected if expected else 0.0,
                "downlink_frames_per_call": on_time / max(1, args.calls),
                "downlink_expected_per_call": expected / max(1, args.calls),
                # every participant's own mix, on time, per participant
                "participants_on_time": seats_on_time / seats_expected if seats_expected else 0.0,
                "participant_frames": seats_on_time / max(1, len(per_seat)),
                "offer_to_answer_s": offers,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
