"""The worker's media sockets, read once per media tick while datagrams come faster.

On a 2-core VM a datagram that wakes the event loop costs ~40 µs of CPU before any of the
bridge's code runs (the wake-up, the loop's turn, caches gone cold since the last one): more
than the bridge's own work on a forwarded packet. A worker with ten calls receives ~1 000
datagrams a second, one by one, so most of a forwarded call's CPU was wake-ups
(docs/performance.md, *Media sockets on the clock*).

So the media sockets (aioice's host candidates, ``rtc/ice.py``; the SDES and SIP trunk legs'
own, ``rtc/srtpudp.py`` ``open_endpoint``) are not the loop's: they sit in one ``epoll`` set per
worker (:class:`UdpPoller`), read in one of two ways:

- **A wake-up per datagram**, while they are few: each is read at once (call set-up, a quiet
  worker).
- **Once per tick**, from the moment two wake-ups that each read RTP (media: RFC 7983's
  128–191, not RTCP, RFC 5761 §4) come within one tick of the worker clock: the set is read at
  the start of every tick (:attr:`~bridge.media.clock.Phase.INPUT`), before the receivers hand
  on their frames, every datagram that came since the last tick in one wake-up. A tick that
  reads no RTP goes back to a wake-up per datagram, and so does one that finds a STUN or DTLS
  datagram of a handshake: its flights (ICE checks, DTLS) go at once, so a call that starts
  beside others is up as soon as on a quiet worker. STUN on an ICE socket whose connection
  has nominated its pair is no handshake's (``rtc/ice.py``): it is RFC 7675's consent checks,
  each leg's and its peer's every ~5 s, which a tick's wait does not hurt; before, each took
  the set off the clock for a few wake-ups, ~13 a second with ten forwarded calls.

Only media puts the set on the clock: an idle leg's upkeep (RTCP reports, ICE consent checks,
a parked leg's keepalive: a few datagrams a second) is read as it comes, however closely two
of them happen to follow each other. Before, two such datagrams within 20 ms (an RTCP report
and a consent check; twenty idle legs' reports) put the set on the clock for a tick or more:
per-tick work for legs that carry nothing, and in a test whose peer shares the worker, a clock
seen running after an idle leg had settled (``tests/integration/test_desk_leg.py``).

**A parked leg's sockets are read in batches** (an agent's always-connected leg between calls,
``rtc/connected.py``: :meth:`PolledTransport.batch`). What comes to it is upkeep only — the far
end's RTCP (an aiortc app's sender and receiver report a second each) and ICE consent checks
both ways — and a wake-up for each was most of what an idle leg cost: ~2 a second per leg, each
on cold caches. Its sockets sit in a second ``epoll`` set, read the same two ways: a wake-up per
datagram while they are few, and once two wake-ups come within :data:`BATCH` (0.2 s), every
``BATCH`` on the worker clock (one-shot callbacks on its grid, whose whole seconds the
keepalive pulse and the parked legs' RTCP share) until a read finds nothing. A datagram waits
at most ``BATCH``: under the 0.5 s an aioice peer gives a consent check's answer (RFC 7675 has
no shorter bound), and nothing it carries is timed by its read (the arrival is the kernel's
stamp). Lent to a call, the leg's sockets go back to the first set at once (a datagram waiting
in the second is read at the next wake-up, the first set being level-triggered too); before
that, what the agent sends is dropped at its held receiver anyway.

Waiting for the tick does not delay decoded audio: its frame is taken in that tick's receive
phase either way. A forwarded packet (pass-through) waits up to one tick before it goes on.

**Time is an input.** Each datagram is handed on with its arrival time, the kernel's
(``SO_TIMESTAMPNS``, carried to the ``time.monotonic()`` base): a socket opened with a
``timed`` handler (:data:`TimedHandler`, the bridge's own receive paths: ``rtc/guard.py`` for
ICE, ``rtc/srtpudp.py``) gets ``(data, addr, at)``; anything else
(a plain ``asyncio.DatagramProtocol``) gets ``datagram_received(data, addr)``. Nothing
downstream reads a clock or a global to learn when its packet came: the sessions take ``at``
with the packet (``rtc/rtp_session.py``, ``rtc/uplink.py``, ``rtc/rtcp.py``); a datagram from
the loop's own transports is stamped when its callback runs. TURN's sockets stay the loop's
(relayed media is rare, and aioice's TURN client owns its socket's life).

Sending is the socket's ``sendto``, at once, as the loop's transport does; a full send buffer
drops the packet (counted: ``bridge_udp_dropped_total{reason="send_buffer_full"}``), as the
network would.
A read on the clock that raises (a bug: the handlers' own failures are caught per datagram)
is dropped by the clock, which tells the poller: the set is then read as datagrams wake the loop
again, rather than never again for every call of the worker.

``BRIDGE_UDP_POLL=false`` gives every new socket to the loop instead.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..media.clock import Phase, worker_clock
from .counters import READS
from .polled_transport import SO_TIMESTAMPNS, PolledTransport, TimedHandler

log = logging.getLogger(__name__)

MAX_ROUNDS = 64
"""Datagrams read from one socket per read of the set; more stay for the next
(level-triggered)."""
BATCH = 0.2
"""Seconds a parked leg's datagram may wait to be read with others (module docstring)."""


class UdpPoller:
    """One worker's media sockets in one ``epoll`` set (module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._transports: dict[int, PolledTransport] = {}
        self._waking = False
        self._untick: Callable[[], None] | None = None
        self._last_wake = -1.0
        self.handshake = False
        """A STUN or DTLS datagram came in the latest read (set by the transports)."""
        self.media = False
        """An RTP datagram came in the latest read (set by the transports): only media puts
        the set on the clock (module docstring)."""
        self._parked = select.epoll()
        """The second set: parked legs' sockets, read in batches (module docstring)."""
        self._parked_fds: set[int] = set()
        self._parked_waking = False
        self._parked_cancel: Callable[[], None] | None = None
        self._parked_last = -1.0

    @property
    def on_clock(self) -> bool:
        return self._untick is not None

    def open(
        self,
        sock: socket.socket,
        protocol: Any,
        timed: TimedHandler | None = None,
        checks_over: Callable[[], bool] | None = None,
    ) -> PolledTransport:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        transport = PolledTransport(self, sock, protocol, timed, checks_over)
        self._epoll.register(transport.fileno, select.EPOLLIN)
        self._transports[transport.fileno] = transport
        if self._untick is None:
            self._wake_per_datagram()
        protocol.connection_made(transport)
        return transport

    def remove(self, transport: PolledTransport) -> None:
        if self._transports.pop(transport.fileno, None) is None:
            return
        if transport.fileno in self._parked_fds:
            self._unpark(transport.fileno)
        else:
            self._epoll.unregister(transport.fileno)
        if not self._transports:  # the worker's last media socket: nothing left to read
            if self._waking:
                self.loop.remove_reader(self._epoll.fileno())
                self._waking = False
            self._leave_clock()
            self._epoll.close()
            self._parked.close()
            if _pollers.get(self.loop) is self:
                del _pollers[self.loop]

    # -- the parked legs' sockets (module docstring)
    def batch(self, transport: PolledTransport, on: bool) -> None:
        fd = transport.fileno
        if self._transports.get(fd) is not transport or on == (fd in self._parked_fds):
            return
        if on:
            self._epoll.unregister(fd)
            self._parked.register(fd, select.EPOLLIN)
            self._parked_fds.add(fd)
            if self._parked_cancel is None and not self._parked_waking:
                self.loop.add_reader(self._parked.fileno(), self._parked_woken)
                self._parked_waking = True
        else:
            self._unpark(fd)
            self._epoll.register(fd, select.EPOLLIN)

    def _unpark(self, fd: int) -> None:
        self._parked.unregister(fd)
        self._parked_fds.discard(fd)
        if self._parked_fds:
            return
        if self._parked_waking:
            self.loop.remove_reader(self._parked.fileno())
            self._parked_waking = False
        cancel, self._parked_cancel = self._parked_cancel, None
        if cancel is not None:
            cancel()

    def _parked_woken(self) -> None:
        READS["parked_wakeup"] += 1
        self._read(self._parked)
        now = time.monotonic()
        if now - self._parked_last < BATCH:  # they come faster: in batches from now on
            self.loop.remove_reader(self._parked.fileno())
            self._parked_waking = False
            self._parked_next(now)
        self._parked_last = now

    def _parked_next(self, now: float) -> None:
        # The next point of the grid (``now`` may be a tick's time, a hair before its point).
        at = (round(now / BATCH) + 1) * BATCH
        self._parked_cancel = worker_clock().call_at(at, self._parked_tick)

    def _parked_tick(self, now: float) -> None:
        self._parked_cancel = None
        if not self._parked_fds:
            return
        READS["parked_batch"] += 1
        if self._read(self._parked):
            self._parked_next(now)
        else:  # a quiet while: a wake-up per datagram again
            self._parked_last = -1.0
            self.loop.add_reader(self._parked.fileno(), self._parked_woken)
            self._parked_waking = True

    def _wake_per_datagram(self) -> None:
        if not self._waking:
            self.loop.add_reader(self._epoll.fileno(), self._woken)
            self._waking = True

    def _leave_clock(self) -> None:
        if self._untick is not None:
            self._untick()
            self._untick = None

    def _woken(self) -> None:
        READS["wakeup"] += 1
        self.read()
        if not self.media:
            return  # upkeep (RTCP, consent checks, keepalives): never a reason to tick
        now = time.monotonic()
        clock = worker_clock()
        if now - self._last_wake < clock.period and self._transports and not self.handshake:
            # Media comes faster than the ticks: read it on the clock from now on.
            self.loop.remove_reader(self._epoll.fileno())
            self._waking = False
            self._untick = clock.register(self._tick, Phase.INPUT, self._tick_failed)
        self._last_wake = now

    def _tick_failed(self) -> None:
        """The clock dropped a read that raised (a bug, logged there): the sockets are read
        as they wake the loop again, or no call of the worker would hear another packet."""
        self._untick = None
        self._last_wake = -1.0
        if self._transports:
            self._wake_per_datagram()

    def _tick(self, now: float) -> None:
        READS["tick"] += 1
        self.read()
        if not self.media or self.handshake:
            # A whole tick without media, or a handshake's datagram (ICE, DTLS: each of its
            # flights would wait a tick, and a call's set-up with it): wake for the next one.
            self._leave_clock()
            self._last_wake = -1.0
            self._wake_per_datagram()

    def read(self) -> int:
        """Every waiting datagram of the first set to its protocol; how many."""
        return self._read(self._epoll)

    def _read(self, epoll: select.epoll) -> int:
        offset = time.time() - time.monotonic()
        self.handshake = self.media = False
        poll, transports = epoll.poll, self._transports
        n = 0
        # Rounds of one datagram per readable socket, until none is: no socket is read until
        # it refuses (an exception each time), and one that floods cannot starve the others.
        for _ in range(MAX_ROUNDS):
            events = poll(0)
            if not events:
                break
            for fd, _ in events:
                transport = transports.get(fd)
                if transport is not None and transport.read_one(offset):
                    n += 1
        return n


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, UdpPoller] = (
    weakref.WeakKeyDictionary()
)
enabled = hasattr(select, "epoll")
"""Whether new media sockets go to the poller (``BRIDGE_UDP_POLL``; Linux's epoll only)."""


def configure(on: bool) -> None:
    """``BRIDGE_UDP_POLL``: media sockets opened from now on are polled (or the loop's)."""
    global enabled
    enabled = on and hasattr(select, "epoll")


def poller() -> UdpPoller | None:
    """This loop's poller, if it has media sockets."""
    return _pollers.get(asyncio.get_running_loop())


def open_polled(
    sock: socket.socket,
    protocol: Any,
    timed: TimedHandler | None = None,
    checks_over: Callable[[], bool] | None = None,
) -> PolledTransport:
    """``protocol`` on ``sock``, read by this loop's :class:`UdpPoller`; its datagrams to
    ``timed`` with their arrival when given, else to ``protocol.datagram_received``;
    ``checks_over``: an ICE socket's, whether its STUN is consent upkeep by now (module
    docstring)."""
    loop = asyncio.get_running_loop()
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = UdpPoller(loop)
    return poller.open(sock, protocol, timed, checks_over)
