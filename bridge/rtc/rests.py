"""A worker's resting senders: off the clock while forwarding runs carry their ticks.

Every RTP leg's one clocked sender (``rtc/rtpsend.py`` ``LeanSender``) has nothing to do on a
tick a forwarding run carries (``rtc/forward_run.py``: the source's packets go out from its
receive callback). While only the source's quiet can end the run, its earliest end is known
(``carried_until``, the run's latest packet's arrival plus ``FORWARD_WAIT``), and the sender
leaves the clock until then: :class:`Rests` holds the worker's resting senders and one
one-shot callback on the worker clock (``media/clock.py`` ``WorkerClock.call_at``) at the
earliest of their runs' ends. When it comes, every resting sender's run is asked again: a
sender whose time came ticks there (its run ends, or carries that tick), the others rest on
to their runs' new earliest ends, and the callback goes to the earliest of those. While the
sources' packets keep coming that is one wake for them all every ~230 ms, where each sender's
own callback was four a second, and a tick's call each was fifty. A run that ends sooner
(forwarding refused, a key press, a hold, a new source) wakes its sender (``LeanSender.wake``):
the callback comes forward to the current tick, where that sender's run carries no more.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Protocol

from ..media.clock import WorkerClock

REST_AT_LEAST = 0.03
"""Seconds: a sender rests only past the next tick (a run ending sooner is ticked to it)."""


class Resting(Protocol):
    """A sender as the resting set sees it (``LeanSender``)."""

    def carried_until(self) -> float | None:
        """Until when a forwarding run carries its ticks (``None``: it has work now)."""

    def rested(self, now: float) -> None:
        """Its tick at ``now`` (the run ends, or carries it), and the clock again."""


class Rests:
    """A worker's resting senders and their one wake (module docstring)."""

    def __init__(self, clock: WorkerClock) -> None:
        self.clock = clock
        self.senders: dict[Resting, None] = {}
        """The resting senders (an ordered set)."""
        self._cancel: Callable[[], None] | None = None
        self._at = math.inf

    def add(self, sender: Resting, until: float) -> None:
        """``sender`` rests until ``until`` at the latest (its run's earliest end; woken, the
        current tick's time)."""
        self.senders[sender] = None
        if until < self._at:
            self._arm(until)

    def discard(self, sender: Resting) -> None:
        """``sender`` rests no more (woken, parked, stopped)."""
        self.senders.pop(sender, None)
        if not self.senders and self._cancel is not None:
            self._cancel()
            self._cancel, self._at = None, math.inf

    def _arm(self, at: float) -> None:
        if self._cancel is not None:
            self._cancel()
        self._at = at
        self._cancel = self.clock.call_at(at, self._due)

    def _due(self, now: float) -> None:
        self._cancel, self._at = None, math.inf
        earliest = math.inf
        for resting in list(self.senders):
            until = resting.carried_until()
            if until is None or until <= now + REST_AT_LEAST:
                del self.senders[resting]
                resting.rested(now)  # it may rest again (and arm this callback)
            elif until < earliest:
                earliest = until
        if self.senders and earliest < self._at:
            self._arm(earliest)


_rests: weakref.WeakKeyDictionary[WorkerClock, Rests] = weakref.WeakKeyDictionary()


def rests_of(clock: WorkerClock) -> Rests:
    """``clock``'s resting senders (one set a worker clock)."""
    rests = _rests.get(clock)
    if rests is None:
        rests = _rests[clock] = Rests(clock)
    return rests
