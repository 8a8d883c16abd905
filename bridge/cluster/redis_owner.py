"""Who carries a call, decided by compare-and-set in Redis: one carrier, whichever side's
answer is lost.

A worker handing a call over (a drain) and the worker taking it both act on the directory,
never on each other's answer alone: the old owner **offers** the call under a token
(``moving:{callID}``), the target **takes** it only while the record still names the old owner
and the offer stands, and the old owner, when it gives up on a target (no answer in time, an
error), **settles** the offer first: the target can no longer take it, and the record says who
won; it settles a target's 201 as well, so an offer is gone as soon as its handover ends. A
target that took the call and cannot carry it after all **gives it back** while the old
owner still waits (the record names the old owner again); once the old owner settled, a taken
call is the target's for good. A crash adoption takes the record the same way, only while it
still names the dead worker, under an offer its survivor makes for the dead worker: an adoption
that fails after its take-over (or is let go of: the survivor stops) gives the record back to
the dead worker, listed in its set again for the reap.

A new inbound call one worker claimed (:data:`CLAIM`: ``claim:{engine call id}``, never where a
call's record names the engine call) and places on another is decided the same way on the
claim: :data:`SWAP` hands the claim from the placing worker to a token, from the token to the
worker that takes the call, or back to the placing worker when it gives up; a placing worker
that gives up on a target holding the claim settles it there (``calls.inbound.settled_claim``),
which the target's give-back no longer matches. The scripts are atomic in Redis, as the
reaper's claim and fence are (:mod:`.redis_reaper`).
"""

from __future__ import annotations

from typing import Any

from ..calls import Call
from ..numbers.model import engine_key
from .directory import CallRecord
from .redis_writes import (
    UNLESS_OWNED_BY_ARGV2,
    P,
    call_key,
    owned_key,
    tenant_calls_key,
    worker_key,
)

MOVE_OFFER_MS = 60_000
"""How long a handover's offer lasts unless settled: longer than the old owner's request
(``HANDOVER_TIMEOUT``). The old owner settles it once its target answered, whatever the
answer; only an old owner that died mid-offer (or lost Redis then) leaves it to lapse."""


def moving_key(call_id: str) -> str:
    return f"{P}moving:{call_id}"


TAKE = (
    UNLESS_OWNED_BY_ARGV2
    + """if ARGV[3] ~= '' then
  if redis.call('HGET', KEYS[2], 'token') ~= ARGV[3]
      or redis.call('HGET', KEYS[2], 'state') ~= 'offered' then
    return 0
  end
  redis.call('HSET', KEYS[2], 'state', 'taken', 'record', stored or '')
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SET', KEYS[5], ARGV[4])
if ARGV[5] ~= '' then redis.call('SADD', KEYS[6], ARGV[4]) end
return 1
"""
)
"""The new owner's take-over: only while the record names the previous owner (or there is
none) and, for a handover (a token), while the old owner's offer under that token stands; the
record it replaces is kept with the offer, for :data:`GIVE_BACK`. KEYS: the record, the offer,
the new owner's set, the previous owner's, the engine id's key, the tenant's live calls; ARGV:
the record's JSON, the previous owner, the token (empty: a crash adoption), the call id, the
tenant id (empty: in no tenant's set)."""

SETTLE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local stored = redis.call('GET', KEYS[2])
if stored then
  local ok, rec = pcall(cjson.decode, stored)
  if ok and type(rec) == 'table' and type(rec['owner']) == 'string' then
    return rec['owner']
  end
end
return ''
"""
"""The old owner is done with a target (it answered, or the old owner gives up on it): its
offer is deleted if it is still this one's (taken or not, the target can neither take the call
nor give it back any more), then the record's owner says who carries the call. KEYS: the
offer, the record; ARGV: the token."""

GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1]
    and redis.call('HGET', KEYS[1], 'state') == 'taken' then
  local previous = redis.call('HGET', KEYS[1], 'record')
  if previous and previous ~= '' then
    redis.call('SET', KEYS[2], previous)
    redis.call('SADD', KEYS[4], ARGV[3])
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'offered')
  return 1
end
local stored = redis.call('GET', KEYS[2])
if stored then
  local ok, rec = pcall(cjson.decode, stored)
  if ok and type(rec) == 'table' and rec['owner'] == ARGV[2] then
    return 0
  end
end
return 1
"""
"""A target that took a call and cannot carry it: the record is the old owner's again while
its offer stands (1); once the old owner settled, a call the record names this worker's stays
its own (0); one it never took is not its own (1). KEYS: the offer, the record, this worker's
set, the old owner's; ARGV: the token, this worker, the call id."""

SWAP = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return held or ''
"""
"""A new inbound call's claim handed on only while it is held by ``ARGV[1]``: it returns who
held it (swapped when that is ``ARGV[1]``). KEYS: the claim; ARGV: the holder expected, the
next."""


CLAIM = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
return 0
"""
"""A new inbound call's claim taken by ``ARGV[1]`` unless another worker holds it or a call's
record names the engine call (``engine:``): that worker wrote it, as it writes its calls again
into a Redis back empty, where the claim is gone. -1: the claiming worker's own heartbeat is
gone, Redis emptied since its last beat (its calls, and maybe the other workers', not written
again yet): nothing is claimed. KEYS: the claim, the engine id's key, the worker's heartbeat;
ARGV: the worker, the claim's TTL."""


class Ownership:
    """The compare-and-set steps of one worker on the Redis directory (module docstring);
    Redis failures are the caller's (``redis_writes.FAILURES``)."""

    def __init__(self, redis: Any, worker_id: str) -> None:
        self._redis = redis
        self.worker_id = worker_id

    async def take(self, record: CallRecord, previous: str, token: str) -> bool:
        number_id = str(record.snapshot.get("numberID") or "")
        tenant_id = str(record.snapshot.get("tenantID") or "")
        return bool(
            await self._redis.eval(
                TAKE,
                6,
                call_key(record.call_id),
                moving_key(record.call_id),
                owned_key(self.worker_id),
                owned_key(previous),
                f"{P}engine:{engine_key(number_id, record.engine_call_id)}",
                tenant_calls_key(tenant_id),
                record.to_json(),
                previous,
                token,
                record.call_id,
                tenant_id,
            )
        )

    async def offer(self, call_id: str, token: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(moving_key(call_id), mapping={"token": token, "state": "offered"})
            pipe.pexpire(moving_key(call_id), MOVE_OFFER_MS)
            await pipe.execute()

    async def settle(self, call_id: str, token: str) -> str:
        return str(await self._redis.eval(SETTLE, 2, moving_key(call_id), call_key(call_id), token))

    async def give_back(self, call: Call, previous: str, token: str) -> bool:
        if not token:
            return True  # taken under no offer: nothing to give it back to
        return bool(
            await self._redis.eval(
                GIVE_BACK,
                4,
                moving_key(call.id),
                call_key(call.id),
                owned_key(self.worker_id),
                owned_key(previous),
                token,
                self.worker_id,
                call.id,
            )
        )

    async def claim(self, engine_call_id: str, ttl: int) -> int:
        """:data:`CLAIM` for this worker: 1 taken, 0 another's, -1 this worker's heartbeat gone."""
        keys = (f"{P}claim:{engine_call_id}", f"{P}engine:{engine_call_id}")
        worker = worker_key(self.worker_id)
        return int(await self._redis.eval(CLAIM, 3, *keys, worker, self.worker_id, ttl))

    async def swap_claim(self, engine_call_id: str, held: str, next_: str) -> str:
        return str(await self._redis.eval(SWAP, 1, f"{P}claim:{engine_call_id}", held, next_))
