"""The event log as a worker holds it: event ids (Redis stream ids, or ``boot-seq`` in
memory), where a client resuming with ``Last-Event-ID`` left off, and :class:`EventRing`, the
bounded ring of recent events every SSE client of the worker follows (the in-memory directory
keeps its own; the Redis directory's reader copies the ``events`` stream into one)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from ..errors import ReplayUnavailable
from ..tasks import wait_event

LogEntry = tuple[str, str, str, str]
"""One logged event: ``(id, type, callID, JSON)``, the JSON exactly as SSE ``data``."""


EventKey = tuple[int, int]
"""Orders events: a Redis stream id ``ms-seq`` as two numbers, or ``(boot, seq)`` in memory."""


def parse_event_id(text: str | None) -> EventKey | None:
    """``"1732250000000-3"`` → ``(1732250000000, 3)``; ``None`` for anything else."""
    if not text:
        return None
    first, sep, second = text.partition("-")
    # ASCII digits alone: ``isdigit`` also takes ``²``, which ``int`` refuses (a client's
    # Last-Event-ID of it was an unhandled error in the event stream).
    if not sep or len(text) > 41 or not (text.isascii() and first.isdigit() and second.isdigit()):
        return None
    return int(first), int(second)


def resume_position(last_id: str | None) -> EventKey | None:
    """Where a client resuming with ``last_id`` left off (``None``: no id, from now). An id
    that is none this bridge gives (its ids are ``digits-digits``) raises
    :class:`~bridge.errors.ReplayUnavailable`: where the client left off is unknown, so what
    it missed is too; streamed from now, it would believe it missed nothing. Not a 400: a
    browser's ``EventSource`` can act on no error status (it fails the stream for good, with
    no body to read), and it resends the same id whenever it reconnects."""
    if not last_id:
        return None
    position = parse_event_id(last_id)
    if position is None:
        raise ReplayUnavailable(
            "Last-Event-ID is not an event id of this bridge (they are digits-digits): the "
            "events since the client's last one cannot be known"
        )
    return position


def newer_than_logged(last_id: str) -> ReplayUnavailable:
    """What a client resuming from an id newer than every event logged here is told: an id
    of another deployment, of a log lost since, or from before a restart on a clock that ran
    ahead; followed, it would pass over every event until the log's ids overtake it."""
    return ReplayUnavailable(
        f"Last-Event-ID {last_id} is newer than any event logged here (an id of another "
        "deployment, or of a log lost since): the events since the client's last one cannot "
        "be known"
    )


class EventRing:
    """The last ``size`` events in id order, and followers waiting for the next ones.

    Followers share the ring (no copy per subscriber): a follower remembers the key of the
    last event it sent and takes what is newer. One that falls more than ``size`` events
    behind skips the oldest (bounded memory, like the per-subscriber queues it replaced).
    An event whose key is not newer than the last one starts the ring over: the log's ids
    started again lower (a Redis that came back empty on a host whose clock is behind the old
    ids), and every follower takes the new events from the first."""

    def __init__(self, size: int) -> None:
        self._entries: deque[tuple[EventKey, LogEntry]] = deque(maxlen=size)
        self._changed = asyncio.Event()
        self._closed = False
        self._restarts = 0

    @property
    def last_key(self) -> EventKey:
        return self._entries[-1][0] if self._entries else (0, 0)

    def reaches(self, position: EventKey) -> bool:
        """Whether it holds every event after ``position`` (its oldest is no newer)."""
        return bool(self._entries) and self._entries[0][0] <= position

    def append(self, key: EventKey, entry: LogEntry) -> None:
        if self._entries and key <= self._entries[-1][0]:
            self._entries.clear()  # a log that started over: its old keys order nothing
            self._restarts += 1
        self._entries.append((key, entry))
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    def _after(self, position: EventKey) -> list[tuple[EventKey, LogEntry]]:
        newer = []
        for key, entry in reversed(self._entries):  # newest first: only the new ones are read
            if key <= position:
                break
            newer.append((key, entry))
        newer.reverse()
        return newer

    async def follow(self, position: EventKey, keepalive: float) -> AsyncIterator[LogEntry | None]:
        restarts = self._restarts
        while True:
            changed = self._changed
            if self._restarts != restarts:  # the log started over: its events from the first
                restarts, position = self._restarts, (0, 0)
            for key, entry in self._after(position):
                position = key
                yield entry
            if self._closed:
                return  # after sending what the ring held
            if not await wait_event(changed, keepalive):
                yield None
