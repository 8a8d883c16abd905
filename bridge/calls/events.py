"""Call events: a fan-out to subscribers (SSE, sockets), each with a bounded queue."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..logs import FailureKinds
from ..timefmt import iso_utc
from .model import Call

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallEvent:
    type: str
    call: dict[str, Any]
    at: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        if not self.call:  # about no call (``call.permission``): its own fields only
            return json.dumps({"type": self.type, "at": self.at, **self.data})
        body = {"type": self.type, "callID": self.call["callID"], "at": self.at, "call": self.call}
        body.update(self.data)
        return json.dumps(body)


class CallEvents:
    """Fan-out of call events to subscribers, each with a bounded queue (oldest dropped)."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscribers: set[_Subscription] = set()
        self._listeners: list[Callable[[str, Call], None]] = []
        self._observers: list[Callable[[CallEvent, Call | None], None]] = []
        self._closed = False
        self._bugs = FailureKinds(log)  # one that fails on every event: said once per kind

    def listen(self, listener: Callable[[str, Call], None]) -> None:
        """Call ``listener(type, call)`` synchronously on every event (in-process features),
        and on what only they are told (:meth:`tell`)."""
        self._listeners.append(listener)

    def observe(self, observer: Callable[[CallEvent, Call | None], None]) -> None:
        """Call ``observer(event, call)`` synchronously on every event, with the event exactly
        as subscribers get it (webhooks, the SSE log); ``call`` is ``None`` for an event about
        no call (:meth:`announce`). It must not block: queue and return."""
        self._observers.append(observer)

    def announce(self, type_: str, **data: Any) -> None:
        """Publish an event about no call (``call.permission``: a WhatsApp user's answer to a
        call-permission request) to subscribers and observers (SSE, signed webhooks to
        ``BRIDGE_WEBHOOK_URL``); listeners, which follow calls, do not see it."""
        self._fan_out(CallEvent(type_, {}, iso_utc(time.time()), data), None)

    def publish(self, type_: str, call: Call, **data: Any) -> None:
        event = CallEvent(type_, call.snapshot(), iso_utc(time.time()), data)
        self._fan_out(event, call)
        self.tell(type_, call)

    def tell(self, type_: str, call: Call) -> None:
        """Tell the listeners alone (in-process features) of a change no subscriber is told
        of: ``call.carried``, a live call carried on here, moved from another worker (its
        ``call.moved`` is the old worker's to publish, or recovery's, to the apps)."""
        for listener in self._listeners:
            try:
                listener(type_, call)
            except Exception as exc:
                self._bugs.failed(exc, "event listener failed on %s", type_)

    def _fan_out(self, event: CallEvent, call: Call | None) -> None:
        for sub in self._subscribers:
            sub.put(event)
        for observer in self._observers:
            try:
                observer(event, call)
            except Exception as exc:
                self._bugs.failed(exc, "event observer failed on %s", event.type)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[_Subscription]:
        sub = _Subscription(self.queue_size)
        if self._closed:
            sub.close()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription (at shutdown)."""
        self._closed = True
        for sub in self._subscribers:
            sub.close()


class _Subscription:
    def __init__(self, size: int) -> None:
        self._queue: deque[CallEvent | None] = deque()
        self._size = size
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: CallEvent | None) -> None:
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.put(None)

    async def get(self, timeout: float) -> CallEvent | None:
        """Next event; ``None`` at close. Raises ``TimeoutError`` after ``timeout``."""
        if not self._queue:
            self._ready.clear()
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        event = self._queue.popleft()
        if event is None:
            self._queue.appendleft(None)
        return event
