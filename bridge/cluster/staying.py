"""The calls a draining worker keeps: those no other worker could carry on
(``calls/letting_go.py`` ``can_move``: a Cloud API call, whose media session ends at this
worker's address; a call with a trunk's phone on it, whose SIP dialog and RTP are this
worker's), served here until they end, at most ``BRIDGE_DRAIN_TIMEOUT``.

A call kept stays kept: one whose phone leaves while the drain waits could move then, but it
is served here to its end all the same — no second move path while the worker waits, and the
call loses nothing (docs/deployment.md, *SIGTERM*).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..calls import Call, CallManager
from ..calls.letting_go import can_move

log = logging.getLogger(__name__)

LOOK_EVERY = 0.25
"""Seconds between looks at the calls kept: they end through many paths (the engine, the API,
time limits), so the drain looks rather than listens."""


class Staying:
    """The calls a draining worker serves until they end (see the module docstring)."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        self._kept: set[str] = set()
        """The ids of the calls kept at the drain (live or ended since)."""

    def keep(self, call: Call) -> None:
        """``call`` stays here until it ends, whatever becomes of what kept it."""
        self._kept.add(call.id)

    def calls(self) -> list[Call]:
        """The live calls served here to their end: those kept, and any that cannot move (one
        that came in as the drain went on)."""
        live = self.manager.live_calls()
        self._kept.update(c.id for c in live if not can_move(self.manager, c))
        return [c for c in live if c.id in self._kept]

    async def wait(self) -> None:
        """Serve the calls kept until they end, at most ``BRIDGE_DRAIN_TIMEOUT`` (calls that
        could move but found no worker are hung up at shutdown, as before)."""
        limit = self.manager.settings.drain_timeout
        deadline = time.monotonic() + limit
        if self.calls():
            log.warning(
                "draining: %d calls cannot move to another worker (their engine's media "
                "session, or a phone's SIP leg on a trunk, ends with this worker); serving "
                "them until they end, at most %g s (BRIDGE_DRAIN_TIMEOUT)",
                len(self.calls()),
                limit,
            )
        while time.monotonic() < deadline:
            if not self.calls():
                return
            await asyncio.sleep(LOOK_EVERY)
        if self.calls():
            log.warning(
                "draining: BRIDGE_DRAIN_TIMEOUT (%g s) is over; hanging up the %d calls left",
                limit,
                len(self.calls()),
            )
