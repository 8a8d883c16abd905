"""The engines of numbers deleted or rebuilt, each kept until its calls here have ended: the
switchboard's child."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from ..engines import Engine
from ..media.clock import clock_sleep
from ..metrics import Metrics

log = logging.getLogger(__name__)


class RetiredEngines:
    """Engines that take no new calls, by number: every half second (on the media clock: no
    wake-up of its own during calls) each one whose number has no live call here is closed;
    parked while none is retired (an idle worker: no wake-up)."""

    def __init__(
        self,
        live_numbers: Callable[[], set[str]],
        rebuilt: Callable[[str], bool],
        metrics: Callable[[], Metrics | None],
    ) -> None:
        self._live_numbers = live_numbers
        self._rebuilt = rebuilt
        """Whether the number has an engine again (rebuilt): its metrics' series stay."""
        self._metrics = metrics
        self._engines: list[tuple[str, Engine]] = []
        self._waiting = asyncio.Event()

    def add(self, number_id: str, engine: Engine) -> None:
        self._engines.append((number_id, engine))
        self._waiting.set()

    def __iter__(self) -> Iterator[tuple[str, Engine]]:
        return iter(self._engines)

    def __bool__(self) -> bool:
        return bool(self._engines)

    def of(self, number_id: str) -> Engine | None:
        """The retired engine of ``number_id`` (its calls still run on it), if any."""
        return next((engine for n, engine in self._engines if n == number_id), None)

    async def close_forever(self) -> None:
        while True:
            await self._waiting.wait()  # none retired: parked, no wake-up
            await clock_sleep(0.5)
            live = self._live_numbers()
            keep = []
            for number_id, engine in self._engines:
                if number_id in live and not self._rebuilt(number_id):
                    keep.append((number_id, engine))
                    continue
                try:
                    await engine.close()
                except Exception:  # one engine's failing close must not stop the others'
                    log.exception("number %s: its retired engine failed to close", number_id)
                metrics = self._metrics()
                if metrics is not None and not self._rebuilt(number_id):
                    metrics.forget_number(number_id)  # deleted (not rebuilt): its series go
            self._engines = keep
            if not keep:
                self._waiting.clear()

    async def close(self) -> None:
        """Close them all now (the switchboard's close)."""
        for _, engine in self._engines:
            await engine.close()
        self._engines.clear()
