"""The caller's audio as one stream that never pauses, to a model that wants it so (the
dialect's ``streams_up``): a full-duplex model (GPT-Live), and Ultravox.

A full-duplex model runs on a clock and wants the caller's audio continuously, in real time,
from the session's start to its end; where the call gives nothing (the caller's sender went
quiet with DTX, a hold, a leg that stalls) it must hear silence, never a backlog burst later
(the OpenAI GPT-Live API, *Audio, turn-taking and barge-in*). An Ultravox call needs no
keep-alive only while audio flows: silence through a hold keeps it.

:class:`ContinuousUplink` counts the worker clock's ticks against the caller's frames that
went up, and in each tick where the caller is more than :data:`LAG_FRAMES` behind the clock it
sends one frame of silence: at most one a tick, so a stall is filled at the call's pace, and a
caller that catches up (a remote engine's burst) is not answered by silence until the count is
even again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..audio import FRAME_MS
from ..media.clock import TICK_FAILURES, Phase, worker_clock

log = logging.getLogger(__name__)

LAG_FRAMES = 2
"""Frames (40 ms) the caller may fall behind the clock before silence stands in: a frame that
comes a tick or two late (another engine's jitter) still goes up itself."""


class ContinuousUplink:
    """Silence in the caller's gaps, on the worker clock (module docstring)."""

    def __init__(self, send: Callable[[bytes], None], rate: int, where: str = "agent") -> None:
        self._send = send
        self.where = where
        """Whose uplink, for the log (``call <id>: agent <id>``)."""
        self._silence = bytes(rate * FRAME_MS // 1000 * 2)
        self._ticks = 0
        self._sent = 0
        self.filled = 0
        """Frames of silence sent in the caller's place."""
        self._unregister: Callable[[], None] | None = None
        self._failures = 0
        """Its ticks that raised in a row (:meth:`_tick_failed`)."""

    def start(self) -> None:
        if self._unregister is None and self._failures < TICK_FAILURES:
            # After the receive and engine phases: a caller frame of this tick has gone up.
            self._unregister = worker_clock().register(self._tick, Phase.SEND, self._tick_failed)

    def _tick_failed(self) -> None:
        """The clock dropped a tick that raised (a bug, logged there with its traceback): back
        on the clock from the next tick, a fault of one moment costing a frame of silence. One
        that raises :data:`TICK_FAILURES` times in a row is given up: the caller's gaps go
        unfilled for the rest of the session, said once."""
        self._unregister = None
        self._failures += 1
        if self._failures >= TICK_FAILURES:
            log.warning(
                "%s: the continuous uplink failed %d times in a row: "
                "the caller's gaps go unfilled for the rest of the session",
                self.where,
                self._failures,
            )
            return
        self.start()

    def sent(self) -> None:
        """The caller's frame went up."""
        self._sent += 1

    def _tick(self, now: float) -> None:
        self._ticks += 1
        # A caller ahead of the clock (a burst) is not credited beyond the lag.
        self._sent = min(self._sent, self._ticks + LAG_FRAMES)
        if self._ticks - self._sent > LAG_FRAMES:
            self._sent += 1
            self.filled += 1
            self._send(self._silence)
        self._failures = 0  # through: a failure to come starts the count again

    def stop(self) -> None:
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
