"""The call directory: where every instance finds a call's owner, the workers and the event log.

One process (the default) needs none of it: :class:`MemoryDirectory` answers from this
process and keeps the recent events for SSE clients that reconnect with ``Last-Event-ID``
(:mod:`.event_ring`).
Several workers or machines share :class:`~bridge.cluster.redis.RedisDirectory` instead.

The directory is fed by one observer of the calls' events (:meth:`Directory.observe`): every
change of a call is an event, so the record of a call in the directory is its snapshot as of
its latest event, and the event log is those same events. Media never waits for the directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..calls import Call
from ..calls.events import CallEvent
from ..errors import DirectoryUnavailable, ReplayUnavailable
from .event_ring import EventRing, LogEntry, newer_than_logged, resume_position


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

    async def mark_over(self, engine_call_id: str) -> None:
        """The engine call is over before any worker carried it (Meta's ``terminate`` before
        its INVITE or connect): remembered for every worker a while (``over:``); one process:
        nothing kept here, its engine's memory is all (``engines.CallsOver``)."""

    async def marked_over(self, engine_call_id: str) -> bool:
        """Whether any worker said :meth:`mark_over` for it lately (a bounded read)."""

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

    async def mark_over(self, engine_call_id: str) -> None:
        pass  # one process: the engine remembers it itself

    async def marked_over(self, engine_call_id: str) -> bool:
        return False

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
