"""Where calls are looked up: the ``CallRegistry`` protocol and the in-memory directory."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Protocol

from .model import Call


class CallRegistry(Protocol):
    """Where calls are looked up; in memory today, a shared directory later."""

    def add(self, call: Call) -> None: ...
    def get(self, call_id: str) -> Call | None: ...
    def by_engine_id(self, engine_call_id: str) -> Call | None: ...
    def live(self) -> list[Call]: ...
    def ended(self, call: Call) -> None: ...
    def forget(self, call: Call) -> None:
        """Drop a live call that another worker carries on now (it did not end)."""

    def sweep(self) -> int: ...


class InMemoryCallRegistry:
    """Calls of this process. Ended calls stay readable for ``ended_ttl`` seconds."""

    def __init__(self, ended_ttl: float = 900.0, max_ended: int = 100_000) -> None:
        self.ended_ttl = ended_ttl
        self.max_ended = max_ended
        self._live: dict[str, Call] = {}
        self._ended: OrderedDict[str, Call] = OrderedDict()
        self._by_engine: dict[str, str] = {}

    def add(self, call: Call) -> None:
        self._live[call.id] = call
        self._by_engine[call.engine_key] = call.id

    def get(self, call_id: str) -> Call | None:
        return self._live.get(call_id) or self._ended.get(call_id)

    def by_engine_id(self, engine_call_id: str) -> Call | None:
        """The call of an engine key (:func:`~.model.engine_key`: the bare engine id on the
        default number)."""
        call_id = self._by_engine.get(engine_call_id)
        return self._live.get(call_id) if call_id else None

    def live(self) -> list[Call]:
        return list(self._live.values())

    def ended(self, call: Call) -> None:
        self._live.pop(call.id, None)
        if self._by_engine.get(call.engine_key) == call.id:
            del self._by_engine[call.engine_key]
        self._ended[call.id] = call
        while len(self._ended) > self.max_ended:
            self._ended.popitem(last=False)

    def forget(self, call: Call) -> None:
        self._live.pop(call.id, None)
        if self._by_engine.get(call.engine_key) == call.id:
            del self._by_engine[call.engine_key]

    def sweep(self, now: float | None = None) -> int:
        """Forget ended calls older than the TTL; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        while self._ended:
            call = next(iter(self._ended.values()))
            if call.ended_at is not None and now - call.ended_at < self.ended_ttl:
                break
            self._ended.popitem(last=False)
            removed += 1
        return removed


async def sweep_forever(registry: CallRegistry, interval: float = 60.0) -> None:
    """Forget ended calls past their time to live, once every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        registry.sweep()
