"""The Redis directory's key layout and its writes: one queue per worker, in event order.

Writes go through :class:`WriteQueue`, off the media path: a call's record (``call:``,
``owned:``, ``engine:``, ``tenant:…:calls``) and its event (``XADD`` on ``events``) in the
order the events happened. While Redis is unreachable they wait (bounded: the oldest dropped
and counted); a sequence number per write lets :meth:`WriteQueue.flush` wait for what was
queued before it, and a batch written while older entries were evicted removes only what it
wrote. What a call's record says is :class:`Records`'s (the attachments a survivor re-opens
included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from ..calls import Call
from ..calls.events import CallEvent
from ..logs import FailureKinds
from ..numbers.model import engine_key as call_engine_key
from ..tasks import wait_event
from .directory import AttachmentsOf, CallRecord

log = logging.getLogger(__name__)

P = "bridge:"
EVENTS = P + "events"
WORKERS = P + "workers"
WRITE_QUEUE = 10_000
"""Directory writes a worker keeps while Redis is unreachable (oldest dropped beyond)."""
BATCH = 200
"""Writes sent in one pipeline."""

FAILURES = (RedisError, OSError, TimeoutError)
"""What a Redis command raises when Redis is unreachable (or too slow)."""


def worker_key(worker: str) -> str:
    return f"{P}worker:{worker}"


def owned_key(worker: str) -> str:
    return f"{P}owned:{worker}"


def call_key(call_id: str) -> str:
    return f"{P}call:{call_id}"


def tenant_calls_key(tenant_id: str) -> str:
    return f"{P}tenant:{tenant_id}:calls"


OVER_TTL = 60
"""Seconds an engine call said over before it came (``over:``) is remembered: longer than its
INVITE or connect webhook could plausibly take to overtake (Meta's terminate webhook before it)."""


def over_key(engine_key: str) -> str:
    return f"{P}over:{engine_key}"


UNLESS_OWNED_BY_ARGV2 = """
local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, rec = pcall(cjson.decode, stored)
  if ok and type(rec) == 'table' and rec['owner'] ~= ARGV[2] then
    return 0
  end
end
"""
"""The start of a script that acts only for the record's owner: the record (``KEYS[1]``) read
into ``stored``, and 0 returned when it names an owner other than ``ARGV[2]`` (none: it acts)."""

WRITE_IF_OWNER = """
local stored = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[4])
if stored then
  local ok, rec = pcall(cjson.decode, stored)
  if ok and type(rec) == 'table' and rec['owner'] ~= ARGV[2] then
    if ttl <= 0 or rec['owner'] ~= ARGV[6] then
      return 0
    end
    redis.call('SREM', KEYS[5], ARGV[3])
  end
end
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ttl)
  if KEYS[6] ~= KEYS[3] then redis.call('SET', KEYS[6], ARGV[3], 'EX', ttl) end
  if ARGV[5] ~= '' then redis.call('SREM', KEYS[4], ARGV[3]) end
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[3], ARGV[3])
  if KEYS[6] ~= KEYS[3] then redis.call('SET', KEYS[6], ARGV[3]) end
  if ARGV[5] ~= '' then redis.call('SADD', KEYS[4], ARGV[3]) end
end
return 1
"""
"""A call's record written only while the directory names the same owner (or none): a write
queued before a handover or an adoption, and sent after the new owner's ``take_over``, must
not give the call back to the worker that let it go (the directory would then list it there,
and a reaper take the call for that worker's). An end is written too where the directory
names the writer: a dead worker's call this worker took over, could not give back (Redis
refused both answers) and ended — the end is the one word left on it (else the record named a
worker that carries nothing, live, for good), and it leaves the writer's set as well. KEYS:
the record, the owner's set, the engine id's key, the tenant's live calls, the writer's set,
the key of the id the engine's webhooks name the call by (the engine id's again when none);
ARGV: the record's JSON, its owner, the call id, the ended TTL (0: live), the tenant id
(empty: the service's call, in no tenant's set), the writer."""


def queue_record(
    pipe: Any, record: CallRecord, worker_id: str, ended_ttl: int, *, take_over: bool = False
) -> None:
    """Add the writes of one call record to a pipeline (``worker_id``: the writer). The
    record is written only while the directory still names its owner (:data:`WRITE_IF_OWNER`),
    unless this is the new owner's ``take_over``."""
    if record.live and record.owner != worker_id:
        # A call this worker handed over (``call.moved``): its record is the new owner's to
        # write; the event still goes to the log.
        return
    key = call_key(record.call_id)
    number_id = str(record.snapshot.get("numberID") or "")
    engine_key = f"{P}engine:{call_engine_key(number_id, record.engine_call_id)}"
    webhook_id = record.webhook_call_id  # found by it too (a SIP call we placed: Meta's wacid)
    webhook_key = f"{P}engine:{call_engine_key(number_id, webhook_id)}" if webhook_id else ""
    owned = owned_key(record.owner)
    tenant_id = str(record.snapshot.get("tenantID") or "")
    tenant = tenant_calls_key(tenant_id)
    ttl = 0 if record.live else ended_ttl
    if not take_over:
        pipe.eval(
            WRITE_IF_OWNER,
            6,
            key,
            owned,
            engine_key,
            tenant,
            owned_key(worker_id),
            webhook_key or engine_key,
            record.to_json(),
            record.owner,
            record.call_id,
            ttl,
            tenant_id,
            worker_id,
        )
    elif record.live:
        pipe.set(key, record.to_json())
        pipe.sadd(owned, record.call_id)
        pipe.set(engine_key, record.call_id)
        if webhook_key:
            pipe.set(webhook_key, record.call_id)
        if tenant_id:
            pipe.sadd(tenant, record.call_id)
    else:
        pipe.set(key, record.to_json(), ex=ended_ttl)
        pipe.srem(owned, record.call_id)
        pipe.set(engine_key, record.call_id, ex=ended_ttl)
        if webhook_key:
            pipe.set(webhook_key, record.call_id, ex=ended_ttl)
        if tenant_id:
            pipe.srem(tenant, record.call_id)


class Records:
    """A call's directory record as this worker writes it: its snapshot, its owner (and this
    worker's URL when that is this worker), and for a live call of ours the attachments a
    survivor would re-open (``attachments()``: ``Handover.attachments`` once it exists)."""

    def __init__(
        self, worker_id: str, url: str, attachments: Callable[[], AttachmentsOf | None]
    ) -> None:
        self.worker_id = worker_id
        self.url = url
        self._attachments = attachments
        self._export_failed: set[str] = set()
        """Live calls whose attachments failed to export (warned once each)."""

    def of(self, call: Call) -> CallRecord:
        return CallRecord(
            call_id=call.id,
            owner=call.owner,
            url=self.url if call.owner == self.worker_id else "",
            engine_call_id=call.engine_call_id,
            snapshot=call.snapshot(),
            status_callback=call.status_callback,
            attachments=self._attachments_of(call),
            webhook_call_id=call.webhook_call_id,
        )

    def _attachments_of(self, call: Call) -> dict[str, Any] | None:
        """What a survivor would re-open of a live call of ours; ``None`` if it cannot be
        exported. A failing export costs the record its attachments, never the write (nor the
        heartbeat's catch-up, which writes every live call): WARNING once a call."""
        if not call.live:
            self._export_failed.discard(call.id)
            return None
        attachments = self._attachments()
        if attachments is None or call.owner != self.worker_id:
            return None
        try:
            return attachments(call)
        except Exception as exc:
            if call.id not in self._export_failed:
                self._export_failed.add(call.id)
                log.warning(
                    "call %s: its attachments could not be exported for its directory record "
                    "(%s: %s); a survivor would adopt the call without them",
                    call.id,
                    type(exc).__name__,
                    exc,
                    extra={"call_id": call.id},
                )
            return None


async def listed_live(redis: Any, ids: list[str]) -> set[str]:
    """Of ``ids``, the calls whose record is live and whose owner lists them (``owned:``): a
    record gone or ended, or live but listed by no worker (a dead worker's call its reap could
    not end: the reap forgets the worker's set), is no live call."""
    raws = await redis.mget([call_key(c) for c in ids]) if ids else []
    owners: dict[str, str] = {}
    for call_id, raw in zip(ids, raws, strict=True):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = CallRecord.from_json(raw) if raw else None
            if record is not None and record.live:
                owners[call_id] = record.owner
    if not owners:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for call_id, owner in owners.items():
            pipe.sismember(owned_key(owner), call_id)
        listed = await pipe.execute()
    return {call_id for call_id, yes in zip(owners, listed, strict=True) if yes}


async def drop_ghosts(
    redis: Any, worker_id: str, live: Callable[[], set[str]], ended_ttl: int
) -> None:
    """Take off the calls the directory lists as ``worker_id``'s that are not ``live()`` here
    (read after the listing: a call made meanwhile stays). Run when Redis answers again,
    before the live calls are written back: their end was never written (dropped from a full
    :class:`WriteQueue` while Redis was away), so their records said live for good. Out of the
    worker's and their tenants' sets, their records expire after ``ended_ttl``; said at
    WARNING."""
    ghosts = sorted(set(await redis.smembers(owned_key(worker_id))) - live())
    if not ghosts:
        return
    raws = await redis.mget([call_key(c) for c in ghosts])
    async with redis.pipeline(transaction=False) as pipe:
        pipe.srem(owned_key(worker_id), *ghosts)
        for call_id, raw in zip(ghosts, raws, strict=True):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                tenant_id = CallRecord.from_json(raw).snapshot.get("tenantID") if raw else ""
                if tenant_id:
                    pipe.srem(tenant_calls_key(str(tenant_id)), call_id)
            pipe.expire(call_key(call_id), ended_ttl)
        await pipe.execute()
    log.warning(
        "call directory: %d calls listed as worker %s's are not live here (their end was not "
        "written while Redis was away): taken off",
        len(ghosts),
        worker_id,
    )


class WriteQueue:
    """One worker's directory writes, in order (module docstring). :meth:`run` is the
    writer task (owned by the directory); ``up()`` says whether Redis answers, ``down(exc)``
    reports that it did not."""

    def __init__(
        self,
        redis: Any,
        *,
        worker_id: str,
        ended_ttl: int,
        backlog: int,
        up: Callable[[], bool],
        down: Callable[[BaseException], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._redis = redis
        self._stopping = stopping
        """Its owner closes: the writer ends at its next turn (as the heartbeat, ``Lease.run``:
        a cancellation redis-py swallowed must not leave it waiting for writes for good)."""
        self.worker_id = worker_id
        self.ended_ttl = ended_ttl
        self.backlog = backlog
        self._up = up
        self._down = down
        self._writes: deque[tuple[int, CallEvent | None, CallRecord | None]] = deque()
        self._queued_seq = 0
        self._written_seq = 0
        self._progress = asyncio.Event()
        self._pending = asyncio.Event()
        self.dropped = 0
        self._failed = FailureKinds(log)  # what the writes met, each kind logged once

    def push(self, event: CallEvent, record: CallRecord | None) -> None:
        """Queue an event (and its call's record; ``None``: about no call)."""
        if len(self._writes) >= WRITE_QUEUE:
            self._writes.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "call directory: %d event writes dropped while Redis is unreachable "
                    "(queue of %d full)",
                    self.dropped,
                    WRITE_QUEUE,
                )
        self._queued_seq += 1
        self._writes.append((self._queued_seq, event, record))
        self._pending.set()

    async def flush(self, timeout: float) -> None:
        """Wait until what was queued before this call is written (or ``timeout``)."""
        target = self._queued_seq
        deadline = time.monotonic() + timeout
        while self._up() and self._written_seq < target:
            progress = self._progress
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await wait_event(progress, remaining)

    def _unwritable(self, event: CallEvent | None, exc: Exception) -> None:
        self._failed.failed(exc, "call directory: a write of %s dropped", event and event.type)

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping():
            if not self._writes:
                self._pending.clear()
                await self._pending.wait()
                continue
            batch = list(self._writes)[:BATCH]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for _seq, event, record in batch:
                        try:
                            if record is not None:
                                queue_record(pipe, record, self.worker_id, self.ended_ttl)
                            if event is not None:
                                call_id = record.call_id if record is not None else ""
                                pipe.xadd(
                                    EVENTS,
                                    {"t": event.type, "c": call_id, "d": event.to_json()},
                                    maxlen=self.backlog,
                                    approximate=True,
                                )
                        except (TypeError, ValueError) as exc:
                            # Not JSON (a bug where it was made): never writable, so dropped.
                            # It used to end this writer, every later write of the worker
                            # queued behind it for good.
                            self._unwritable(event, exc)
                    await pipe.execute()
            except FAILURES as exc:
                self._down(exc)
                # A flush waiting on these writes looks again: with Redis found away it stops
                # waiting (``flush``), where it waited out its bound (3 s at every stop).
                self._progress.set()
                self._progress = asyncio.Event()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            last = batch[-1][0]
            while self._writes and self._writes[0][0] <= last:
                self._writes.popleft()
            self._written_seq = last
            self._progress.set()
            self._progress = asyncio.Event()
