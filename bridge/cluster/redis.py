"""``RedisDirectory``: the call directory several workers and machines share.

Keys (all under ``bridge:``):

- ``worker:{id}`` — the worker's heartbeat ``{url, calls, maxCalls}``, expiring after
  ``BRIDGE_HEARTBEAT_TTL``; ``workers`` — the set of worker ids ever seen (a member whose
  heartbeat expired is dead and gets reaped); ``reaped:{id}`` — set when a survivor ended a
  worker's calls (a worker that was only cut off finds it and ends its own calls too).
- ``call:{callID}`` — a :class:`CallRecord` (latest snapshot, owner, owner's internal URL,
  engine call id, and what an adopter re-opens: recording, forks, agents with their keys
  sealed); live ones stay, ended ones expire after ``BRIDGE_ENDED_CALL_TTL``.
- ``owned:{worker}`` — the live calls of one worker (its load, and what to end if it dies).
- ``tenant:{tenantID}:calls`` — a tenant's live calls, on every worker (its ``maxCalls``).
- ``engine:{engineCallID}`` — the call id of an engine call (webhook routing; also under the
  id the engine's webhooks name it by when that is another, ``webhookCallID``: a SIP call we
  placed, by Meta's wacid);
  ``claim:{engineCallID}`` — which worker created the call for a newly seen engine call (or
  the token it offers it to another worker under; none is taken where ``engine:`` names a
  call already: its worker writes that again into a Redis back empty); ``over:{engineCallID}``
  — an engine call its provider said is over before any worker carried it (Meta's terminate
  webhook before its INVITE or connect), for ``OVER_TTL`` (60 s); ``moving:{callID}``
  — a handover's offer of the call to one worker, while that handover lasts (who carries a
  call moving between workers is decided by compare-and-set: :mod:`.redis_owner`).
- ``events`` — a stream of every call event (``XADD … MAXLEN ~ BRIDGE_EVENT_BACKLOG``): the SSE
  log. Stream ids are the SSE ``id:``s, so ``Last-Event-ID`` resumes. One reader task per
  worker copies the stream into an in-process ring that every SSE client of the worker follows
  (one Redis connection, however many clients: :mod:`.redis_events`).

Writes go through one queue per worker, in event order, off the media path
(:mod:`.redis_writes`, with the key layout); when Redis is unreachable they wait (bounded,
oldest dropped) and the worker refuses new calls. The worker's heartbeat, whether Redis
answers and the fencing of a worker taken for dead are its lease (:mod:`.redis_lease`): when
Redis is back the worker re-registers its heartbeat and rewrites the records of its live
calls, so a Redis restarted empty catches up by itself. Dead workers' calls are the
reaper's (:mod:`.redis_reaper`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import redis.asyncio as aioredis

from ..calls import Call
from ..calls.events import CallEvent
from ..errors import DirectoryUnavailable, NotOwner
from ..tasks import TaskSet
from .directory import AttachmentsOf, CallRecord, WorkerInfo
from .event_ring import LogEntry
from .redis_events import RedisEventLog
from .redis_lease import Lease, live_workers
from .redis_owner import Ownership
from .redis_reaper import LostCall, Reaper
from .redis_writes import FAILURES as _FAILURES
from .redis_writes import (
    OVER_TTL,
    WORKERS,
    P,
    Records,
    WriteQueue,
    call_key,
    drop_ghosts,
    listed_live,
    over_key,
    queue_record,
    tenant_calls_key,
)
from .redis_writes import owned_key as _owned_key

log = logging.getLogger(__name__)

OP_TIMEOUT = 2.0
"""Seconds one Redis command may take before the directory counts as unreachable."""

AGAIN_WITHIN = 3.0
"""Seconds a step of who carries a call that Redis refused (a give-back, a settle) waits for
Redis to answer again before its worker decides without it: the heartbeat tries Redis every
half a second meanwhile, so a refusal that lasts a moment (a failover, a restart's loading)
is decided in the directory, one carrier whichever answers were lost."""
AGAIN_EVERY = 0.25
"""Seconds between two tries of such a step (the heartbeat finds Redis back meanwhile)."""


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
        end_lost_call: LostCall,
        end_local_calls: Callable[[], Awaitable[None]],
    ) -> None:
        self.worker_id = worker_id
        self.url = internal_url
        self.heartbeat_ttl = heartbeat_ttl
        self.ended_ttl = int(ended_ttl)
        self.backlog = backlog
        self.max_calls = max_calls
        self._local_calls = local_calls
        # One client for commands (short timeouts), one for the stream reader's blocking
        # reads. (Typed Any: redis-py annotates every command as "Awaitable or value" for its
        # sync and async clients alike.)
        self._redis: Any = aioredis.from_url(
            url,
            decode_responses=True,
            socket_timeout=OP_TIMEOUT,
            socket_connect_timeout=OP_TIMEOUT,
        )
        self._lease = Lease(
            self._redis,
            worker_id=worker_id,
            url=internal_url,
            heartbeat_ttl=heartbeat_ttl,
            max_calls=max_calls,
            calls=lambda: len(local_calls()),
            catch_up=self._catch_up,
            end_local_calls=end_local_calls,
            stopping=self._closing,
        )
        lease = self._lease
        self._records = Records(worker_id, internal_url, lambda: self.attachments)
        self._writes = WriteQueue(
            self._redis,
            worker_id=worker_id,
            ended_ttl=self.ended_ttl,
            backlog=backlog,
            up=lambda: lease.up,
            down=lease.mark_down,
            stopping=self._closing,
        )
        self._reaper = Reaper(
            self._redis,
            worker_id=worker_id,
            heartbeat_ttl=heartbeat_ttl,
            ended_ttl=self.ended_ttl,
            settled=lease.settled,
            down=lease.mark_down,
            flush=self.flush,
            end_lost_call=end_lost_call,
            draining=lambda: lease.draining,
            stopping=self._closing,
        )
        self._owner = Ownership(self._redis, worker_id)
        self._log = RedisEventLog(url, self._redis, backlog, OP_TIMEOUT, lambda: lease.up)
        self._tasks = TaskSet("directory")
        self.attachments: AttachmentsOf | None = None

    # -- state (the lease's)
    @property
    def available(self) -> bool:
        return self._lease.up

    @property
    def detail(self) -> str:
        return self._lease.detail

    def check(self, failed: BaseException | None = None) -> None:
        if failed is not None:
            self._failed(failed)
        self._lease.check()

    def _failed(self, exc: BaseException) -> NoReturn:
        """A command of a request failed: Redis is down; ``DirectoryUnavailable``."""
        raise self._lease.unavailable(exc) from exc

    # -- lifecycle
    async def start(self) -> None:
        await self._lease.start()
        self._tasks.spawn(self._lease.run(), "heartbeat")
        self._tasks.spawn(self._writes.run(), "writer")
        self._tasks.spawn(self._reaper.run(), "reaper")
        self._tasks.spawn(self._log.read_forever(), "events")

    def close_streams(self) -> None:
        self._log.close_streams()

    async def close(self) -> None:
        """Flush the queued writes (bounded), drop this worker's heartbeat, stop."""
        self._log.close_streams()
        await self.flush(3.0)
        await self._log.aclose()  # the events reader's blocking read ends with its client
        await self._tasks.close()
        await self._lease.leave()
        await self._redis.aclose()

    def _closing(self) -> bool:
        """Whether :meth:`close` has begun: its loops (heartbeat, writer, reaper) end at their
        next turn even where a cancellation was swallowed (``Lease.run``)."""
        return self._tasks.closed

    async def _catch_up(self) -> None:
        """Write every live call of this worker again (Redis may have come back empty), once
        the calls it lists for this worker that ended meanwhile are taken off."""

        def ours() -> set[str]:
            return {c.id for c in self._local_calls() if c.owner == self.worker_id}

        await drop_ghosts(self._redis, self.worker_id, ours, self.ended_ttl)
        calls = self._local_calls()
        if not calls:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for call in calls:
                self._queue_record(pipe, self._records.of(call))
            await pipe.execute()

    # -- writes
    def observe(self, event: CallEvent, call: Call | None) -> None:
        record = self._records.of(call) if call is not None else None  # None: about no call
        self._writes.push(event, record)

    async def flush(self, timeout: float) -> None:
        """Wait until what was queued before this call is written (or ``timeout``)."""
        await self._writes.flush(timeout)

    def _queue_record(self, pipe: Any, record: CallRecord) -> None:
        queue_record(pipe, record, self.worker_id, self.ended_ttl)

    # -- reads
    async def _get(self, key: str) -> str | None:
        """One GET for a request: ``DirectoryUnavailable`` when Redis does not answer."""
        self._lease.check()
        try:
            value: str | None = await self._redis.get(key)
        except _FAILURES as exc:
            self._failed(exc)
        return value

    async def record(self, call_id: str) -> CallRecord | None:
        raw = await self._get(call_key(call_id))
        return CallRecord.from_json(raw) if raw else None

    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None:
        call_id = await self._get(f"{P}engine:{engine_call_id}")
        return await self.record(call_id) if call_id else None

    async def workers(self) -> list[WorkerInfo]:
        return await live_workers(self._redis, self._lease, len(self._local_calls()))

    async def live_snapshots(self) -> list[dict[str, Any]]:
        self._lease.check()
        try:
            workers = await self._redis.smembers(WORKERS)
            call_ids: set[str] = set()
            for worker in workers:
                call_ids |= await self._redis.smembers(_owned_key(worker))
            keys = [call_key(c) for c in sorted(call_ids)]
            raws = await self._redis.mget(keys) if keys else []
        except _FAILURES as exc:
            self._failed(exc)
        records = [CallRecord.from_json(r) for r in raws if r]
        snaps = [r.snapshot for r in records if r.live]
        return sorted(snaps, key=lambda s: s.get("createdAt") or "")

    async def tenant_calls(self, tenant_id: str, verify: bool = False) -> set[str]:
        """The tenant's live calls on every worker (their ids); ``verify``: only those
        :func:`~.redis_writes.listed_live` finds live, the others dropped from the set. Empty
        when Redis does not answer (this worker's own count applies)."""
        key = tenant_calls_key(tenant_id)
        try:
            ids = sorted(await self._redis.smembers(key))
            if not verify:
                return set(ids)
            live = await listed_live(self._redis, ids)
        except _FAILURES as exc:
            self._lease.mark_down(exc)
            return set()
        if len(live) < len(ids):
            with contextlib.suppress(*_FAILURES):
                await self._redis.srem(key, *(set(ids) - live))
        return live

    async def mark_over(self, engine_call_id: str) -> None:
        self._lease.check()
        try:
            await self._redis.set(over_key(engine_call_id), "1", ex=OVER_TTL)
        except _FAILURES as exc:
            self._failed(exc)

    async def marked_over(self, engine_call_id: str) -> bool:
        return await self._get(over_key(engine_call_id)) is not None

    async def claim_engine_call(self, engine_call_id: str) -> bool:
        # Nobody can coordinate without the directory: no worker takes the call while it is
        # away (every worker polls the engine; taking it here would ring it once per worker),
        # nor while it may have come back empty with the other workers' calls not written
        # again (``Lease.check_claims``, ``redis_owner.CLAIM``). A claim naming this worker
        # already is not taken as ours: a take of a call placed here that this worker refused
        # (its answer lost) names it too, and the call rings on its finder.
        self._lease.check_claims()
        age = self._lease.heartbeat_age()  # as the claim goes: a beat answered under it is no age
        try:
            claimed = await self._owner.claim(engine_call_id, self.ended_ttl)
        except _FAILURES as exc:
            self._failed(exc)
        if claimed < 0:
            raise self._lease.forgotten(age)
        return claimed > 0

    async def drain(self) -> None:
        await self._lease.drain()

    # -- who carries a call: compare-and-set (redis_owner.py)
    async def _cas(self, step: Callable[[], Awaitable[Any]], *, again: bool = False) -> Any:
        """One compare-and-set step for a request: ``DirectoryUnavailable`` when Redis does
        not answer. ``again``: a step that may be repeated (it says the state it finds, and
        repeated after it landed it finds its own), tried again every :data:`AGAIN_EVERY`
        while Redis does not answer, within :data:`AGAIN_WITHIN`: its caller decides without
        the directory only past that. Its first refusal marks Redis down, said once."""
        deadline = time.monotonic() + (AGAIN_WITHIN if again else 0.0)
        error: DirectoryUnavailable | None = None
        while True:
            try:
                self._lease.check()
                return await step()
            except DirectoryUnavailable:
                if time.monotonic() >= deadline:
                    raise
            except _FAILURES as exc:
                # Sent: the step may have been done (its answer lost, or refused as it ran).
                error = error or DirectoryUnavailable(
                    self._lease.unavailable(exc).message, sent=True
                )
                if time.monotonic() >= deadline:
                    raise error from exc
            await asyncio.sleep(AGAIN_EVERY)

    async def take_over(self, call: Call, previous_owner: str, token: str = "") -> None:
        record = self._records.of(call)
        if not await self._cas(lambda: self._owner.take(record, previous_owner, token)):
            raise NotOwner(f"call {call.id} is no longer {previous_owner or 'unowned'}'s to give")

    async def offer_move(self, call_id: str, token: str) -> None:
        await self._cas(lambda: self._owner.offer(call_id, token))

    async def settle_move(self, call_id: str, token: str) -> str:
        return str(await self._cas(lambda: self._owner.settle(call_id, token), again=True))

    async def give_back(self, call: Call, previous_owner: str, token: str) -> bool:
        back = self._owner.give_back
        return bool(await self._cas(lambda: back(call, previous_owner, token), again=True))

    async def swap_engine_claim(
        self, engine_call_id: str, held: str, next_: str, *, again: bool = False
    ) -> str:
        swap = self._owner.swap_claim
        return str(await self._cas(lambda: swap(engine_call_id, held, next_), again=again))

    # -- the event log (redis_events.py)
    def follow(self, last_id: str | None, keepalive: float) -> AsyncIterator[LogEntry | None]:
        return self._log.follow(last_id, keepalive)
