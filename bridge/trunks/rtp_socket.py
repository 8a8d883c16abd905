"""A trunk leg's socket: one UDP port for RTP and, multiplexed (RFC 5761), RTCP, in the clear.

:class:`PlainRtp` has the face of :class:`~bridge.rtc.srtpudp.SrtpSocket`, which carries the
SDES case; both latch onto the far end's source address (symmetric RTP, RFC 4961). What the
media needs of either is :class:`Socket` (its packets are read by the leg's RTP session,
``rtc/rtp_session.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..rtc.srtpudp import open_endpoint

log = logging.getLogger(__name__)

Address = tuple[str, int]


class PlainRtp(asyncio.DatagramProtocol):
    """One UDP socket for clear RTP (see the module docstring)."""

    def __init__(
        self,
        name: str,
        on_rtp: Callable[[bytes, float], None],
        on_rtcp: Callable[[bytes, float], None] | None = None,
    ) -> None:
        """``on_rtp`` and ``on_rtcp`` get each packet with its arrival (``rtc/udp_poll.py``)."""
        self.name = name
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        """Where RTCP on this port goes (RFC 5761 multiplexing); ``None``: dropped as junk."""
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp_to: Address | None = None
        self.local: Address = ("", 0)
        self.junk = self.received_packets = 0
        self.rtcp_sent = self.rtcp_received = 0

    async def open(self, host: str, ports: str) -> Address:
        self.transport, self.local = await open_endpoint(self, host, ports, self.datagram_arrived)
        return self.local

    def set_remote(self, rtp: Address, rtcp: Address) -> None:
        self.rtp_to = rtp

    def send_rtp(self, plain: bytes) -> None:
        if self.transport is None or self.transport.is_closing() or self.rtp_to is None:
            return
        self.transport.sendto(plain, self.rtp_to)

    def send_rtcp(self, plain: bytes) -> None:
        """One compound RTCP packet, to where RTP goes (multiplexed, RFC 5761)."""
        if self.transport is None or self.transport.is_closing() or self.rtp_to is None:
            return
        self.transport.sendto(plain, self.rtp_to)
        self.rtcp_sent += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagram_arrived(data, addr, time.monotonic())

    def datagram_arrived(self, data: bytes, addr: Any, at: float) -> None:
        """One datagram, ``at`` its arrival."""
        if len(data) < 8 or data[0] >> 6 != 2:
            self.junk += 1  # not RTP or RTCP version 2
            return
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761 §4)
            if self.on_rtcp is None:
                self.junk += 1
                return
            self.rtcp_received += 1
            handler = self.on_rtcp
        elif len(data) < 12:
            self.junk += 1
            return
        else:
            self.received_packets += 1
            self.rtp_to = (addr[0], addr[1])  # symmetric RTP (RFC 4961)
            handler = self.on_rtp
        try:
            handler(data, at)
        except Exception:
            log.exception("%s: handling a packet", self.name)

    def error_received(self, exc: Exception) -> None:
        pass  # the far end not listening yet (ICMP): the next packet tries again

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Socket(Protocol):
    """What :class:`TrunkMedia` needs of its socket (``PlainRtp`` or ``SrtpSocket``)."""

    def send_rtp(self, plain: bytes) -> None: ...

    def send_rtcp(self, plain: bytes) -> None: ...

    def close(self) -> None: ...
