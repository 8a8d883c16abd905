"""The RTP send path alone, per packet: aiortc's ``RTCRtpSender._run_rtp`` against the bridge's
sender on a leg's own RTP session (``bridge/rtc/rtpsend.py`` on ``bridge/rtc/dtls_srtp.py``),
in one process, no network, no pacing.

Both send the same pre-encoded packets (an 80-byte Opus payload each, handed over as fast as
they take them: aiortc's loop reads them from a track, the bridge's clocked sender is handed
them as its tick is) through a stand-in DTLS transport that does what aiortc's
``RTCDtlsTransport._send_rtp`` does, with a real libsrtp session (``--srtp``, default) or none
(to separate SRTP from the loop's own Python); the ICE send is aioice's own, on a nominated
pair whose socket only counts (aiortc's loop goes through ``Connection.send``, the bridge's
its own way to the same ``sendto``: ``DtlsSrtp.send_rtp``). It reports process CPU
time per packet (``time.process_time``: on a shared machine other processes' load changes it
far less than wall-clock time), best of ``--repeat`` runs of ``--packets`` each, alternating
the two loops so drift hits both alike::

    .venv/bin/python -m bench.send_path --json bench/results/send-path-<date>.json

This is a benchmark, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioice
import aioice.ice
import aiortc
from aiortc import RTCPeerConnection, RTCRtpCodecParameters
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import State
from pyee.asyncio import AsyncIOEventEmitter
from pylibsrtp import Policy, Session

from bench.aiortc_track import AiortcPacket
from bridge.media import BusStats
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.rtc.tracks import EncodedPacket
from bridge.tasks import TaskSet

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
PAYLOAD = bytes(80)
"""About a 32 kbit/s Opus frame of 20 ms."""


class Packets(MediaStreamTrack):
    """``n`` pre-encoded packets as fast as the sender takes them, then the end."""

    kind = "audio"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.i = 0

    async def recv(self) -> AiortcPacket:  # type: ignore[override]
        if self.i >= self.n:
            raise MediaStreamError
        self.i += 1
        return AiortcPacket(PAYLOAD, self.i * 960)  # what the bench's aiortc peers send


class Transport(AsyncIOEventEmitter):
    """What both senders use of ``RTCDtlsTransport`` (``_send_rtp`` as aiortc's does it; an
    event emitter, as aiortc's is: ``statechange``)."""

    def __init__(self, srtp: bool) -> None:
        super().__init__()
        policy = Policy(
            key=bytes(30),
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        self._tx_srtp: Any = Session(policy) if srtp else SimpleNamespace(protect=lambda d: d)
        self._state = State.CONNECTED
        self.state = "connected"
        # aioice's connection with a nominated pair, as after ICE; the pair's socket counts.
        connection = aioice.Connection(ice_controlling=True)
        protocol = aioice.ice.StunProtocol(connection)
        protocol.transport = SimpleNamespace(sendto=self._sendto)  # type: ignore[assignment]
        peer = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", 9, "host")
        connection._nominated[1] = aioice.ice.CandidatePair(protocol, peer)
        self.transport = SimpleNamespace(_send=connection.send, _connection=connection)
        self._RTCDtlsTransport__tx_bytes = 0
        self._RTCDtlsTransport__tx_packets = 0
        self.sent = 0

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent += 1

    async def _send_rtp(self, data: bytes) -> None:
        data = self._tx_srtp.protect(data)
        await self.transport._send(data)
        self._RTCDtlsTransport__tx_bytes += len(data)
        self._RTCDtlsTransport__tx_packets += 1


async def per_packet_us(loop: str, packets: int, srtp: bool) -> float:
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("audio").sender
    track = Packets(packets)
    sender.replaceTrack(track)
    transport = Transport(srtp)
    sender.setTransport(transport)  # type: ignore[arg-type]
    if loop == "lean":
        tasks = TaskSet("bench-leg")
        leg = SimpleNamespace(sender=SimpleNamespace(send=None), receiver=SimpleNamespace())
        rtp = RtpLeg(
            RtpSession(1, "bench"),
            codec="opus",
            on_frame=lambda pcm: None,
            stats=BusStats(),
            tasks=tasks,
        )
        wire = DtlsSrtp(rtp, leg, tasks, "bench leg")
        assert wire._attach(transport)
        lean = rtp.sender
        t0 = time.process_time()
        # What the clocked sender does each tick with its track's packet (``LeanSender._tick``),
        # as fast as it takes them.
        for i in range(1, packets + 1):
            lean.send_encoded(EncodedPacket(PAYLOAD, i * 960))
        spent = time.process_time() - t0
        rtp.stop(bye=False)  # no report went out: nothing to say goodbye to
        wire.close()
        await tasks.close()
    else:
        t0 = time.process_time()
        await sender._run_rtp(OPUS)
        spent = time.process_time() - t0
    await pc.close()
    assert transport.sent == packets, transport.sent
    return spent / packets * 1e6


def machine(**extra: Any) -> dict[str, Any]:
    """What a per-packet figure was measured on (the receive path's bench uses it too)."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "load_1m": os.getloadavg()[0],
        **extra,
    }


async def run(packets: int, repeat: int) -> dict[str, Any]:
    best: dict[str, float] = {}
    for _ in range(repeat):
        for srtp in (True, False):
            for loop in ("aiortc", "lean"):
                key = f"{loop}{'' if srtp else ' (no SRTP)'}"
                us = await per_packet_us(loop, packets, srtp)
                best[key] = min(best.get(key, us), us)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "packets": packets,
        "repeat": repeat,
        "us_per_packet": {k: round(v, 2) for k, v in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(run(args.packets, args.repeat))
    for name, us in result["us_per_packet"].items():
        print(f"{name:20s} {us:6.2f} µs of CPU per packet")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
