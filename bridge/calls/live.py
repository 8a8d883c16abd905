"""This worker's live calls' runtimes, and whether it has any: the manager's child.

The periodic work that only calls need (the watchdog, the quality sampler: :meth:`watch`; the
reports' sampler) waits on :meth:`LiveRuntimes.until_calls` on an idle worker, instead of
waking a few times a second to find nothing (docs/performance.md, *An idle worker*).
"""

from __future__ import annotations

import asyncio
from collections.abc import ValuesView

from ..config import CallSettings
from ..metrics import Metrics
from ..tasks import TaskSet
from .quality import sample_quality_forever
from .runtime import CallRuntime
from .watchdog import EndCall, watch_forever


class LiveRuntimes:
    """The runtimes by call id, and an event set while there is one."""

    def __init__(self) -> None:
        self._by_id: dict[str, CallRuntime] = {}
        self._any = asyncio.Event()

    def add(self, runtime: CallRuntime) -> None:
        self._by_id[runtime.call.id] = runtime
        self._any.set()

    def pop(self, call_id: str) -> CallRuntime | None:
        runtime = self._by_id.pop(call_id, None)
        if not self._by_id:
            self._any.clear()
        return runtime

    def get(self, call_id: str) -> CallRuntime | None:
        return self._by_id.get(call_id)

    def values(self) -> ValuesView[CallRuntime]:
        return self._by_id.values()

    def watch(
        self, tasks: TaskSet, settings: CallSettings, metrics: Metrics, time_limit: EndCall
    ) -> None:
        """Start the work over the runtimes, each parked while there is none: their time
        limits (the watchdog) and their quality samples."""
        interval = settings.stats_interval
        sampler = sample_quality_forever(metrics, self.values, interval, self.until_calls)
        tasks.spawn(sampler, "quality")
        tasks.spawn(watch_forever(settings, self.values, time_limit, self.until_calls), "watchdog")

    async def until_calls(self) -> None:
        """Return once this worker has a live call (at once while it has one)."""
        await self._any.wait()
