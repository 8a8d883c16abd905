"""One socket of the :class:`~.udp_poll.UdpPoller` as an asyncio datagram transport: each
datagram read with the kernel's arrival stamp (``SO_TIMESTAMPNS``) and handed on as ``(data,
addr, at)``, ``at`` in the ``time.monotonic()`` base (time is an input: no clock is read where
the datagram is handled). What it tells its poller (a handshake under way, media arriving, a
parked leg's batching, its close) goes through :class:`Poller`; the poller owns the sets and
the clock (``udp_poll.py``'s docstring).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from .counters import drop

log = logging.getLogger(__name__)

RECV_SIZE = 4096
"""Bytes read per datagram: above any media packet or STUN message (``rtc/guard.py`` drops
SRTP above 1 500 bytes)."""
_MSG_TRUNC = int(socket.MSG_TRUNC)  # an int: ``flags & socket.MSG_TRUNC`` is enum arithmetic
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's receive time stamp as a ``timespec`` (socket(7)); the constant is Linux's, which
Python's ``socket`` module does not export."""
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


class Poller(Protocol):
    """What a :class:`PolledTransport` tells the poller that reads it."""

    loop: asyncio.AbstractEventLoop
    handshake: bool
    """A STUN or DTLS datagram was read this round (a handshake under way)."""
    media: bool
    """An RTP datagram was read this round."""

    def batch(self, transport: PolledTransport, on: bool) -> None: ...

    def remove(self, transport: PolledTransport) -> None: ...


TimedHandler = Callable[[bytes, Any, float], None]
"""A socket's receive path that takes each datagram with its arrival: ``(data, addr, at)``,
``at`` in the ``time.monotonic()`` base (module docstring)."""


def is_media(data: bytes) -> bool:
    """Whether a datagram is RTP: RFC 7983's 128–191, and not RTCP (RFC 5761 §4: its
    second byte 192–223)."""
    return len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224


class PolledTransport(asyncio.DatagramTransport):
    """A datagram transport on a socket of the :class:`UdpPoller`."""

    def __init__(
        self,
        poller: Poller,
        sock: socket.socket,
        protocol: Any,
        timed: TimedHandler | None = None,
        checks_over: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._poller = poller
        self._sock = sock
        self._protocol = protocol
        self._timed = timed
        """Where datagrams go with their arrival (else ``protocol.datagram_received``)."""
        self._checks_over = checks_over
        """An ICE socket's: whether its connection's checks are over (a pair nominated). Its
        STUN is then upkeep (RFC 7675 consent checks, a few a second a worker), not a
        handshake's flight to hurry (``udp_poll.py``'s docstring)."""
        self._closing = False
        self.fileno = sock.fileno()
        self._handler_failed = False
        """Its handler raised once already (logged then; only counted since)."""
        self._extra = {"socket": sock, "sockname": sock.getsockname()}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        # Always to an address: the polled sockets are unconnected (a connected one would be
        # TURN's, which stays the loop's).
        if self._closing:
            return
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            drop("send_buffer_full")
        except OSError as exc:
            self._protocol.error_received(exc)

    def batch(self, on: bool) -> None:
        """Read this socket in batches (a parked leg's, module docstring) or, ``False``, as
        every other again."""
        if not self._closing:
            self._poller.batch(self, on)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._poller.remove(self)
        self._sock.close()
        self._poller.loop.call_soon(self._protocol.connection_lost, None)

    abort = close

    def read_one(self, offset: float) -> bool:
        """Hand the next waiting datagram on, with its arrival (``offset``: ``time.time()``
        less ``time.monotonic()``); whether one was waiting."""
        if self._closing:
            return False
        try:
            data, ancillary, flags, addr = self._sock.recvmsg(RECV_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # an ICMP error of an earlier send (ECONNREFUSED, ...)
            self._protocol.error_received(exc)
            return True
        if flags & _MSG_TRUNC:  # larger than any media packet: not one of ours
            drop("oversize")
            return True
        poller = self._poller
        if data and data[0] < 64:  # STUN or DTLS (RFC 7983): a handshake under way, but for
            checks_over = self._checks_over  # STUN once the checks are over (consent)
            if data[0] > 3 or checks_over is None or not checks_over():
                poller.handshake = True
        elif not poller.media and is_media(data):  # once a read: the flag is all it sets
            poller.media = True
        try:
            timed = self._timed
            if timed is None:
                self._protocol.datagram_received(data, addr)
            elif ancillary:
                sec, nsec = _TIMESPEC.unpack_from(ancillary[0][2])
                timed(data, addr, sec + nsec * 1e-9 - offset)
            else:
                timed(data, addr, time.monotonic())
        except Exception:
            # A bug, met again by every datagram that follows: said once per socket (the loop
            # would say it every time), counted in bridge_udp_dropped_total.
            drop("handler_failed")
            if not self._handler_failed:
                self._handler_failed = True
                log.exception("a datagram's handler failed (said once per socket; counted)")
        return True
