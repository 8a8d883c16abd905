"""Dead workers on the Redis directory: exactly one survivor ends a dead worker's calls.

A worker whose heartbeat (``worker:{id}``) has lapsed is dead. The first survivor to claim
``reap:{id}`` (and only it, until the claim is released or lapses) fences it (``reaped:{id}``:
if it was only cut off, it ends its own calls when it is back), hands each of its live calls
to ``end_lost_call`` (recovery: adopted here if it can move, else ended ``worker_lost``),
:data:`REAP_AT_ONCE` side by side, then takes those calls off its set and forgets the worker
unless it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..calls import Call
from ..tasks import wait_event
from .directory import CallRecord
from .redis_writes import FAILURES, WORKERS, P, call_key, owned_key, worker_key

log = logging.getLogger(__name__)

LostCall = Callable[[Call, dict[str, Any] | None], Awaitable[None]]
"""``lost(call, attachments)``: recovery's decision for a dead worker's live call, with what
its record says to re-open (``CallRecord.attachments``)."""

REAP_CLAIM_MS = 300_000
"""How long one survivor's claim on a dead worker lasts unless renewed: it is renewed every
third of it while the survivor works (so a long reap is never raced by a second survivor) and
released when done or when the survivor stops mid-reap; one that dies mid-reap leaves it to
lapse, and one whose reap Redis cut short takes it up again once Redis is back
(:data:`CLAIM`)."""
CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[3])
return 1
"""
"""Claim a dead worker and fence it, in one step, only while its heartbeat is still gone: a
worker that beat again since the survivor looked (its loop ran again after a stall) is alive
and is neither reaped nor fenced, and one that beats after this step finds the fence in that
very beat (it sets its heartbeat, then reads the fence). The claim may be free, or already
this survivor's (a reap Redis cut short: its claim stayed, and ``SET NX`` refused the survivor
itself until the claim lapsed). KEYS: the claim, the worker's heartbeat, its fence; ARGV: the
survivor, the claim's time (ms), the fence's (s)."""
RENEW_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
"""Extend the claim only while it is still this survivor's (compare and extend, atomically)."""
RELEASE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Let go of the claim only while it is still this survivor's (compare and delete)."""
FORGET = """
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return 1
"""
"""Forget a reaped worker (``workers``) once it owns nothing and still has no heartbeat: a
worker that ran again while it was reaped (fenced, it ended its old calls) is alive, and the
calls it took since are its own. KEYS: its ``owned:`` set, its heartbeat, ``workers``; ARGV:
the worker."""
REAP_AT_ONCE = 16
"""A dead worker's calls handed to ``end_lost_call`` side by side: an adoption waits for the
call's engine media and then re-opens its forks and agents (a model's session set-up: up to
seconds, ``CONNECT_TIMEOUT`` when the model is away), and one call's must not hold up the
next one's media, nor all of them the claim's time."""


def _never() -> bool:
    return False


class Reaper:
    """The directory's dead-worker check (its task runs :meth:`run`). ``settled()`` says
    whether the directory has been up long enough to call anyone dead; ``down(exc)`` reports
    Redis unreachable; ``flush`` waits for the directory's queued writes; ``draining()`` says
    whether this worker drains (it then leaves the dead to a worker that takes calls)."""

    def __init__(
        self,
        redis: Any,
        *,
        worker_id: str,
        heartbeat_ttl: float,
        ended_ttl: int,
        settled: Callable[[], bool],
        down: Callable[[BaseException], None],
        flush: Callable[[float], Awaitable[None]],
        end_lost_call: LostCall,
        draining: Callable[[], bool] = _never,
        stopping: Callable[[], bool] = _never,
    ) -> None:
        self._redis = redis
        self._stopping = stopping
        """Its owner closes: the check ends at its next turn (as the heartbeat, ``Lease.run``)."""
        self._draining = draining
        self.worker_id = worker_id
        self.heartbeat_ttl = heartbeat_ttl
        self.ended_ttl = ended_ttl
        self._settled = settled
        self._down = down
        self._flush = flush
        self._end_lost_call = end_lost_call

    async def run(self) -> None:
        # A dead worker is found within a quarter second of its heartbeat lapsing (the
        # contract: its calls end within the TTL + 1 s); the check is a SMEMBERS and an EXISTS.
        interval = min(0.25, self.heartbeat_ttl / 8)
        while not self._stopping():
            await asyncio.sleep(interval)
            if not self._settled():
                continue
            try:
                await self.reap_once()
            except FAILURES as exc:
                self._down(exc)

    async def reap_once(self) -> None:
        began = time.monotonic()
        workers = await self._redis.smembers(WORKERS)
        for worker in workers:
            if worker == self.worker_id or await self._redis.exists(worker_key(worker)):
                continue
            if not self._settled() or time.monotonic() - began > self.heartbeat_ttl / 2:
                # The reads outlasted what a heartbeat says (this worker stopped, or Redis
                # paused, under them; its keys expired meanwhile by Redis's clock): a heartbeat
                # missing now is no proof of a death until every worker had a TTL to beat again.
                return
            # A draining worker takes no calls: its recovery would end every one, movable or
            # not. A worker that takes calls adopts what can move: the dead are its to reap.
            if self._draining() and await self._takers(workers - {self.worker_id}):
                return
            # Exactly one survivor ends a dead worker's calls.
            claim, fence = f"{P}reap:{worker}", f"{P}reaped:{worker}"
            if not await self._redis.eval(
                CLAIM,
                3,
                claim,
                worker_key(worker),
                fence,
                self.worker_id,
                REAP_CLAIM_MS,
                self.ended_ttl,
            ):
                continue
            call_ids = await self._redis.smembers(owned_key(worker))
            log.warning(
                "worker %s lost (no heartbeat for %.0f s): ending its %d calls",
                worker,
                self.heartbeat_ttl,
                len(call_ids),
            )
            reaped = asyncio.Event()
            renewing = asyncio.create_task(self._renew(claim, reaped), name=f"reap-claim:{worker}")
            try:
                # Fenced by the claim: if it was only cut off, it ends its own calls when back.
                await self._reap_calls(worker, call_ids)
                await self._flush(5.0)
            except asyncio.CancelledError:
                # This survivor stops (its directory closes): another takes up what is left
                # now, not once the claim lapsed (the calls not reached stay in its set).
                with contextlib.suppress(*FAILURES):
                    await self._redis.eval(RELEASE_IF_MINE, 1, claim, self.worker_id)
                raise
            finally:
                reaped.set()
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
            # Only the calls reaped here are taken off its set (any it took since it ran again
            # stay), and the worker is forgotten only if it is still gone.
            async with self._redis.pipeline(transaction=False) as pipe:
                if call_ids:
                    pipe.srem(owned_key(worker), *call_ids)
                pipe.eval(FORGET, 3, owned_key(worker), worker_key(worker), WORKERS, worker)
                pipe.delete(claim)
                await pipe.execute()

    async def _takers(self, workers: set[str]) -> bool:
        """Whether any of ``workers`` is alive and takes calls (not draining)."""
        ids = sorted(workers)
        beats = await self._redis.mget([worker_key(w) for w in ids]) if ids else []
        for beat in beats:
            if beat is None:
                continue
            try:
                if not json.loads(beat).get("draining"):
                    return True
            except (ValueError, AttributeError):
                continue  # another version's heartbeat: not counted on
        return False

    async def _renew(self, claim: str, reaped: asyncio.Event) -> None:
        """Keep ``claim`` this survivor's until ``reaped`` (cancelled then too; the event ends it
        when redis-py swallowed the cancellation, which left it renewing the claim for good and
        the reap waiting on it). A renewal that fails is tried again at the next; if Redis stays
        away, the claim lapses, as it would for a survivor that died."""
        while not reaped.is_set():
            if await wait_event(reaped, REAP_CLAIM_MS / 3000):
                return
            try:
                await self._redis.eval(RENEW_IF_MINE, 1, claim, self.worker_id, REAP_CLAIM_MS)
            except FAILURES as exc:
                log.warning("could not renew the claim %s: %s", claim, exc)

    async def _reap_calls(self, worker: str, call_ids: set[str]) -> None:
        """Each call to ``end_lost_call``, :data:`REAP_AT_ONCE` at a time; a Redis failure
        (``FAILURES``) is raised once all are done (the claim lapses: reaped again later)."""
        limit = asyncio.Semaphore(REAP_AT_ONCE)

        async def reap(call_id: str) -> None:
            async with limit:
                await self._reap_call(worker, call_id)

        done = await asyncio.gather(*(reap(c) for c in call_ids), return_exceptions=True)
        failed = next((r for r in done if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed

    async def _reap_call(self, worker: str, call_id: str) -> None:
        raw = await self._redis.get(call_key(call_id))
        if raw is None:
            return
        try:
            record = CallRecord.from_json(raw)
            # A call taken over since the worker's calls were listed (a handover it sent just
            # before it died) is its new owner's: adopting it too would make two carriers.
            if record.live and record.owner == worker:
                call = Call.from_snapshot(
                    record.snapshot, record.engine_call_id, record.status_callback
                )
                call.webhook_call_id = record.webhook_call_id  # its key expires with the end
                await self._end_lost_call(call, record.attachments)
        except FAILURES:
            raise
        except Exception:  # one unreadable record must not stop the others being ended
            log.exception("worker %s lost: could not end its call %s", worker, call_id)
            # Off the worker's set once reaped, nobody lists or ends it: it expires as an
            # ended call's record does, never stays for good.
            await self._redis.expire(call_key(call_id), self.ended_ttl)
