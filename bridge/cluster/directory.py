"""The call directory: where every instance finds a call's owner, the workers and the event log.

One process (the default) needs none of it: :class:`MemoryDirectory` answers from this
process and keeps the recent events for SSE clients that reconnect with ``Last-Event-ID``.
Several workers or machines share :class:`~bridge.cluster.redis.RedisDirectory` instead.

The directory is fed by one observer of the calls' events (:meth:`Directory.observe`): every
change of a call is an event, so the record of a call in the directory is its snapshot as of
its latest event, and the event log is those same events. Media never waits for the directory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..calls import Call
from ..calls.events import CallEvent
from ..errors import DirectoryUnavailable, ReplayUnavailable
from ..tasks import wait_event

LogEntry = tuple[str, str, str, str]
"""One logged event: ``(id, type, callID, JSON)``, the JSON exactly as SSE ``data``."""


@dataclass(frozen=True)
class CallRecord:
    """What the directory knows of one call: its latest snapshot and who carries it."""

    call_id: str
    owner: str
    url: str
    engine_call_id: str
    snapshot: dict[str, Any]
    status_callback: str | None = None
    attachments: dict[str, Any] | None = None
    """What a survivor re-opens if the owner dies (``{recording, forks, agents}``, as a
    handover carries them, agents' keys sealed: ``sealing.py``); ``None``: nothing to."""
    webhook_call_id: str = ""
    """Another id the engine's webhooks name the call by (``Call.webhook_call_id``), indexed
    beside :attr:`engine_call_id` (empty: none)."""

    @property
    def live(self) -> bool:
        return self.snapshot.get("state") != "ended"

    def to_json(self) -> str:
        body = {
            "callID": self.call_id,
            "owner": self.owner,
            "url": self.url,
            "engineCallID": self.engine_call_id,
            "statusCallback": self.status_callback,
            "snapshot": self.snapshot,
        }
        if self.attachments:
            body["attachments"] = self.attachments
        if self.webhook_call_id:
            body["webhookCallID"] = self.webhook_call_id
        return json.dumps(body)

    @classmethod
    def from_json(cls, raw: str | bytes) -> CallRecord:
        data = json.loads(raw)
        attachments = data.get("attachments")
        return cls(
            call_id=data["callID"],
            owner=data["owner"],
            url=data["url"],
            engine_call_id=data["engineCallID"],
            snapshot=data["snapshot"],
            status_callback=data.get("statusCallback"),
            attachments=attachments if isinstance(attachments, dict) else None,
            webhook_call_id=str(data.get("webhookCallID") or ""),
        )


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as its heartbeat describes it."""

    id: str
    url: str
    calls: int
    max_calls: int
    draining: bool = False
    """It is shutting down (its calls are moving away): it takes no new calls."""

    @property
    def has_room(self) -> bool:
        return self.calls < self.max_calls and not self.draining


AttachmentsOf = Callable[[Call], dict[str, Any] | None]
"""``attachments(call)``: what a survivor would re-open of a live call of this worker
(``Handover.attachments``), for its record."""


class Directory(Protocol):
    """What the API and the manager need from the call directory."""

    shared: bool
    worker_id: str
    url: str
    attachments: AttachmentsOf | None
    """Set once the handover exists: each record of a live call carries its attachments
    (a shared directory; one process has nobody to adopt its calls)."""

    @property
    def available(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    def check(self, failed: BaseException | None = None) -> None:
        """``DirectoryUnavailable`` while known away, or for ``failed``, the desk store's
        command that failed (Redis then known away): the store asks before each command."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def close_streams(self) -> None:
        """End every :meth:`follow` (first step of a shutdown)."""

    def observe(self, event: CallEvent, call: Call | None) -> None:
        """Record a call's event, or an event about no call (``call`` ``None``; synchronous:
        it queues, it never blocks)."""

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the events observed so far are recorded."""

    async def record(self, call_id: str) -> CallRecord | None: ...
    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None: ...
    async def live_snapshots(self) -> list[dict[str, Any]]: ...
    async def workers(self) -> list[WorkerInfo]:
        """Live workers with their load (raises ``DirectoryUnavailable``)."""

    async def tenant_calls(self, tenant_id: str, verify: bool = False) -> set[str]:
        """The ids of a tenant's live calls on every worker (its ``maxCalls``; ``verify``:
        each checked against its record, stale ones dropped); this process alone: none beyond
        its own registry's."""

    async def claim_engine_call(self, engine_call_id: str) -> bool:
        """Whether this worker may create the call for a newly seen engine call (exactly one
        worker of the cluster gets ``True``); ``DirectoryUnavailable`` when that cannot be
        told (no worker may take it alone: every worker polls the engine)."""

    async def drain(self) -> None:
        """Tell the other workers this one takes no new calls (it is shutting down)."""

    async def take_over(self, call: Call, previous_owner: str, token: str = "") -> None:
        """Record now that this worker owns ``call``, which ``previous_owner`` carried (a
        handover under the old owner's offer ``token``, or a crash adoption: no token), only
        while the record still names ``previous_owner`` and the offer stands (compare-and-set:
        ``NotOwner`` otherwise; ``DirectoryUnavailable``)."""

    async def offer_move(self, call_id: str, token: str) -> None:
        """The owner offers its call to one target under ``token`` (before it sends it)."""

    async def settle_move(self, call_id: str, token: str) -> str:
        """The owner gives up on the target it offered the call to under ``token``: the offer
        is withdrawn (the target can neither take the call nor give it back any more) and the
        record's owner is returned (``""``: none): the target's id if it took the call."""

    async def give_back(self, call: Call, previous_owner: str, token: str) -> bool:
        """A target that took ``call`` and cannot carry it hands it back while the old owner's
        offer stands: ``True`` when the call is not this worker's (given back, or never
        taken), ``False`` when the old owner settled meanwhile and it is this worker's. Tried
        again once Redis answers, for a few seconds (as :meth:`settle_move`)."""

    async def swap_engine_claim(
        self, engine_call_id: str, held: str, next_: str, *, again: bool = False
    ) -> str:
        """A new inbound call's claim handed from ``held`` to ``next_`` only while ``held``
        holds it (compare-and-set); who held it (``""``: nobody). ``again``: a swap Redis
        refused is tried again once it answers, for a few seconds (a give-back, a settle:
        repeated after it landed, it finds ``next_`` holding the claim)."""

    def follow(self, last_id: str | None, keepalive: float) -> AsyncIterator[LogEntry | None]:
        """Events after ``last_id`` (or from now), then live ones; ``None`` every
        ``keepalive`` seconds without one."""


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


class MemoryDirectory:
    """This process alone: its calls are all there is (``BRIDGE_DIRECTORY=memory``)."""

    shared = False

    def __init__(
        self, worker_id: str, url: str, backlog: int, local_calls: Callable[[], list[Call]]
    ) -> None:
        self.worker_id = worker_id
        self.url = url
        self.attachments: AttachmentsOf | None = None
        self._ring = EventRing(backlog)
        self._local_calls = local_calls
        # Ids are ``boot-seq``: an id from before a restart is not this process's and
        # replays nothing (rather than skipping or repeating events).
        self._boot = int(time.time() * 1000)
        self._seq = 0

    @property
    def available(self) -> bool:
        return True

    @property
    def detail(self) -> str:
        return "in memory"

    def check(self, failed: BaseException | None = None) -> None:
        if failed is not None:
            raise DirectoryUnavailable(str(failed)) from failed

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._ring.close()

    def close_streams(self) -> None:
        self._ring.close()

    def observe(self, event: CallEvent, call: Call | None) -> None:
        self._seq += 1
        call_id = call.id if call is not None else ""
        entry = (f"{self._boot}-{self._seq}", event.type, call_id, event.to_json())
        self._ring.append((self._boot, self._seq), entry)

    async def flush(self, timeout: float) -> None:
        pass

    async def record(self, call_id: str) -> CallRecord | None:
        return None  # every call of this process is in its registry

    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None:
        return None

    async def live_snapshots(self) -> list[dict[str, Any]]:
        return [c.snapshot() for c in self._local_calls()]

    async def workers(self) -> list[WorkerInfo]:
        return []

    async def tenant_calls(self, tenant_id: str, verify: bool = False) -> set[str]:
        return set()  # every call of this process is in its registry

    async def claim_engine_call(self, engine_call_id: str) -> bool:
        return True

    async def drain(self) -> None:
        pass

    async def take_over(self, call: Call, previous_owner: str, token: str = "") -> None:
        pass

    async def offer_move(self, call_id: str, token: str) -> None:
        pass

    async def settle_move(self, call_id: str, token: str) -> str:
        return self.worker_id  # nobody else could take it

    async def give_back(self, call: Call, previous_owner: str, token: str) -> bool:
        return True

    async def swap_engine_claim(
        self, engine_call_id: str, held: str, next_: str, *, again: bool = False
    ) -> str:
        return held

    def follow(self, last_id: str | None, keepalive: float) -> AsyncIterator[LogEntry | None]:
        # What a client cannot resume from is told to it (``replay.unavailable``), never left
        # to believe it missed nothing: an id that is no event id, one newer than this
        # process's (of a later boot, or past its last event), one from before a restart, or
        # one the ring no longer reaches back to (it fell more than the backlog behind).
        try:
            position = resume_position(last_id)
        except ReplayUnavailable as exc:
            return _unavailable(exc)
        last = self._ring.last_key
        if position is None or last_id is None:
            return self._ring.follow(last, keepalive)
        if position[0] > self._boot or (position[0] == self._boot and position > last):
            return _unavailable(newer_than_logged(last_id))
        if position[0] < self._boot or not self._ring.reaches((self._boot, position[1] + 1)):
            return _unavailable(
                ReplayUnavailable(f"the events after {last_id} are no longer kept by this process")
            )
        return self._ring.follow(position, keepalive)


async def _unavailable(exc: ReplayUnavailable) -> AsyncIterator[LogEntry | None]:
    raise exc
    yield None  # (an async generator: it raises where the stream is read)
