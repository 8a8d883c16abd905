"""The media clocks: ``WorkerClock`` (one per worker) ticks every call's mixer; ``MediaClock``
paces an outgoing track at one 20 ms frame per tick of wall time."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from ..audio import FRAME_MS

log = logging.getLogger(__name__)


class MediaClock:
    """Ticks every ``period`` seconds on an absolute schedule (no drift from sleep overshoot).

    The first :meth:`tick` returns at once. When the caller falls more than ``resync`` behind
    (a stalled event loop), the schedule restarts from now instead of bursting to catch up.
    """

    def __init__(self, period: float = FRAME_MS / 1000, resync: float = 0.2) -> None:
        self.period = period
        self.resync = resync
        self._start: float | None = None
        self.ticks = 0

    @property
    def now(self) -> float:
        """The scheduled (monotonic) time of the latest tick."""
        return (self._start or time.monotonic()) + self.ticks * self.period

    async def tick(self) -> None:
        if self._start is None:
            self._start = time.monotonic()
            return
        self.ticks += 1
        wait = self._start + self.ticks * self.period - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -self.resync:
            self._start = time.monotonic() - self.ticks * self.period


Tick = Callable[[float], None]


class WorkerClock:
    """The worker's one 20 ms media clock: every registered call's tick runs on it.

    Deadlines are absolute (``start + n * period``) on the event loop's ``call_at``, so sleep
    overshoot never accumulates; after a stall longer than ``resync`` the schedule restarts from
    now rather than bursting. A callback that raises is logged once and unregistered. The clock
    runs only while something is registered, so an idle worker costs nothing.
    """

    def __init__(self, period: float = FRAME_MS / 1000, resync: float = 0.2) -> None:
        self.period = period
        self.resync = resync
        self._ticks: dict[int, Tick] = {}
        self._next_id = 0
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self.n = 0

    def register(self, tick: Tick) -> Callable[[], None]:
        """Call ``tick(now)`` every period from the next one; returns the unregister function."""
        key = self._next_id
        self._next_id += 1
        self._ticks[key] = tick
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._start, self.n = loop.time(), 0
            self._handle = loop.call_at(self._start + self.period, self._fire)
        return lambda: self._unregister(key)

    def _unregister(self, key: int) -> None:
        self._ticks.pop(key, None)
        if not self._ticks and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        self.n += 1
        now = time.monotonic()
        for key, tick in list(self._ticks.items()):
            try:
                tick(now)
            except Exception:
                log.exception("media clock: a tick failed; unregistered")
                self._ticks.pop(key, None)
        if not self._ticks:
            self._handle = None
            return
        due = self._start + (self.n + 1) * self.period
        if loop.time() - due > self.resync:
            self._start, self.n = loop.time(), 0
            due = self._start + self.period
        self._handle = loop.call_at(due, self._fire)


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
