"""The engines of numbers deleted or rebuilt, each kept until the calls here that run on it have
ended: the switchboard's child."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from ..engines import Engine
from ..media.clock import clock_sleep
from ..metrics import Metrics

log = logging.getLogger(__name__)

Retired = tuple[str, Engine, "asyncio.Task[None] | None"]
"""A number id, its old engine, and the task that forwards that engine's events."""


class RetiredEngines:
    """Engines that take no new calls, by number: every half second (on the media clock: no
    wake-up of its own during calls) each one no live call here runs on any more is closed,
    its events' task with it (a rebuilt number's calls stay on its old engine: their audio,
    their hang-up, the engine's events about them); parked while none is retired (an idle
    worker: no wake-up)."""

    def __init__(
        self,
        in_use: Callable[[], list[Engine]],
        rebuilt: Callable[[str], bool],
        metrics: Callable[[], Metrics | None],
    ) -> None:
        self._in_use = in_use
        """The engines live calls here run on."""
        self._rebuilt = rebuilt
        """Whether the number has an engine again (rebuilt): its metrics' series stay."""
        self._metrics = metrics
        self._engines: list[Retired] = []
        self._waiting = asyncio.Event()

    def add(self, number_id: str, engine: Engine, events: asyncio.Task[None] | None) -> None:
        self._engines.append((number_id, engine, events))
        self._waiting.set()

    def __iter__(self) -> Iterator[Retired]:
        return iter(self._engines)

    def __bool__(self) -> bool:
        return bool(self._engines)

    def of(self, number_id: str) -> Engine | None:
        """The retired engine of ``number_id`` (its calls still run on it), if any."""
        return next((engine for n, engine, _ in self._engines if n == number_id), None)

    async def close_forever(self) -> None:
        while True:
            await self._waiting.wait()  # none retired: parked, no wake-up
            await clock_sleep(0.5)
            in_use = {id(engine) for engine in self._in_use()}
            keep = []
            for number_id, engine, events in self._engines:
                if id(engine) in in_use:
                    keep.append((number_id, engine, events))
                    continue
                await self._close(engine, events, number_id)
                metrics = self._metrics()
                if metrics is not None and not self._rebuilt(number_id):
                    metrics.forget_number(number_id)  # deleted (not rebuilt): its series go
            self._engines = keep
            if not keep:
                self._waiting.clear()

    async def _close(self, engine: Engine, events: asyncio.Task[None] | None, number: str) -> None:
        if events is not None:
            events.cancel()  # (the switchboard's TaskSet awaits it)
        try:
            await engine.close()
        except Exception:  # one engine's failing close must not stop the others'
            log.exception("number %s: its retired engine failed to close", number)

    async def close(self) -> None:
        """Close them all now (the switchboard's close)."""
        for number_id, engine, events in self._engines:
            await self._close(engine, events, number_id)
        self._engines.clear()
