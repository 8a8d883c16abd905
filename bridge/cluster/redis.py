"""``RedisDirectory``: the call directory several workers and machines share.

Keys (all under ``bridge:``):

- ``worker:{id}`` — the worker's heartbeat ``{url, calls, maxCalls}``, expiring after
  ``BRIDGE_HEARTBEAT_TTL``; ``workers`` — the set of worker ids ever seen (a member whose
  heartbeat expired is dead and gets reaped); ``reaped:{id}`` — set when a survivor ended a
  worker's calls (a worker that was only cut off finds it and ends its own calls too).
- ``call:{callID}`` — a :class:`CallRecord` (latest snapshot, owner, owner's internal URL,
  engine call id); live ones stay, ended ones expire after ``BRIDGE_ENDED_CALL_TTL``.
- ``owned:{worker}`` — the live calls of one worker (its load, and what to end if it dies).
- ``engine:{engineCallID}`` — the call id of an engine call (webhook routing);
  ``claim:{engineCallID}`` — which worker created the call for a newly seen engine call.
- ``events`` — a stream of every call event (``XADD … MAXLEN ~ BRIDGE_EVENT_BACKLOG``): the SSE
  log. Stream ids are the SSE ``id:``s, so ``Last-Event-ID`` resumes. One reader task per
  worker copies the stream into an in-process ring that every SSE client of the worker follows
  (one Redis connection, however many clients).

Writes go through one queue per worker, in event order, off the media path; when Redis is
unreachable they wait (bounded, oldest dropped) and the worker refuses new calls. When Redis
is back the worker re-registers its heartbeat and rewrites the records of its live calls, so a
Redis restarted empty catches up by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..calls import Call
from ..calls.events import CallEvent
from ..errors import DirectoryUnavailable
from ..tasks import TaskSet
from .directory import CallRecord, EventKey, EventRing, LogEntry, WorkerInfo, parse_event_id

log = logging.getLogger(__name__)

P = "bridge:"
EVENTS = P + "events"
WORKERS = P + "workers"
WRITE_QUEUE = 10_000
"""Directory writes a worker keeps while Redis is unreachable (oldest dropped beyond)."""
OP_TIMEOUT = 2.0
"""Seconds one Redis command may take before the directory counts as unreachable."""
REAP_CLAIM_MS = 300_000
"""How long one survivor holds the right to end a dead worker's calls (released when done)."""

_FAILURES = (RedisError, OSError, TimeoutError)


def _worker_key(worker: str) -> str:
    return f"{P}worker:{worker}"


def _owned_key(worker: str) -> str:
    return f"{P}owned:{worker}"


def _stream_key(entry_id: str) -> EventKey:
    key = parse_event_id(entry_id)
    assert key is not None, entry_id
    return key


class RedisDirectory:
    """See the module docstring."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        worker_id: str,
        internal_url: str,
        heartbeat_ttl: float,
        ended_ttl: float,
        backlog: int,
        max_calls: int,
        local_calls: Callable[[], list[Call]],
        end_lost_call: Callable[[Call], Awaitable[None]],
        end_local_calls: Callable[[], Awaitable[None]],
    ) -> None:
        self.worker_id = worker_id
        self.url = internal_url
        self.heartbeat_ttl = heartbeat_ttl
        self.ended_ttl = int(ended_ttl)
        self.backlog = backlog
        self.max_calls = max_calls
        self._local_calls = local_calls
        self._end_lost_call = end_lost_call
        self._end_local_calls = end_local_calls
        # One client for commands (short timeouts), one for the stream reader's blocking
        # reads. (Typed Any: redis-py annotates every command as "Awaitable or value" for its
        # sync and async clients alike.)
        self._redis: Any = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=OP_TIMEOUT,
            socket_connect_timeout=OP_TIMEOUT,
        )
        self._blocking: Any = aioredis.from_url(
            url, decode_responses=True, socket_timeout=15, socket_connect_timeout=OP_TIMEOUT
        )
        # Writes carry a sequence number: flush() waits for the ones queued before it, and a
        # batch written while older entries were evicted removes only what it wrote.
        self._writes: deque[tuple[int, CallEvent | None, CallRecord | None]] = deque()
        self._queued_seq = 0
        self._written_seq = 0
        self._progress = asyncio.Event()
        self._pending = asyncio.Event()
        self._dropped = 0
        self._up = False
        self._up_since = 0.0
        self._detail = "not connected yet"
        self._ring = EventRing(backlog)
        self._tasks = TaskSet("directory")
        self._draining = False

    # -- state
    @property
    def available(self) -> bool:
        return self._up

    @property
    def detail(self) -> str:
        return self._detail

    def _check(self) -> None:
        if not self._up:
            raise DirectoryUnavailable(f"the call directory (Redis) is unreachable: {self._detail}")

    def _mark_down(self, exc: BaseException) -> None:
        why = str(exc) or type(exc).__name__
        if self._up or self._detail == "not connected yet":
            log.warning("call directory (Redis) unreachable: %s; new calls are refused", why)
        self._up = False
        self._detail = why

    async def _mark_up(self) -> None:
        if self._up:
            return
        await self._catch_up()
        self._up = True
        self._up_since = time.monotonic()
        self._detail = "reachable"
        log.info("call directory (Redis) reachable; worker %s registered", self.worker_id)

    # -- lifecycle
    async def start(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self._heartbeat_once()
            await self._mark_up()
        self._tasks.spawn(self._heartbeat_loop(), "heartbeat")
        self._tasks.spawn(self._write_loop(), "writer")
        self._tasks.spawn(self._reap_loop(), "reaper")
        self._tasks.spawn(self._read_events(), "events")

    def close_streams(self) -> None:
        self._ring.close()

    async def close(self) -> None:
        """Flush the queued writes (bounded), drop this worker's heartbeat, stop."""
        self._ring.close()
        await self.flush(3.0)
        await self._tasks.close()
        if self._up:
            with contextlib.suppress(*_FAILURES):
                await self._redis.delete(_worker_key(self.worker_id))
                if not await self._redis.scard(_owned_key(self.worker_id)):
                    await self._redis.srem(WORKERS, self.worker_id)
        await self._redis.aclose()
        await self._blocking.aclose()

    # -- heartbeat, catch-up and fencing
    async def _heartbeat_once(self) -> None:
        beat = json.dumps(
            {
                "url": self.url,
                "calls": len(self._local_calls()),
                "maxCalls": self.max_calls,
                "draining": self._draining,
            }
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(_worker_key(self.worker_id), beat, px=int(self.heartbeat_ttl * 1000))
            pipe.sadd(WORKERS, self.worker_id)
            pipe.exists(f"{P}reaped:{self.worker_id}")
            *_, reaped = await pipe.execute()
        if reaped:
            await self._fenced()

    async def _fenced(self) -> None:
        """A survivor took this worker for dead (it was cut off from Redis, or stalled, for
        longer than the heartbeat TTL) and ended its calls, hung them up and told clients.
        This worker agrees: it ends its live calls too, rather than writing them back."""
        calls = self._local_calls()
        log.warning(
            "worker %s was reaped while cut off from the directory: ending its %d live calls "
            "(worker_lost)",
            self.worker_id,
            len(calls),
        )
        await self._end_local_calls()
        await self._redis.delete(f"{P}reaped:{self.worker_id}")

    async def _heartbeat_loop(self) -> None:
        while True:
            # A third of the TTL: two beats may be lost before the worker counts as dead.
            await asyncio.sleep(self.heartbeat_ttl / 3 if self._up else 0.5)
            try:
                await self._heartbeat_once()
                await self._mark_up()
            except _FAILURES as exc:
                self._mark_down(exc)

    async def _catch_up(self) -> None:
        """Write every live call of this worker again (Redis may have come back empty)."""
        calls = self._local_calls()
        if not calls:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                self._queue_record(pipe, self._record(call))
            await pipe.execute()

    # -- writes
    def _record(self, call: Call) -> CallRecord:
        return CallRecord(
            call_id=call.id,
            owner=call.owner,
            url=self.url if call.owner == self.worker_id else "",
            engine_call_id=call.engine_call_id,
            snapshot=call.snapshot(),
            status_callback=call.status_callback,
        )

    def observe(self, event: CallEvent, call: Call | None) -> None:
        if len(self._writes) >= WRITE_QUEUE:
            self._writes.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning(
                    "call directory: %d event writes dropped while Redis is unreachable "
                    "(queue of %d full)",
                    self._dropped,
                    WRITE_QUEUE,
                )
        self._queued_seq += 1
        record = self._record(call) if call is not None else None  # None: about no call
        self._writes.append((self._queued_seq, event, record))
        self._pending.set()

    async def flush(self, timeout: float) -> None:
        """Wait until what was queued before this call is written (or ``timeout``)."""
        target = self._queued_seq
        deadline = time.monotonic() + timeout
        while self._up and self._written_seq < target:
            progress = self._progress
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)

    def _queue_record(self, pipe: Any, record: CallRecord) -> None:
        if record.live and record.owner != self.worker_id:
            # A call this worker handed over (``call.moved``): its record is the new owner's
            # to write; the event still goes to the log.
            return
        key = f"{P}call:{record.call_id}"
        engine_key = f"{P}engine:{record.engine_call_id}"
        if record.live:
            pipe.set(key, record.to_json())
            pipe.sadd(_owned_key(record.owner), record.call_id)
            pipe.set(engine_key, record.call_id)
        else:
            pipe.set(key, record.to_json(), ex=self.ended_ttl)
            pipe.srem(_owned_key(record.owner), record.call_id)
            pipe.set(engine_key, record.call_id, ex=self.ended_ttl)

    async def _write_loop(self) -> None:
        backoff = 0.2
        while True:
            if not self._writes:
                self._pending.clear()
                await self._pending.wait()
                continue
            batch = list(self._writes)[:200]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for _seq, event, record in batch:
                        if record is not None:
                            self._queue_record(pipe, record)
                        if event is not None:
                            call_id = record.call_id if record is not None else ""
                            pipe.xadd(
                                EVENTS,
                                {"t": event.type, "c": call_id, "d": event.to_json()},
                                maxlen=self.backlog,
                                approximate=True,
                            )
                    await pipe.execute()
            except _FAILURES as exc:
                self._mark_down(exc)
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

    # -- dead workers
    async def _reap_loop(self) -> None:
        # A dead worker is found within a quarter second of its heartbeat lapsing (the
        # contract: its calls end within the TTL + 1 s); the check is a SMEMBERS and an EXISTS.
        interval = min(0.25, self.heartbeat_ttl / 8)
        while True:
            await asyncio.sleep(interval)
            # Just reconnected: other workers may not have re-registered yet; wait one TTL
            # before calling anyone dead.
            if not self._up or time.monotonic() - self._up_since < self.heartbeat_ttl:
                continue
            try:
                await self._reap_once()
            except _FAILURES as exc:
                self._mark_down(exc)

    async def _reap_once(self) -> None:
        for worker in await self._redis.smembers(WORKERS):
            if worker == self.worker_id or await self._redis.exists(_worker_key(worker)):
                continue
            # Exactly one survivor ends a dead worker's calls.
            claim = f"{P}reap:{worker}"
            if not await self._redis.set(claim, self.worker_id, nx=True, px=REAP_CLAIM_MS):
                continue
            call_ids = await self._redis.smembers(_owned_key(worker))
            log.warning(
                "worker %s lost (no heartbeat for %.0f s): ending its %d calls",
                worker,
                self.heartbeat_ttl,
                len(call_ids),
            )
            # Fence it first: if it was only cut off, it ends its own calls when it is back.
            await self._redis.set(f"{P}reaped:{worker}", self.worker_id, ex=self.ended_ttl)
            for call_id in call_ids:
                await self._reap_call(worker, call_id)
            await self.flush(5.0)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(_owned_key(worker))
                pipe.srem(WORKERS, worker)
                pipe.delete(claim)
                await pipe.execute()

    async def _reap_call(self, worker: str, call_id: str) -> None:
        raw = await self._redis.get(f"{P}call:{call_id}")
        if raw is None:
            return
        try:
            record = CallRecord.from_json(raw)
            if record.live:
                call = Call.from_snapshot(
                    record.snapshot, record.engine_call_id, record.status_callback
                )
                await self._end_lost_call(call)
        except _FAILURES:
            raise
        except Exception:  # one unreadable record must not stop the others being ended
            log.exception("worker %s lost: could not end its call %s", worker, call_id)

    # -- reads
    async def _get(self, key: str) -> str | None:
        """One GET for a request: ``DirectoryUnavailable`` when Redis does not answer."""
        self._check()
        try:
            value: str | None = await self._redis.get(key)
        except _FAILURES as exc:
            self._mark_down(exc)
            self._check()
            raise
        return value

    async def record(self, call_id: str) -> CallRecord | None:
        raw = await self._get(f"{P}call:{call_id}")
        return CallRecord.from_json(raw) if raw else None

    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None:
        call_id = await self._get(f"{P}engine:{engine_call_id}")
        return await self.record(call_id) if call_id else None

    async def workers(self) -> list[WorkerInfo]:
        self._check()
        try:
            ids = sorted(await self._redis.smembers(WORKERS))
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker in ids:
                    pipe.get(_worker_key(worker))
                    pipe.scard(_owned_key(worker))
                answers = await pipe.execute()
        except _FAILURES as exc:
            self._mark_down(exc)
            self._check()
            raise
        found = []
        for i, worker in enumerate(ids):
            beat, calls = answers[2 * i], answers[2 * i + 1]
            if beat is None:
                continue  # dead (or not beating yet)
            info = json.loads(beat)
            if worker == self.worker_id:
                calls = len(self._local_calls())  # fresher than the directory
            found.append(
                WorkerInfo(
                    worker,
                    info["url"],
                    int(calls),
                    int(info["maxCalls"]),
                    bool(info.get("draining")),
                )
            )
        return found

    async def live_snapshots(self) -> list[dict[str, Any]]:
        self._check()
        try:
            workers = await self._redis.smembers(WORKERS)
            call_ids: set[str] = set()
            for worker in workers:
                call_ids |= await self._redis.smembers(_owned_key(worker))
            keys = [f"{P}call:{c}" for c in sorted(call_ids)]
            raws = await self._redis.mget(keys) if keys else []
        except _FAILURES as exc:
            self._mark_down(exc)
            self._check()
            raise
        records = [CallRecord.from_json(r) for r in raws if r]
        snaps = [r.snapshot for r in records if r.live]
        return sorted(snaps, key=lambda s: s.get("createdAt") or "")

    async def claim_engine_call(self, engine_call_id: str) -> bool:
        try:
            return bool(
                await self._redis.set(
                    f"{P}claim:{engine_call_id}", self.worker_id, nx=True, ex=self.ended_ttl
                )
            )
        except _FAILURES as exc:
            # Nobody can coordinate without the directory: no worker takes the call (every
            # worker polls the engine; taking it here would ring it once per worker). New
            # calls are refused while Redis is away, inbound ones too.
            self._mark_down(exc)
            log.warning(
                "inbound engine call %s not taken: the call directory is unreachable (%s)",
                engine_call_id,
                self._detail,
            )
            return False

    async def drain(self) -> None:
        self._draining = True
        with contextlib.suppress(*_FAILURES):
            await self._heartbeat_once()

    async def take_over(self, call: Call, previous_owner: str) -> None:
        self._check()
        record = self._record(call)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                self._queue_record(pipe, record)
                pipe.srem(_owned_key(previous_owner), call.id)
                await pipe.execute()
        except _FAILURES as exc:
            self._mark_down(exc)
            self._check()
            raise

    # -- the event log
    async def _read_events(self) -> None:
        """Copy the events stream into this worker's ring (one blocking reader per worker)."""
        position: str | None = None
        while True:
            try:
                if position is None:
                    newest = await self._redis.xrevrange(EVENTS, count=1)
                    position = newest[0][0] if newest else "0-0"
                answer = await self._blocking.xread({EVENTS: position}, count=500, block=5000)
            except _FAILURES:
                await asyncio.sleep(1.0)  # the heartbeat notices and reports it
                continue
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    position = entry_id
                    entry = (entry_id, fields["t"], fields["c"], fields["d"])
                    self._ring.append(_stream_key(entry_id), entry)

    async def follow(self, last_id: str | None, keepalive: float) -> AsyncIterator[LogEntry | None]:
        position = parse_event_id(last_id)
        if position is not None and last_id is not None and self._up:
            # What the client missed, from the stream itself (it may be older than the ring
            # holds); then the ring from there on.
            with contextlib.suppress(*_FAILURES):
                missed = await self._redis.xrange(EVENTS, min=f"({last_id}", count=self.backlog)
                for entry_id, fields in missed:
                    position = _stream_key(entry_id)
                    yield entry_id, fields["t"], fields["c"], fields["d"]
        if position is None:
            position = self._ring.last_key
        async for entry in self._ring.follow(position, keepalive):
            yield entry
