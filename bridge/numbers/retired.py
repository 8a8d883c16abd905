"""The engines of numbers deleted or rebuilt, each kept until the calls here that run on it have
ended: the switchboard's child."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ..engines import Engine
from ..media.clock import clock_sleep
from ..metrics import Metrics

log = logging.getLogger(__name__)


class Retired(NamedTuple):
    """A number's old engine, and the task that forwards its events."""

    number_id: str
    engine: Engine
    events: asyncio.Task[None] | None
    meta_id: str = ""
    """Meta's ``phone_number_id`` the engine was built for (what Meta's webhooks about its
    calls name)."""


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

    def add(
        self, number_id: str, engine: Engine, events: asyncio.Task[None] | None, meta_id: str = ""
    ) -> None:
        self._engines.append(Retired(number_id, engine, events, meta_id))
        self._waiting.set()

    def __iter__(self) -> Iterator[Retired]:
        return iter(self._engines)

    def __bool__(self) -> bool:
        return bool(self._engines)

    def of(self, number_id: str) -> Engine | None:
        """The retired engine of ``number_id`` (its calls still run on it), if any."""
        return next((r.engine for r in self._engines if r.number_id == number_id), None)

    def of_meta(self, meta_id: str) -> list[Retired]:
        """The retired engines built for Meta's ``phone_number_id`` (the webhook front door
        asks them whether they carry the calls a webhook names)."""
        return [r for r in self._engines if meta_id and r.meta_id == meta_id]

    def number_of(self, engine: object) -> str:
        """The id of the number ``engine`` was retired from (empty: none here)."""
        return next((r.number_id for r in self._engines if r.engine is engine), "")

    async def close_forever(self) -> None:
        while True:
            await self._waiting.wait()  # none retired: parked, no wake-up
            await clock_sleep(0.5)
            in_use = {id(engine) for engine in self._in_use()}
            keep: list[Retired] = []
            for retired in self._engines:
                number_id, engine, events, _ = retired
                if id(engine) in in_use:
                    keep.append(retired)
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
        for number_id, engine, events, _ in self._engines:
            await self._close(engine, events, number_id)
        self._engines.clear()
