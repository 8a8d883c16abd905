"""The RTP receive path alone, per packet: aiortc's (aioice's queue → ``RTCDtlsTransport``'s
receive task → ``RTCRtpReceiver``) against the bridge's own: the leg's wire
(``bridge/rtc/dtls_srtp.py``) and RTP session (``bridge/rtc/rtp_session.py``), in one process,
no network.

Both take the same SRTP-protected Opus packets (an 80-byte payload, the ``mid`` and audio-level
header extensions a browser sends) from the UDP guard's datagram callback (a real aioice
``StunProtocol`` and ``Connection``, a real aiortc DTLS transport with a real libsrtp session,
a real ``RTCRtpReceiver`` with its RTCP statistics) to the leg's receiver, which here only
counts (``Receiver.push`` is the same on both paths). "aiortc" is aiortc's own path as the
bridge had it before its receive path was its own: the guard handed every datagram to aioice's
own ``datagram_received`` (which tries to parse it as STUN first), and the transport's receive
task woke per packet (the RED and RFC 4733 hooks the bridge had on that path are gone with
it, so the reference is a little cheaper than the bridge's code of then). On uvloop (the
bridge's default) unless ``--loop asyncio``. Each packet is followed by one turn of the event
loop (``asyncio.sleep(0)``), as a datagram arriving from the socket would be. It reports
process CPU time per packet (``time.process_time``), best of ``--repeat`` runs of ``--packets``
each, alternating the paths so drift hits both alike, and libsrtp's unprotect alone::

    .venv/bin/python -m bench.recv_path --json bench/results/recv-path-<date>.json

This is a benchmark, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioice.ice
from aiortc import RTCCertificate, RTCIceGatherer, RTCIceTransport, RTCRtpCodecParameters
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import (
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from pylibsrtp import Policy, Session

from bench.send_path import machine
from bridge.loop import install_event_loop
from bridge.media import BusStats
from bridge.rtc import guard, hooks
from bridge.rtc.dtls_srtp import DtlsSrtp
from bridge.rtc.red import RedStats
from bridge.rtc.rfc4733 import DtmfDetector
from bridge.rtc.rtp_leg import RtpLeg
from bridge.rtc.rtp_session import RtpSession
from bridge.tasks import TaskSet

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
RED_PT, DTMF_PT = 63, 126
SSRC = 0x12345678
PAYLOAD = bytes(80)
"""About a 32 kbit/s Opus frame of 20 ms."""
KEY = bytes(range(30))
ADDR = ("127.0.0.1", 40000)
MID_ID, LEVEL_ID = 4, 1
# One-byte header extensions (RFC 8285): audio level (1 byte), mid "0", padded to 4 bytes.
EXTENSION = struct.pack("!HH", 0xBEDE, 1) + bytes([LEVEL_ID << 4, 0x20, MID_ID << 4]) + b"0"


def packets(n: int) -> list[bytes]:
    """``n`` SRTP packets of one stream, as a browser sends them."""
    tx = Session(
        Policy(
            key=KEY,
            ssrc_type=Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    out = []
    for i in range(n):
        header = struct.pack("!BBHII", 0x90, OPUS.payloadType, i & 0xFFFF, i * 960, SSRC)
        out.append(tx.protect(header + EXTENSION + PAYLOAD))
    return out


class Buffer:
    """Stands in for aiortc's jitter buffer on its path: every packet to the sink, nothing to
    aiortc's decoder (as the bridge's stand-in did)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def add(self, packet: Any) -> tuple[bool, None]:
        self.sink.packet(packet.sequence_number, packet.timestamp, packet._data, time.monotonic())
        return False, None


class Sink:
    """Stands in for the leg's ``Playout``: counts what it is handed; also aiortc's decoder
    queue (its idle thread blocks in ``get`` until the receiver stops)."""

    def __init__(self) -> None:
        self.count = 0
        self._stop: queue.Queue[None] = queue.Queue()

    def packet(self, seq: int, timestamp: int, payload: bytes, at: float) -> None:
        self.count += 1

    def redundant(self, timestamp: int, payload: bytes, at: float) -> None:
        pass

    def put(self, task: Any) -> None:
        if task is None:
            self._stop.put(None)

    def get(self) -> None:
        return self._stop.get()


def old_guard(protocol: Any, data: bytes, addr: tuple[str, int]) -> None:
    """The UDP guard's datagram callback before the lean path: aioice's own after the verdict."""
    if guard.verdict(protocol, data, addr) is None:
        guard._ORIGINAL_STUN(protocol, data, addr)


def keyed_dtls() -> tuple[RTCDtlsTransport, Any]:
    """An aiortc DTLS transport as its handshake leaves it, SRTP's receive key :data:`KEY`,
    its ICE pair nominated to :data:`ADDR`: ``(dtls, the pair's protocol)``, the protocol the
    UDP guard hands each datagram."""
    hooks.install()
    ice = RTCIceTransport(RTCIceGatherer())
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    dtls._rx_srtp = Session(
        Policy(
            key=KEY,
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    dtls._state = State.CONNECTED
    dtls._RTCDtlsTransport__handshake_done = True  # type: ignore[attr-defined]
    connection = ice._connection
    protocol = aioice.ice.StunProtocol(connection)
    protocol.local_candidate = SimpleNamespace(component=1)  # type: ignore[assignment]
    connection._nominated[1] = SimpleNamespace(protocol=protocol, remote_addr=ADDR)  # type: ignore[assignment]
    return dtls, protocol


async def per_packet_us(path: str, data: list[bytes]) -> float:
    dtls, protocol = keyed_dtls()

    receiver = RTCRtpReceiver("audio", dtls)
    receiver._track = RemoteStreamTrack("audio")
    sink = Sink()
    tasks = TaskSet("bench-leg")
    session = RtpSession(1, "bench")
    if path == "session":
        leg = RtpLeg(
            session, codec="opus", on_frame=lambda pcm: None, stats=BusStats(), tasks=tasks
        )
        session.playout = sink  # type: ignore[assignment]
        session.take_red(RED_PT, OPUS.payloadType, RedStats())
        session.take_dtmf(lambda: DTMF_PT, DtmfDetector(lambda d, ms: None))
        transceiver = SimpleNamespace(receiver=receiver, sender=SimpleNamespace(send=None))
        wire = DtlsSrtp(leg, transceiver, tasks, "bench leg")
        feed: Any = guard.guarded_datagram_received
    else:
        receiver._RTCRtpReceiver__jitter_buffer = Buffer(sink)  # type: ignore[attr-defined, arg-type]
        receiver._RTCRtpReceiver__decoder_queue = sink  # type: ignore[attr-defined]
        feed = old_guard
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[OPUS],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(
                    id=LEVEL_ID, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
                ),
                RTCRtpHeaderExtensionParameters(
                    id=MID_ID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"
                ),
            ],
            encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=OPUS.payloadType)],
            muxId="0",
        )
    )
    run = asyncio.ensure_future(dtls._RTCDtlsTransport__run())  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    t0 = time.process_time()
    for d in data:
        feed(protocol, d, ADDR)
        await asyncio.sleep(0)
    spent = time.process_time() - t0
    await asyncio.sleep(0)
    if path == "session":
        received = session.reports.reception.packets_received
        await tasks.close()
        wire.close()
    else:
        received = receiver._RTCRtpReceiver__remote_streams[SSRC].packets_received  # type: ignore[attr-defined]
    assert sink.count == len(data) == received, (sink.count, received)
    await receiver.stop()
    run.cancel()
    try:
        await run
    except BaseException:
        pass
    return spent / len(data) * 1e6


def unprotect_us(data: list[bytes]) -> float:
    rx = Session(
        Policy(
            key=KEY,
            ssrc_type=Policy.SSRC_ANY_INBOUND,
            srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
    )
    t0 = time.process_time()
    for d in data:
        rx.unprotect(d)
    return (time.process_time() - t0) / len(data) * 1e6


async def run(n: int, repeat: int, loop: str = "asyncio") -> dict[str, Any]:
    data = packets(n)
    best: dict[str, float] = {}
    for _ in range(repeat):
        for path in ("aiortc", "session"):
            us = await per_packet_us(path, data)
            best[path] = min(best.get(path, us), us)
        us = unprotect_us(data)
        best["of which SRTP unprotect"] = min(best.get("of which SRTP unprotect", us), us)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(event_loop=loop),
        "packets": n,
        "repeat": repeat,
        "us_per_packet": {k: round(v, 2) for k, v in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the bridge's default: uvloop",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(run(args.packets, args.repeat, install_event_loop(args.loop == "uvloop")))
    for name, us in result["us_per_packet"].items():
        print(f"{name:24s} {us:6.2f} µs of CPU per packet")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
