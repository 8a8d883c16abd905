"""``MediaClock``: paces a producer at one 20 ms frame per tick of wall time."""

from __future__ import annotations

import asyncio
import time

from ..audio import FRAME_MS


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
