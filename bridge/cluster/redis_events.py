"""The call events' log on Redis: the ``events`` stream (``XADD … MAXLEN ~
BRIDGE_EVENT_BACKLOG``; its ids are the SSE ``id:``s, so ``Last-Event-ID`` resumes). One
reader task per worker copies the stream into an in-process ring that every SSE client of the
worker follows (one blocking Redis connection, however many clients); a client resuming from
an id reads what it missed from the stream itself, then the ring. With Redis away, what it
missed comes from the ring if the ring reaches back to its id; else the client is told
(:class:`~bridge.errors.ReplayUnavailable`, the stream's ``replay.unavailable``), never left
to believe it missed nothing. A stream that started over below the reader's last id (Redis
back empty on a host whose clock is behind the old ids) is read again from its beginning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis

from ..errors import ReplayUnavailable
from ..logs import Repeats
from .event_ring import (
    EventKey,
    EventRing,
    LogEntry,
    newer_than_logged,
    parse_event_id,
    resume_position,
)
from .redis_writes import EVENTS
from .redis_writes import FAILURES as _FAILURES

log = logging.getLogger(__name__)


def _stream_key(entry_id: str) -> EventKey:
    key = parse_event_id(entry_id)
    assert key is not None, entry_id
    return key


class RedisEventLog:
    """The ``events`` stream read into this worker's ring (the directory's ``follow``)."""

    def __init__(
        self, url: str, redis: Any, backlog: int, op_timeout: float, up: Callable[[], bool]
    ) -> None:
        self._redis = redis
        self._up = up
        """The directory's client for short commands."""
        self._blocking: Any = aioredis.from_url(
            url, decode_responses=True, socket_timeout=15, socket_connect_timeout=op_timeout
        )
        """Its own client for the reader's blocking reads."""
        self.backlog = backlog
        self._ring = EventRing(backlog)
        self._closing = False
        self._foreign_said = False
        self._unreplayed = Repeats(size=1)
        """Replays refused while Redis is away: said once while it lasts, its end at INFO."""

    def _entry(self, entry_id: str, fields: dict[str, str]) -> LogEntry | None:
        """A stream entry as the ring holds it; ``None`` for one without an event's fields
        (written by something else, or by a bridge of another version mid-upgrade): passed
        over, said once, never the end of this worker's reader (its SSE clients would hear no
        event again)."""
        try:
            return entry_id, fields["t"], fields["c"], fields["d"]
        except KeyError:
            if not self._foreign_said:
                self._foreign_said = True
                log.warning(
                    "events stream: entry %s is not a call event (fields %s): passed over "
                    "(said once)",
                    entry_id,
                    sorted(fields)[:8],
                )
            return None

    async def read_forever(self) -> None:
        """Copy the events stream into this worker's ring (one blocking reader per worker),
        until :meth:`close_streams`. It stops by itself too, not only when cancelled: redis-py
        may swallow a cancellation that lands as a read's answer arrives (the reader then went
        on, blocked in its next read, after its owner gave up on it)."""
        position: str | None = None
        look = False
        while not self._closing:
            try:
                if position is None or look:
                    position = await self._start_at(position)
                    look = False
                answer = await self._blocking.xread({EVENTS: position}, count=500, block=5000)
            except _FAILURES:
                if self._closing:
                    return  # its client closed under its read (:meth:`aclose`)
                look = True  # Redis back: is the stream still the one this reader followed?
                await asyncio.sleep(1.0)  # the heartbeat notices and reports it
                continue
            self._redis_back()
            look = not answer  # nothing new: the stream may have started over below us
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    position = entry_id
                    entry = self._entry(entry_id, fields)
                    if entry is not None:
                        self._ring.append(_stream_key(entry_id), entry)

    async def _start_at(self, position: str | None) -> str:
        """Where the reader reads on from: the stream's end at first; after a failure or an
        empty read, ``position`` unless the stream's newest id is below it — a Redis that came
        back empty, or a failover to a host whose clock is behind the old ids, where every new
        id is lower than what this reader saw last and reading on after it would skip them
        all: then the new stream is read from its beginning (said at WARNING)."""
        newest = await self._redis.xrevrange(EVENTS, count=1)
        last = newest[0][0] if newest else "0-0"
        if position is None:
            return str(last)
        if _stream_key(last) >= _stream_key(position):
            return position
        log.warning(
            "events stream: its newest id %s is below %s, the last this worker read (Redis "
            "came back empty or failed over to a host whose clock is behind): reading the new "
            "stream from its beginning",
            last,
            position,
        )
        return "0-0"

    async def follow(self, last_id: str | None, keepalive: float) -> AsyncIterator[LogEntry | None]:
        """Events after ``last_id`` (from the stream while Redis is up), then live ones."""
        position = resume_position(last_id)  # an id that is none: ReplayUnavailable
        if position is not None and last_id is not None:
            # What the client missed, from the stream itself (it may be older than the ring
            # holds); then the ring from there on.
            missed = await self._missed(last_id, position)
            for entry_id, fields in missed or ():
                position = _stream_key(entry_id)
                entry = self._entry(entry_id, fields)
                if entry is not None:
                    yield entry
        if position is None:
            position = self._ring.last_key
        async for entry in self._ring.follow(position, keepalive):
            yield entry

    async def _missed(self, last_id: str, position: EventKey) -> list[Any] | None:
        """The stream's entries after ``last_id``, when the stream still holds ``last_id``
        (else what followed it may be gone: trimmed past ``BRIDGE_EVENT_BACKLOG``, or lost to
        a Redis restarted empty); ``None`` when the ring reaches back to it instead (the ring
        serves them). Raises :class:`ReplayUnavailable` when neither can (Redis away: said
        once while it stays away)."""
        why = "the events log (Redis) is unavailable"
        if self._up():
            try:
                held: list[Any] = await self._redis.xrange(
                    EVENTS, min=last_id, count=self.backlog + 1
                )
            except _FAILURES as exc:
                why = f"the events log (Redis) failed: {type(exc).__name__}: {exc}"
            else:
                self._redis_back()
                if held and held[0][0] == last_id:
                    return held[1:]
                if self._ring_serves(position):
                    return None
                if not held:  # nothing logged at or after it
                    raise newer_than_logged(last_id)
                raise ReplayUnavailable(
                    f"the events log no longer holds {last_id} (more than the "
                    "BRIDGE_EVENT_BACKLOG events since, or Redis restarted empty): the events "
                    "after it cannot be replayed"
                )
        if self._ring_serves(position):
            return None
        if self._unreplayed.seen("redis") == 1:
            log.warning(
                "event replay: %s and this worker's ring does not reach back to %s: the "
                "client is told replay.unavailable (said once while it lasts)",
                why,
                last_id,
            )
        raise ReplayUnavailable(f"{why}: the events after {last_id} cannot be replayed")

    def _ring_serves(self, position: EventKey) -> bool:
        """Whether this worker's ring holds every event after ``position``. Not one past its
        newest: of a log lost since (a Redis that came back empty), or of none this
        deployment logged; followed, it would pass over every new event until the log's ids
        overtake it."""
        return position <= self._ring.last_key and self._ring.reaches(position)

    def _redis_back(self) -> None:
        refused = self._unreplayed.ended("redis")
        if refused:
            log.info("event replay: Redis is back (%d replays refused while it was away)", refused)

    def close_streams(self) -> None:
        """End every follower (the SSE streams end) and the reader after its current read."""
        self._closing = True
        self._ring.close()

    async def aclose(self) -> None:
        """Close the reader's client: a read in flight fails at once and the reader, closing,
        ends (call :meth:`close_streams` first)."""
        await self._blocking.aclose()
