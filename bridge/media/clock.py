"""The worker's one media clock, and what it clocks.

``WorkerClock`` (one per worker, :func:`worker_clock`) ticks every 20 ms and drives all of
this worker's 20 ms media work, in this order within each tick (:class:`Phase`):

0. :attr:`Phase.INPUT`: while datagrams come faster than the ticks, the worker's media sockets
   are read (``rtc/udp_poll.py``): every packet of the last 20 ms reaches its leg's receiver
   in one wake-up, before the receivers are asked for their frames;
1. :attr:`Phase.RECEIVE`: every leg's receiver hands on one frame (``rtc/uplink.py``
   ``Playout``): a browser's microphone to the conference, the Cloud API's WhatsApp side
   (a clocked port, ``engines/pump.py``) to the bus's downlink;
2. :attr:`Phase.MIX`: every mixing conference builds its outputs (``media/conference.py``)
   and every bus with sources playing clocks them (``media/bus.py``), so a microphone frame
   received in this tick is mixed in this tick;
3. :attr:`Phase.ENGINE`: every engine whose far end lives in this worker (the simulated
   engine's, ``engines/sim.py``, plugged into the bus as a clocked port) hears this tick's
   uplink frame and says its downlink frame;
4. :attr:`Phase.SEND`: every RTP leg's one clocked sender (``rtc/rtpsend.py`` ``LeanSender``:
   the browsers' downlink, the Cloud API's WhatsApp side) asks its track for the tick's packets
   (``rtc/tracks.py``), which takes its frame from its source (``FrameSource.take``,
   ``media/ports.py``) and encodes it, right after the mix that filled it, and sends them.

:meth:`WorkerClock.next_tick` is a future resolved once a tick's callbacks (this phase's
included) have run: what a track read by aiortc's own sender waits on (the quality bench's
peers, ``bench/aiortc_track.py`` ``WorkerPacer``), and the tests' way to wait for a tick.

After the phases, the tick runs the one-shot callbacks that fell due (:meth:`WorkerClock.call_at`:
each leg's RTCP report, ``rtc/rtcp_schedule.py``; a resting sender's tick, ``rtc/rtpsend.py``;
the periodic tasks' sleeps, :func:`clock_sleep`). While nothing is registered and no track
waits, the clock sleeps to the tick of the earliest of them, so a leg that carries nothing
costs one wake-up per report, not fifty a second.

One timer for the worker, not one per call: every call's work of a tick runs in one wake-up of
the event loop. A far end that keeps its own time (the quality bench's drifting peers) paces
its track on a :class:`WorkerClock` of its own period. What
stays outside any 20 ms clock, and why, is in docs/architecture.md (*The media clock*).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import math
import time
import weakref
from collections.abc import Callable

from ..audio import FRAME_MS

log = logging.getLogger(__name__)


Tick = Callable[[float], None]
ROUNDING = 1e-6
"""Seconds: a one-shot callback due this little after a tick's time runs at that tick (the
grid's times are sums of floats; without it, a report due on a tick woke the clock there, found
itself a rounding error early, and went a tick later)."""


TICK_FAILURES = 3
"""Ticks in a row that may raise before an owner that takes its tick back gives up (its
``failed``, given to :meth:`WorkerClock.register`, puts the tick back on the clock from the
next tick; a tick that runs through clears the count): a leg's receiver (``rtc/uplink.py``),
a call's mixer (``media/conference.py``), the simulated far end (``engines/sim.py``), an
agent's continuous uplink (``agents/uplink.py``). A fault of one moment costs a frame; one
that comes back every time is given up, said once at WARNING by its owner."""


class Phase(enum.IntEnum):
    """Where in a tick a registered callback runs (see the module docstring)."""

    INPUT = 0
    """The worker's media sockets are read while media flows (``rtc/udp_poll.py``)."""
    RECEIVE = 1
    """Each leg's receiver hands on its frame (``FrameSink.accept``)."""
    MIX = 2
    """The conference and the bus's sources build this tick's mix."""
    ENGINE = 3
    """An in-worker far end (the simulator's) hears and says its frame."""
    SEND = 4
    """Each leg's clocked sender sends its track's packets of the tick (the track takes its
    frame: ``FrameSource.take``); the pacers wake after it."""


class WorkerClock:
    """The worker's one 20 ms media clock: every registered callback runs on it, by phase.

    Deadlines are absolute (``start + n * period``) on the event loop's ``call_at``, so sleep
    overshoot never accumulates; after a stall longer than ``resync`` the schedule restarts from
    now rather than bursting. Callbacks get the tick's scheduled time (``time.monotonic()``
    base). A callback that raises is logged once and unregistered, and its owner told
    (``failed``, given to :meth:`register`), whose state would otherwise still say it is on
    the clock. The clock runs only while
    something is registered or waits for a tick, so an idle worker costs nothing.
    """

    def __init__(self, period: float = FRAME_MS / 1000, resync: float = 0.2) -> None:
        self.period = period
        self.resync = resync
        self._ticks: dict[int, tuple[Phase, Tick]] = {}
        self._order: list[tuple[int, Tick]] = []
        self._on_failure: dict[int, Callable[[], None]] = {}
        """By key: what to call when that tick raises (:meth:`register`'s ``failed``)."""
        self._next_id = 0
        self._timers: dict[int, Tick] = {}
        self._due: list[tuple[float, int]] = []
        """A heap of (due time, key) of the :meth:`call_at` callbacks; a cancelled one's key is
        gone from :attr:`_timers` and its entry is skipped when it comes up."""
        self._handle: asyncio.TimerHandle | None = None
        self._next_n = 0
        self._every_tick = False
        """The tick number :attr:`_handle` fires (more than one ahead while the clock sleeps to
        a one-shot callback's tick)."""
        self._waiters: list[asyncio.Future[int]] = []
        """One future per track waiting for the next tick: its own, so that a track whose task
        is cancelled (a participant leaving) cancels only its wait, never the other tracks'."""
        self._firing = False
        """A tick's callbacks are running: registrations and removals made by them leave the
        timer to :meth:`_fire` (which schedules the next tick or goes idle)."""
        self._start = 0.0
        self._base = 0
        self._offset = 0.0
        self.n = 0
        """Ticks so far (never reset: a track counts the ticks it served against it)."""
        self.now = 0.0
        """The latest tick's scheduled time (``time.monotonic()`` base)."""
        self.skipped = 0
        """Ticks never run: those a stall longer than ``resync`` passed over (the schedule
        restarts from now). Every leg clocked here lost that much audio; a pacer's track its
        frames (``bridge_media_clock_skipped_ticks_total``)."""

    def register(
        self, tick: Tick, phase: Phase = Phase.MIX, failed: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``tick(now)`` every period from the next one; returns the unregister function.
        Should ``tick`` raise, it is unregistered and ``failed()`` called (in that tick)."""
        key = self._next_id
        self._next_id += 1
        self._ticks[key] = (phase, tick)
        if failed is not None:
            self._on_failure[key] = failed
        self._reorder()
        self._run()
        return lambda: self._unregister(key)

    def next_tick(self) -> asyncio.Future[int]:
        """A future for the next tick's number, resolved after that tick's callbacks ran."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._run()
        return waiter

    def call_at(self, when: float, callback: Tick) -> Callable[[], None]:
        """Call ``callback(now)`` once, at the first tick at or after ``when`` (a
        ``time.monotonic()`` time), after that tick's phases; returns the cancel function."""
        key = self._next_id
        self._next_id += 1
        self._timers[key] = callback
        heapq.heappush(self._due, (when, key))
        self._run()
        return lambda: self._cancel(key)

    @property
    def running(self) -> bool:
        """Whether it ticks every period (asleep to a one-shot callback's tick, it does not)."""
        return self._handle is not None and self._every_tick

    def _reorder(self) -> None:
        items = sorted(self._ticks.items(), key=lambda kv: kv[1][0])  # stable: by phase
        self._order = [(key, tick) for key, (_, tick) in items]

    def _run(self) -> None:
        """Schedule the next wanted tick if none is, or if an earlier one is now wanted."""
        if self._firing:
            return  # the tick in progress schedules the next itself (one timer, never two)
        loop = asyncio.get_running_loop()
        if self._handle is None:
            self._start, self._base = loop.time(), self.n
            self._offset = time.monotonic() - self._start
        want = self._wanted(loop.time())
        if want is None or (self._handle is not None and want >= self._next_n):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._schedule(loop, want, bool(self._ticks or self._waiters))

    def _wanted(self, at: float) -> int | None:
        """The next tick wanted after loop time ``at``: the next one while anything is
        registered or waits, else the tick of the earliest one-shot callback, else none."""
        after = self._base + math.floor((at - self._start) / self.period) + 1
        after = max(after, self.n + 1)
        if self._ticks or self._waiters:
            return after
        while self._due and self._due[0][1] not in self._timers:
            heapq.heappop(self._due)  # cancelled
        if not self._due:
            return None
        when = self._due[0][0] - self._offset  # on the loop's time
        ticks = (when - self._start - ROUNDING) / self.period
        return max(after, self._base + math.ceil(ticks))

    def _schedule(self, loop: asyncio.AbstractEventLoop, n: int, every_tick: bool) -> None:
        self._next_n, self._every_tick = n, every_tick
        self._handle = loop.call_at(self._start + (n - self._base) * self.period, self._fire)

    def _cancel(self, key: int) -> None:
        if self._timers.pop(key, None) is None:
            return  # its heap entry is skipped when it comes up
        if self._handle is not None and not self._firing and not self._ticks and not self._waiters:
            self._handle.cancel()  # asleep to this callback, maybe: to the next one, or idle
            self._handle = None
            self._run()

    def _unregister(self, key: int) -> None:
        self._on_failure.pop(key, None)
        if self._ticks.pop(key, None) is not None:
            self._reorder()
        if (
            not self._ticks
            and not self._waiters
            and self._handle is not None
            and not self._firing  # the tick in progress decides (one timer, never two)
        ):
            self._handle.cancel()
            self._handle = None
            self._run()  # asleep to the next one-shot callback, if any

    def _tell_failed(self, key: int) -> None:
        on_failure = self._on_failure.pop(key, None)
        if on_failure is None:
            return
        try:
            on_failure()
        except Exception:
            log.exception("media clock: a failed tick's owner failed to take it back")

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        self.n = self._next_n
        due = self._start + (self.n - self._base) * self.period
        now = self.now = due + self._offset
        failed = False
        self._firing = True
        try:
            for key, tick in self._order:
                try:
                    tick(now)
                except Exception:
                    log.exception("media clock: a tick failed; unregistered")
                    self._ticks.pop(key, None)
                    failed = True
                    self._tell_failed(key)
            while self._due and self._due[0][0] <= now + ROUNDING:
                _, key = heapq.heappop(self._due)
                callback = self._timers.pop(key, None)
                if callback is None:
                    continue  # cancelled
                try:
                    callback(now)
                except Exception:
                    log.exception("media clock: a timed callback failed")
        finally:
            self._firing = False
        if failed:
            self._reorder()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self.n)
        late = loop.time() - due
        if late > self.resync:
            if self._ticks or waiters:  # asleep to a one-shot callback, no frame was due
                self.skipped += int(late / self.period)
            self._start, self._base = loop.time(), self.n
            self._offset = time.monotonic() - self._start
        # Ticks run one by one, a late one catching up at once (absolute deadlines); a track
        # resolved now asks for the next tick only once it has run: the grid is kept for it.
        every_tick = bool(self._ticks or self._waiters or waiters)
        want = self.n + 1 if every_tick else self._wanted(loop.time())
        if want is None:
            self._handle = None
            return
        self._schedule(loop, want, every_tick)


async def clock_sleep(delay: float, grid: float = 0.0) -> None:
    """Sleep ``delay`` seconds on the worker clock: a one-shot callback at the first tick at or
    after it (:meth:`WorkerClock.call_at`; its time rounded up to a multiple of ``grid`` seconds
    when given), so a periodic task (the watchdog, the reports' sampler, the numbers catalog's
    follower, aioice's consent checks) wakes nothing of its own while the clock runs for media;
    with the clock asleep, it wakes the clock at that tick, as a timer would. Up to a tick
    longer than asked."""
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(now: float) -> None:
        if not woken.done():
            woken.set_result(None)

    at = time.monotonic() + delay
    if grid:
        at = math.ceil(at / grid) * grid
    cancel = worker_clock().call_at(at, wake)
    try:
        await woken
    finally:
        cancel()  # cancelled (the task's owner closing): the callback goes with it


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WorkerClock] = (
    weakref.WeakKeyDictionary()
)


def worker_clock() -> WorkerClock:
    """The running event loop's (this worker's) one media clock."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = WorkerClock()
    return clock
