"""A forwarded packet goes from the source's datagram callback to the other leg's wire with no
task, future or timer (issue 61): real UDP on loopback, the source's socket read by the worker's
poller (``rtc/udp_poll.py``), its handler offering each packet to a ``PassThrough``
(``rtc/passthrough.py``) whose target is the bridge's Opus track (``rtc/tracks.py``) sending on a
second real socket; what the far end receives is checked byte for byte and in order."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from collections.abc import Callable
from typing import Any

from bridge.rtc import udp_poll
from bridge.rtc.passthrough import PassThrough
from bridge.rtc.rtpsend import RtpStream
from bridge.rtc.tracks import OpusBusTrack

from ..support.waits import until

PACKETS = 50


class Quiet:
    """The bus as the target's track sees it while forwarding: nothing decoded (an idle leg)."""

    def take(self, now: float) -> None:
        return None

    def detach(self) -> None:
        pass


class UdpSender:
    """The target leg's wire: one RTP stream, each packet sent at once on a real socket."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.stream = RtpStream(4321, first_seq=7000)
        self.running = True
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.to = to

    def send_rtp(self, plain: bytes) -> None:
        self.sock.sendto(plain, self.to)


class Counting:
    """Counts what the event loop is asked for while :attr:`on` (inside the datagram handler)."""

    NAMES = ("create_future", "create_task", "call_soon", "call_later", "call_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.on = False
        self.asked: dict[str, int] = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            setattr(loop, name, self._counted(name, getattr(loop, name)))

    def _counted(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.asked[name] += 1
            return real(*args, **kwargs)

        return counted


async def test_a_forwarded_packet_crosses_no_task_future_or_timer() -> None:
    loop = asyncio.get_running_loop()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.setblocking(False)
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    source.bind(("127.0.0.1", 0))
    pt = PassThrough(lambda: True)
    track = OpusBusTrack(Quiet())
    track.forward_from(pt, UdpSender(far.getsockname()))
    counting = Counting(loop)
    arrivals: list[float] = []

    def handler(data: bytes, addr: Any, at: float) -> None:
        # The source leg's receive path, reduced to its hand-off: the RTP header read, the
        # payload offered as it arrived.
        seq, ts = struct.unpack_from("!HI", data, 2)
        arrivals.append(at)
        counting.on = True
        try:
            pt.offer(seq, ts, data[12:], at)
        finally:
            counting.on = False

    transport = udp_poll.open_polled(source, asyncio.DatagramProtocol(), handler)
    tasks_before = len(asyncio.all_tasks())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payloads = [bytes([i % 251]) * (60 + i % 7) for i in range(PACKETS)]
    got: list[bytes] = []

    def receive() -> bool:
        while True:
            try:
                got.append(far.recv(2048))
            except BlockingIOError:
                return len(got) == PACKETS

    try:
        for i, payload in enumerate(payloads):
            header = struct.pack("!BBHII", 0x80, 111, 30_000 + i, 960 * i, 99)
            sender.sendto(header + payload, transport.get_extra_info("sockname"))
            if i % 5 == 4:
                await asyncio.sleep(0.004)  # bursts and pauses: read by wake-ups and by ticks
        await until(receive, 2.0, "every forwarded packet at the far end")
    finally:
        transport.close()
        track.stop()
        sender.close()
        far.close()
    assert len(arrivals) == PACKETS and pt.forwarded == PACKETS
    assert counting.asked == dict.fromkeys(Counting.NAMES, 0)  # nothing scheduled per packet
    assert len(asyncio.all_tasks()) == tasks_before
    # What the far end got: every payload untouched, in order, on the target's own numbers
    # (its stream's, continuous), RTP time mapped one frame apart.
    assert [g[12:] for g in got] == payloads
    numbers = [struct.unpack_from("!H", g, 2)[0] for g in got]
    assert numbers == list(range(7000, 7000 + PACKETS))
    stamps = [struct.unpack_from("!I", g, 4)[0] for g in got]
    assert {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)} == {960}
