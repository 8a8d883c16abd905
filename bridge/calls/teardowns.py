"""A call's teardown once it has ended here: its runtime closed (attachments, sessions, the
engine media, the report), then ``call.ended`` published.

``CallManager.end`` awaits it. An end the engine reported runs it on a task of this module's
set instead (``CallManager.end_soon``): the one reader of the engine's events
(``engine_events.py``) went on to the next event only once the ended call's forks, peer
connections and files had closed — seconds behind an unresponsive fork or peer — and every
other call's ringing, answer and end waited meanwhile. The call is ended before the task
starts (its state, the registry, the counts), so nothing of it is read as live while it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..tasks import TaskSet
from .events import CallEvents
from .model import Call
from .runtime import CallRuntime

SHUTDOWN_WAIT = 10.0
"""Seconds a shutdown waits for the teardowns under way (each bounded by its own waits) before
it cancels what is left."""


class Teardowns:
    """The manager's teardowns (module docstring)."""

    def __init__(self, events: CallEvents) -> None:
        self.events = events
        self._tasks = TaskSet("call-teardowns")

    async def run(self, call: Call, runtime: CallRuntime | None, data: dict[str, Any]) -> None:
        """Close ``runtime`` (to completion even if the caller is cancelled), then publish
        ``call.ended`` with ``data``."""
        try:
            if runtime is not None:
                await runtime.close(ended=data)
                call.final_stats = runtime.final_stats
        finally:
            self.events.publish("call.ended", call, **data)

    def soon(self, call: Call, runtime: CallRuntime | None, data: dict[str, Any]) -> None:
        """:meth:`run` on a task of this set."""
        self._tasks.spawn(self.run(call, runtime, data), f"end:{call.id}")

    async def close(self) -> None:
        """Let the teardowns under way finish (their ``call.ended`` out), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_WAIT):
                await self._tasks.join()
        await self._tasks.close()
