"""RFC 4733 ``telephone-event`` on the WhatsApp leg: the detector and sender live in
:mod:`bridge.rtc.rfc4733` (the browser leg uses them too); :class:`DtmfOut` is the key presses
waiting to go out, one queue for both legs to Meta (DTLS and SDES)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ...rtc.rfc4733 import EVENTS, DtmfDetector, EventSender
from ...tasks import TaskSet

__all__ = ["DTMF_QUEUE", "EVENTS", "DtmfDetector", "DtmfOut", "EventSender"]

DTMF_QUEUE = 64
"""Key presses waiting to be sent as RFC 4733 events; more are refused (409)."""


class _Leg(Protocol):
    dtmf_pt: int

    @property
    def dead(self) -> bool: ...


class DtmfOut:
    """A leg's key presses waiting to be sent (RFC 4733 events, one after the other, at most
    :data:`DTMF_QUEUE`, by one task of the leg's own); ``done`` is called once the last of a
    request's presses was sent. :attr:`events` is the leg's sender, once it has one."""

    def __init__(self, tasks: TaskSet, leg: _Leg, events: EventSender | None = None) -> None:
        self._tasks, self._leg = tasks, leg
        self.events = events
        self._queue: deque[tuple[str, int, int, Callable[[], None] | None]] = deque()
        self._task: asyncio.Task[None] | None = None

    def push(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None:
        if len(self._queue) + len(digits) > DTMF_QUEUE:
            raise ValueError("too many key presses queued")
        for i, digit in enumerate(digits):
            last = i == len(digits) - 1
            self._queue.append((digit, duration_ms, gap_ms, done if last else None))
        if not self._tasks.closed and (self._task is None or self._task.done()):
            self._task = self._tasks.spawn(self._send(), "dtmf-out")

    def clear(self) -> None:
        self._queue.clear()

    async def _send(self) -> None:
        while self._queue and self.events is not None and not self._leg.dead:
            digit, duration_ms, gap_ms, done = self._queue[0]
            await self.events.play(digit, duration_ms, self._leg.dtmf_pt)
            await asyncio.sleep(gap_ms / 1000)
            if self._queue:
                self._queue.popleft()
            if done is not None:
                done()
