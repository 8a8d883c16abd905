"""One UDP socket carrying SRTP and SRTCP with SDES keys (RFC 3711, RFC 4568): no ICE, no DTLS.

* **Keys**: two libsrtp sessions (``pylibsrtp``): one protects what we send with our key, one
  unprotects what arrives with the far end's (each side announces its own key in its SDP).
* **Where to**: the far end's address from its SDP (``c=``/``m=``, ``a=rtcp``) until a packet
  from it authenticates; then the source of its authenticated packets (symmetric RTP, RFC 4961:
  a far end behind NAT is reached where it sends from). An unauthenticated packet never moves
  the address, so a spoofed one cannot steal the stream.
* **One port**: RTP and RTCP arrive on the same socket (RFC 5761 demultiplexing: packet types
  192-223 are RTCP); our SDP says so with ``a=rtcp-mux`` and ``a=rtcp:`` our port.
* **Hostile input**: anything that is not RTP/RTCP version 2, arrives before the keys, or fails
  SRTP authentication or replay protection is dropped and counted, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

from . import udp_poll
from .ports import ephemeral, parse_port_range, port_scope

log = logging.getLogger(__name__)

Address = tuple[str, int]


def bind_socket(host: str, ports: str) -> socket.socket:
    """A non-blocking UDP socket on ``host``, inside ``ports`` (``BRIDGE_RTP_PORTS``) when set,
    else on an ephemeral port; raises ``PortsExhausted`` (503) when the range is full."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if parse_port_range(ports):
        with port_scope(ports) as allocator:
            assert allocator is not None
            return allocator.bind(family, host)
    return ephemeral(family, host)


async def open_endpoint(
    protocol: asyncio.DatagramProtocol, host: str, ports: str, timed: udp_poll.TimedHandler
) -> tuple[asyncio.DatagramTransport, Address]:
    """``protocol`` receiving on a socket from :func:`bind_socket`: its transport and the local
    address (the socket closed if the loop cannot take it). Polled, its datagrams go to
    ``timed`` with the socket's arrival stamp (``rtc/udp_poll.py``); the loop's transport
    calls ``protocol.datagram_received``, which passes them on with now."""
    sock = bind_socket(host, ports)
    loop = asyncio.get_running_loop()
    try:
        if udp_poll.enabled:
            transport: asyncio.DatagramTransport = udp_poll.open_polled(sock, protocol, timed)
        else:
            transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return transport, sock.getsockname()[:2]


class SrtpSocket(asyncio.DatagramProtocol):
    """The socket of one SDES-SRTP leg (module docstring). ``on_rtp`` and ``on_rtcp`` get
    authenticated plaintext and its arrival, synchronously in the datagram callback."""

    def __init__(
        self,
        name: str,
        on_rtp: Callable[[bytes, float], None],
        on_rtcp: Callable[[bytes, float], None],
    ) -> None:
        self.name = name
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.rtp_to: Address | None = None
        self.rtcp_to: Address | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self.latched = False
        self.sent_packets = self.sent_bytes = 0
        self.received_packets = self.received_bytes = 0
        self.rtcp_sent = self.rtcp_received = 0
        self.auth_failed = 0
        """SRTP/SRTCP packets that failed authentication or replay protection (dropped)."""
        self.junk = 0
        """Datagrams that are not RTP/RTCP version 2, or came before the keys (dropped)."""
        self.send_errors = 0
        self.protect_errors = 0
        self.moves = 0
        """How often the far end's source address changed (latching)."""

    async def open(self, host: str, ports: str) -> Address:
        """Bind (``bind_socket``) and start receiving; returns the local address."""
        self.transport, self.local = await open_endpoint(self, host, ports, self.datagram_arrived)
        return self.local

    def set_keys(self, ours: bytes, theirs: bytes, profile: int) -> None:
        """Our master key||salt protects what we send; the far end's unprotects what it sends."""
        self._tx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=ours, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
            )
        )
        self._rx = pylibsrtp.Session(
            pylibsrtp.Policy(
                key=theirs, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
            )
        )

    def set_remote(self, rtp: Address, rtcp: Address) -> None:
        """Where the far end's SDP says to send (until its packets say otherwise)."""
        self.rtp_to, self.rtcp_to = rtp, rtcp

    @property
    def ready(self) -> bool:
        """Keys and a destination: packets can go out."""
        return self._tx is not None and self.rtp_to is not None and self.transport is not None

    # -- sending
    def send_rtp(self, plain: bytes) -> None:
        """Protect and send one RTP packet (dropped, counted, while not :attr:`ready`)."""
        tx, to, transport = self._tx, self.rtp_to, self.transport
        if tx is None or to is None or transport is None or transport.is_closing():
            self.send_errors += 1
            return
        try:
            data = tx.protect(plain)
        except pylibsrtp.Error as exc:  # e.g. a number sent twice: this packet, not the call
            self.protect_errors += 1
            if self.protect_errors == 1:
                log.warning("%s: an RTP packet not sent: %s", self.name, exc)
            return
        transport.sendto(data, to)
        self.sent_packets += 1
        self.sent_bytes += len(data)

    def send_rtcp(self, plain: bytes) -> None:
        """Protect (SRTCP) and send one compound RTCP packet."""
        tx, to, transport = self._tx, self.rtcp_to, self.transport
        if tx is None or to is None or transport is None or transport.is_closing():
            self.send_errors += 1
            return
        transport.sendto(tx.protect_rtcp(plain), to)
        self.rtcp_sent += 1

    # -- receiving (asyncio.DatagramProtocol)
    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagram_arrived(data, addr, time.monotonic())

    def datagram_arrived(self, data: bytes, addr: Any, at: float) -> None:
        """One datagram, ``at`` its arrival (``rtc/udp_poll.py``)."""
        rx = self._rx
        if rx is None or len(data) < 12 or data[0] >> 6 != 2:
            self.junk += 1
            return
        source: Address = (addr[0], addr[1])
        rtcp = 192 <= data[1] <= 223  # RFC 5761 §4
        try:
            plain = rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)
        except pylibsrtp.Error:
            self.auth_failed += 1
            return
        if rtcp:
            self.rtcp_received += 1
            if source != self.rtcp_to:
                self.rtcp_to = source
            self._deliver(self.on_rtcp, plain, at)
            return
        self.received_packets += 1
        self.received_bytes += len(data)
        if source != self.rtp_to:
            if self.latched:
                self.moves += 1
                log.info("%s: the far end's media moved to %s:%d", self.name, *source)
            self.rtp_to = source
        self.latched = True
        self._deliver(self.on_rtp, plain, at)

    def _deliver(self, handler: Callable[[bytes, float], None], plain: bytes, at: float) -> None:
        try:
            handler(plain, at)
        except Exception:  # one bad packet must not stop the leg
            log.exception("%s: handling a packet", self.name)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like (the far end not listening yet): counted only.
        self.send_errors += 1

    def close(self) -> None:
        """Close the socket (idempotent); the sessions go with it."""
        if self.transport is not None:
            self.transport.close()
        self._tx = self._rx = None
