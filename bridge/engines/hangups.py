"""``PendingHangups``: engine calls the bridge ended but could not hang up (the engine was
unreachable), hung up once the engine is back — so no WhatsApp call is left open on the phone.

Bounded in size (the oldest is given up, with a warning, when full) and in time (each call is
retried for at most ``max_age`` seconds), with a backoff that an engine coming back cuts short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import EngineCallNotFound, EngineError

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    engine_call_id: str
    why: str
    since: float
    due: float
    attempts: int = 0
    last_error: str = ""


class PendingHangups:
    """A bounded list of engine calls to hang up, and the loop (:meth:`run`) that does it.

    ``hangup`` is the engine's own hang-up; ``pause(seconds)`` sleeps between rounds and
    returns early when the engine comes back. A call the engine no longer knows (404) is done.
    """

    def __init__(
        self,
        engine: str,
        hangup: Callable[[str], Awaitable[None]],
        pause: Callable[[float], Awaitable[None]],
        *,
        limit: int = 256,
        max_age: float = 600.0,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
    ) -> None:
        self.engine = engine
        self._hangup = hangup
        self._pause = pause
        self.limit = limit
        self.max_age = max_age
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._items: list[_Pending] = []
        self._added = asyncio.Event()
        self.done = 0
        self.abandoned = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, engine_call_id: object) -> bool:
        return any(p.engine_call_id == engine_call_id for p in self._items)

    def ids(self) -> list[str]:
        return [p.engine_call_id for p in self._items]

    def add(self, engine_call_id: str, why: str) -> None:
        """Hang ``engine_call_id`` up once the engine answers (a call already pending is kept)."""
        if engine_call_id in self:
            return
        if len(self._items) >= self.limit:
            oldest = self._items.pop(0)
            self.abandoned += 1
            log.warning(
                "%s engine: %d hang-ups pending, giving up on call %s (ended %.0f s ago: %s)",
                self.engine,
                self.limit,
                oldest.engine_call_id,
                time.monotonic() - oldest.since,
                oldest.why,
            )
        now = time.monotonic()
        self._items.append(_Pending(engine_call_id, why, now, now + self.backoff))
        self._added.set()

    async def run(self) -> None:
        """Retry the pending hang-ups until cancelled (an owned task of the engine)."""
        while True:
            if not self._items:
                self._added.clear()
                await self._added.wait()
                continue
            await self._round()
            if self._items:
                wait = min(p.due for p in self._items) - time.monotonic()
                if wait > 0:
                    await self._pause(wait)

    async def _round(self) -> None:
        for item in list(self._items):
            now = time.monotonic()
            if item.due > now:
                continue
            if now - item.since > self.max_age:
                self._remove(item)
                self.abandoned += 1
                log.warning(
                    "%s engine: giving up hanging up call %s after %.0f s and %d attempts "
                    "(ended because: %s; last error: %s) — it may still be up on the engine",
                    self.engine,
                    item.engine_call_id,
                    now - item.since,
                    item.attempts,
                    item.why,
                    item.last_error,
                )
                continue
            item.attempts += 1
            try:
                await self._hangup(item.engine_call_id)
            except EngineCallNotFound:
                self._remove(item)
                self.done += 1
                log.info(
                    "%s engine: call %s was already gone when the engine came back",
                    self.engine,
                    item.engine_call_id,
                )
            except (EngineError, ConnectionError, TimeoutError) as exc:
                item.last_error = str(exc) or type(exc).__name__
                delay = min(self.backoff * 2 ** (item.attempts - 1), self.max_backoff)
                item.due = time.monotonic() + delay
            else:
                self._remove(item)
                self.done += 1
                log.info(
                    "%s engine: call %s hung up now that the engine is back (%.1f s after the "
                    "bridge ended it: %s; %d attempts)",
                    self.engine,
                    item.engine_call_id,
                    time.monotonic() - item.since,
                    item.why,
                    item.attempts,
                )

    def _remove(self, item: _Pending) -> None:
        if item in self._items:
            self._items.remove(item)

    def abandon_all(self) -> list[str]:
        """Forget what is left (the engine is closing); returns the ids, for one log line."""
        ids = self.ids()
        self.abandoned += len(ids)
        self._items.clear()
        return ids
