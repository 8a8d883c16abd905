"""One UDP socket carrying a leg's RTP and RTCP, in the clear (a SIP trunk's RTP/AVP) or as
SRTP and SRTCP with SDES keys (RFC 3711, RFC 4568): no ICE, no DTLS.

* **Keys** (SRTP only): two libsrtp sessions (``pylibsrtp``): one protects what we send with
  our key, one unprotects what arrives with the far end's (each side announces its own key in
  its SDP). Ours is made here for both legs on such a socket (Meta's SDES leg, a trunk's
  phone): fresh for an offer, or in an answer under the tag and suite of the offer's line we
  took (RFC 4568 §7.1.2); an answer to our offer (one line) must keep its suite.
* **Where to**: the far end's address from its SDP (``c=``/``m=``, ``a=rtcp``; an unspecified
  one, RFC 3264 §8.4's hold, keeps the one before) until a packet from it arrives
  (authenticated, with SRTP); then the source of its packets (symmetric RTP, RFC 4961: a far
  end behind NAT is reached where it sends from). With SRTP an unauthenticated packet never
  moves the address, so a spoofed one cannot steal the stream. In the clear nothing tells the
  far end's packets from anyone's, so the source is learnt once, from the first packet, and
  packets from elsewhere are dropped and counted (:attr:`RtpSocket.foreign`), as Asterisk's
  ``strictrtp`` does against "RTP bleed": else one packet from anyone who reached the port took
  the call's audio, the far end hearing nothing. An SDP with a new address (a re-INVITE's) is
  learnt again; the same SDP again (a session refresh) keeps what was learnt. Multiplexed RTCP
  (sent where RTP goes) follows RTP's source until RTCP comes from elsewhere (in the clear,
  from the learnt source's host only).
* **One port**: RTP and RTCP arrive on the same socket (RFC 5761 demultiplexing: packet types
  192-223 are RTCP); our SDP says so with ``a=rtcp-mux`` and ``a=rtcp:`` our port.
* **Hostile input**: anything that is not RTP/RTCP version 2, arrives before the keys, or fails
  SRTP authentication or replay protection is dropped and counted, never raised.
* **libsrtp straight** (:class:`LeanSrtp`): a packet's protect and unprotect, SRTP and
  SRTCP, call libsrtp with the pylibsrtp session's own state and buffer, without its
  wrapper's per-packet frames and allocation; the DTLS legs' sessions (``rtc/dtls_srtp.py``)
  are called the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

from ..errors import BadOffer
from . import udp_poll
from .ports import bind_in_range, port_scope
from .sdes import Crypto, answer_crypto, new_crypto

log = logging.getLogger(__name__)

Address = tuple[str, int]


class LeanSrtp:
    """One ``pylibsrtp.Session``'s per-packet calls (SRTP and SRTCP, each with the room
    pylibsrtp leaves for its trailer) straight into libsrtp: the same libsrtp
    session, buffer, length limits and errors (``pylibsrtp.Error``), without the wrapper's
    three Python frames and its ``int *`` allocated a packet (pylibsrtp 1.0's ``Session``
    protect: ~3.4 µs a packet on this host, ~1.5 µs called so; docs/performance.md). It holds
    the session, whose libsrtp state lives as long as the session does. :func:`lean_srtp`
    makes one, or gives the session itself back where its internals are not pylibsrtp 1.0's.
    """

    __slots__ = ("_buffer", "_cdata", "_length", "_size", "_state", "session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self.session = session
        self._state = session._srtp[0]
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._size = len(self._cdata)
        self._length = _ffi.new("int *")

    def protect(self, packet: bytes) -> bytes:
        """SRTP-protect one RTP packet (``Session.protect``)."""
        return self._run(_protect, packet, self._size - pylibsrtp.SRTP_MAX_TRAILER_LEN)

    def unprotect(self, packet: bytes) -> bytes:
        """Authenticate and decrypt one SRTP packet (``Session.unprotect``)."""
        return self._run(_unprotect, packet, self._size)

    def _run(self, call: Any, packet: bytes, room: int) -> bytes:
        """``packet`` through libsrtp's ``call`` in the session's buffer (``room`` bytes of it
        for the packet), as pylibsrtp's own methods do."""
        n = len(packet)
        if n > room:
            raise ValueError("packet is too long")
        length, buffer = self._length, self._buffer
        length[0] = n
        buffer[0:n] = packet
        rc = call(self._state, self._cdata, length)
        if rc:
            pylibsrtp._srtp_assert(rc)
        return buffer[0 : length[0]]

    def protect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP-protect one compound RTCP packet (``Session.protect_rtcp``)."""
        return self._run(_protect_rtcp, packet, self._size - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Authenticate and decrypt one SRTCP packet (``Session.unprotect_rtcp``)."""
        return self._run(_unprotect_rtcp, packet, self._size)


def lean_srtp(session: Any) -> Any:
    """``session``'s per-packet calls as a :class:`LeanSrtp`, or ``session`` itself (``None``
    stays ``None``) where it is not a pylibsrtp 1.0 ``Session`` (another version's internals,
    a stand-in): the same four methods either way."""
    if session is None or not _LEAN or not isinstance(session, pylibsrtp.Session):
        return session
    try:
        return LeanSrtp(session)
    except (AttributeError, TypeError, IndexError):
        return session


try:
    from pylibsrtp._binding import ffi as _ffi
    from pylibsrtp._binding import lib as _lib

    _protect, _unprotect = _lib.srtp_protect, _lib.srtp_unprotect
    _protect_rtcp, _unprotect_rtcp = _lib.srtp_protect_rtcp, _lib.srtp_unprotect_rtcp
    _LEAN = pylibsrtp.__version__.startswith("1.0.") and hasattr(pylibsrtp, "_srtp_assert")
except (ImportError, AttributeError):  # pragma: no cover - another pylibsrtp
    _LEAN = False


def bind_socket(host: str, ports: str) -> socket.socket:
    """A non-blocking UDP socket on ``host``, inside ``ports`` (``BRIDGE_RTP_PORTS``) when set,
    else on an ephemeral port; raises ``PortsExhausted`` (503) when the range is full."""
    with port_scope(ports) as allocator:
        return bind_in_range(allocator, (host, 0), None)


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


class RtpSocket(asyncio.DatagramProtocol):
    """The socket of one RTP leg (module docstring), SRTP when ``srtp`` (its keys from
    :meth:`follow`, or :meth:`set_keys`). ``on_rtp`` and ``on_rtcp`` get the plaintext and its
    arrival, synchronously in the datagram callback."""

    def __init__(
        self,
        name: str,
        on_rtp: Callable[[bytes, float], None],
        on_rtcp: Callable[[bytes, float], None],
        srtp: bool = False,
    ) -> None:
        self.name = name
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.srtp = srtp
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.rtp_to: Address | None = None
        self.rtcp_to: Address | None = None
        self.crypto: Crypto | None = None
        """Our key (with SRTP) once :meth:`open` made it; a re-offer's new line replaces it."""
        self._tx: LeanSrtp | pylibsrtp.Session | None = None
        self._rx: LeanSrtp | pylibsrtp.Session | None = None
        self._keys: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None
        """The (key, profile) of ``_tx`` and of ``_rx`` (:meth:`set_keys`)."""
        self._closed = False
        self.latched = False
        """A packet from the far end arrived since its SDP's address was set."""
        self._announced: Address | None = None
        """The RTP address the far end's latest SDP gave (:meth:`set_remote`)."""
        self.foreign = 0
        """Packets in the clear from elsewhere than the learnt source (dropped)."""
        self.rtcp_sent = self.rtcp_received = 0
        self.auth_failed = 0
        """SRTP/SRTCP packets that failed authentication or replay protection (dropped)."""
        self.junk = 0
        """Datagrams that are not RTP/RTCP version 2, or came before the keys (dropped)."""
        self.protect_errors = 0

    async def open(self, host: str, ports: str, offered: Crypto | None = None) -> Address:
        """Bind (``bind_socket``) and start receiving; returns the local address. With SRTP,
        our key: for an answer to the far end's ``offered`` line, else for an offer."""
        if self.srtp:
            self.crypto = new_crypto() if offered is None else answer_crypto(offered)
        self.transport, self.local = await open_endpoint(self, host, ports, self.datagram_arrived)
        if self._closed:  # closed while the loop bound it (its own transports): not left open
            self.transport.close()
        return self.local

    def check_answer(self, theirs: Crypto | None) -> None:
        """The answer to our offer (one ``a=crypto`` line) keeps its suite: :class:`BadOffer`."""
        if self.crypto is not None and theirs is not None and theirs.suite != self.crypto.suite:
            raise BadOffer(f"the answer's a=crypto suite {theirs.suite} is not ours")

    def follow(self, address: str, port: int, rtcp: Address, theirs: Crypto | None) -> None:
        """The far end's SDP (module docstring): its key with ours, and where it takes RTP and
        RTCP."""
        if self.crypto is not None and theirs is not None:
            self.set_keys(self.crypto.key, theirs.key, self.crypto.profile)
        if not ipaddress.ip_address(address).is_unspecified:
            self.set_remote((address, port), rtcp)

    def set_keys(self, ours: bytes, theirs: bytes, profile: int) -> None:
        """Our master key||salt protects what we send; the far end's unprotects what it sends.
        A direction whose key and suite stay (a re-INVITE's hold, resume or session refresh)
        keeps its SRTP context: a new one would start its rollover counter at 0 again, and once
        the sequence numbers have wrapped (~22 minutes at 50 packets a second) every packet
        after it would fail to authenticate (RFC 4568 §7.1.4: unchanged keys, same context)."""

        def session(key: bytes, ssrc_type: int) -> Any:
            policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
            return lean_srtp(pylibsrtp.Session(policy))

        if self._keys is None or self._keys[0] != (ours, profile):
            self._tx = session(ours, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        if self._keys is None or self._keys[1] != (theirs, profile):
            self._rx = session(theirs, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._keys = ((ours, profile), (theirs, profile))

    def set_remote(self, rtp: Address, rtcp: Address) -> None:
        """Where the far end's SDP says to send (until its packets say otherwise): learnt again
        from its packets when the address is new; the address its SDP gave before keeps where
        its packets came from (a session refresh, a hold and its resume)."""
        if rtp == self._announced and self.latched:
            return
        self._announced = rtp
        self.rtp_to, self.rtcp_to = rtp, rtcp
        self.latched = False

    @property
    def ready(self) -> bool:
        """Keys (with SRTP) and a destination: packets can go out."""
        keyed = self._tx is not None or not self.srtp
        return keyed and self.rtp_to is not None and self.transport is not None

    # -- sending
    def send_rtp(self, plain: bytes) -> None:
        """Protect (with SRTP) and send one RTP packet (dropped while not :attr:`ready`)."""
        tx, to, transport = self._tx, self.rtp_to, self.transport
        if to is None or transport is None or transport.is_closing():
            return
        if tx is not None:
            try:
                plain = tx.protect(plain)
            except pylibsrtp.Error as exc:  # e.g. a number sent twice: this packet, not the call
                self.protect_errors += 1
                if self.protect_errors == 1:
                    log.warning("%s: an RTP packet not sent: %s", self.name, exc)
                return
        elif self.srtp:
            return
        transport.sendto(plain, to)

    def send_rtcp(self, plain: bytes) -> None:
        """Protect (SRTCP, with SRTP) and send one compound RTCP packet."""
        tx, to, transport = self._tx, self.rtcp_to, self.transport
        if to is None or transport is None or transport.is_closing():
            return
        if tx is not None:
            plain = tx.protect_rtcp(plain)
        elif self.srtp:
            return
        transport.sendto(plain, to)
        self.rtcp_sent += 1

    # -- receiving (asyncio.DatagramProtocol)
    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagram_arrived(data, addr, time.monotonic())

    def datagram_arrived(self, data: bytes, addr: Any, at: float) -> None:
        """One datagram, ``at`` its arrival (``rtc/udp_poll.py``)."""
        if len(data) < 8 or data[0] >> 6 != 2:
            self.junk += 1  # not RTP or RTCP version 2
            return
        rtcp = 192 <= data[1] <= 223  # RFC 5761 §4
        rx = self._rx
        if not rtcp and len(data) < 12:
            self.junk += 1
            return
        if rx is not None:
            try:
                data = rx.unprotect_rtcp(data) if rtcp else rx.unprotect(data)
            except pylibsrtp.Error:
                self.auth_failed += 1
                return
        elif self.srtp:
            self.junk += 1  # before the keys
            return
        source: Address = (addr[0], addr[1])
        if rx is None and self.latched and self._stranger(source, rtcp):
            self.foreign += 1  # in the clear, from elsewhere than the learnt far end
            if self.foreign == 1:
                log.warning(
                    "%s: RTP from %s:%d dropped: the far end's media comes from %s:%d (plain "
                    "RTP keeps the source it learnt; an SDP with a new address moves it)",
                    self.name,
                    *source,
                    *(self.rtp_to or ("", 0)),
                )
            return
        if rtcp:
            self.rtcp_received += 1
            self.rtcp_to = source
            self._deliver(self.on_rtcp, data, at)
            return
        if source != self.rtp_to:
            if self.latched:
                log.info("%s: the far end's media moved to %s:%d", self.name, *source)
            if self.rtcp_to == self.rtp_to:
                self.rtcp_to = source  # multiplexed RTCP goes where RTP goes
            self.rtp_to = source
        self.latched = True
        self._deliver(self.on_rtp, data, at)

    def _stranger(self, source: Address, rtcp: bool) -> bool:
        """Whether a packet in the clear comes from elsewhere than the learnt far end: its RTP
        source, or for RTCP that source's host (RFC 3550 §11: RTCP may come from the next
        port up)."""
        learnt = self.rtp_to
        if learnt is None:
            return False
        return source[0] != learnt[0] if rtcp else source != learnt

    def _deliver(self, handler: Callable[[bytes, float], None], plain: bytes, at: float) -> None:
        try:
            handler(plain, at)
        except Exception:  # one bad packet must not stop the leg
            log.exception("%s: handling a packet", self.name)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and the like (the far end not listening yet)

    def close(self) -> None:
        """Close the socket (idempotent; one still binding is closed once bound: :meth:`open`);
        the sessions go with it."""
        self._closed = True
        if self.transport is not None:
            self.transport.close()
        self._tx = self._rx = None
