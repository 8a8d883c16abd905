"""``RedisDeskStore``: the desk's shared state in the call directory's Redis.

Keys (under ``bridge:desk:``): ``agent:{tenant}/{agentID}`` (an :class:`~.store.AgentRecord`
as JSON, changed only atomically: a WATCH/MULTI transaction, or the lease's script),
``agents`` (the set of those keys), ``claim:{callID}`` (who took a ringing call: ``SET NX``,
so exactly one worker's accept wins, and a hang-up claims it the same way), ``ring:{callID}``
(where the call's route is: step, round, who is rung; a survivor resumes it when the call's
owner dies), ``routes`` (a hash of route id → route JSON) and the channel ``bus`` (messages
between workers: ring this agent, this agent accepted, the call was taken).

Its commands ask the call directory first whether Redis is known away (``check``: the
directory's lease, which owns that knowledge): while it is, each fails at once with
``DirectoryUnavailable`` instead of waiting out the socket's timeout (2 s) — a ringing call's
route read among them, which made each call of an outage ring two seconds before its route was
skipped. A command that fails tells the lease so (``check(exc)``: Redis marked down, the
heartbeat woken), as the directory's own do: the next desk or directory command fails at once.
The bus's listener waits for Redis on its own (:meth:`RedisDeskStore._listen`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..logs import FailureKinds
from ..tasks import TaskSet
from .store import CLAIM_TTL, AgentChange, AgentRecord, BusHandler, _key, at_cap

log = logging.getLogger(__name__)

P = "bridge:desk:"
CHANNEL = P + "bus"
RENEW_SCRIPT = """
for i, key in ipairs(KEYS) do
  local raw = redis.call('GET', key)
  if raw then
    local rec = cjson.decode(raw)
    if rec['worker'] == ARGV[1] then
      rec['alive_until'] = tonumber(ARGV[2])
      redis.call('SET', key, cjson.encode(rec))
    end
  end
end
return 1
"""

FAILURES = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a command raises when Redis is unreachable or too slow (a refusal, a bug's
``ResponseError``, is not Redis away: it marks no directory down)."""
A = ParamSpec("A")
R = TypeVar("R")


def _asked(
    command: Callable[Concatenate[RedisDeskStore, A], Awaitable[R]],
) -> Callable[Concatenate[RedisDeskStore, A], Awaitable[R]]:
    """A store's command: refused at once while Redis is known away; its failure told."""

    @functools.wraps(command)
    async def asked(store: RedisDeskStore, *args: A.args, **kwargs: A.kwargs) -> R:
        store._check(None)
        try:
            return await command(store, *args, **kwargs)
        except FAILURES as exc:
            store._check(exc)  # raises DirectoryUnavailable, Redis marked down
            raise

    return asked


class RedisDeskStore:
    """See the module docstring."""

    def __init__(
        self, url: str, check: Callable[[BaseException | None], None] = lambda failed: None
    ) -> None:
        self._redis: Any = aioredis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._check = check
        """Raises ``DirectoryUnavailable`` while the directory's lease knows Redis away, or
        told a command's failure (the default, for a store of its own in tests: every command
        tries Redis, its failure raised as it is)."""
        self._tasks = TaskSet("desk-redis")
        self._renew = self._redis.register_script(RENEW_SCRIPT)

    async def start(self, on_message: BusHandler) -> None:
        pubsub = self._redis.pubsub()
        try:  # subscribed before the start returns, so nothing published after it is missed
            await pubsub.subscribe(CHANNEL)
        except (RedisError, OSError):
            # Redis down as the worker starts: the read loop subscribes once it is reached
            # (and says so), as the numbers store and the directory's lease wait it out.
            pass
        self._tasks.spawn(self._listen(pubsub, on_message), "bus")

    async def _listen(self, pubsub: Any, on_message: BusHandler) -> None:
        """Hand each message of the bus to ``on_message`` for as long as the store is open.
        Nothing that happens to one read ends it (once it ended, no other worker's ring,
        claim or lent leg reached this one again, the process going on): Redis going away
        is waited out (the next read connects and subscribes again; what was published
        meanwhile is lost, as pub/sub loses it), a message the handler fails on is logged
        and the next one read."""
        down = False
        failed = FailureKinds(log)  # the handler's failures, each kind logged once
        try:
            # Until the store closes, checked at each turn too: redis-py may swallow the
            # close's cancellation as a read's answer arrives (``cluster/redis_lease.py``).
            while not self._tasks.closed:
                try:
                    if not pubsub.subscribed:  # at start, until Redis is first reached
                        await pubsub.subscribe(CHANNEL)
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                except (RedisError, OSError) as exc:
                    if not down:
                        down = True
                        log.warning("desk bus: Redis unreachable (%s): listening again", exc)
                    await asyncio.sleep(1.0)
                    continue
                if down:
                    down = False
                    log.warning("desk bus: Redis reachable again")
                if item is None or item.get("type") != "message":
                    continue
                try:
                    message = json.loads(item["data"])
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                try:
                    on_message(message)
                except Exception as exc:
                    failed.failed(exc, "desk bus: %r not handled", message.get("op"))
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self._tasks.close()
        await self._redis.aclose()

    @_asked
    async def update_agent(
        self, tenant_id: str | None, agent_id: str, change: AgentChange
    ) -> AgentRecord | None:
        # Optimistic: the record is read under WATCH and written in MULTI/EXEC, which Redis
        # refuses if another client wrote it meanwhile (a renewal too); then read again.
        key = P + "agent:" + _key(tenant_id, agent_id)

        async def update(pipe: Any) -> AgentRecord | None:
            raw = await pipe.get(key)
            record = change(AgentRecord.from_json(raw) if raw else None)
            if record is not None:
                pipe.multi()
                pipe.set(key, record.to_json())
                pipe.sadd(P + "agents", key)
            return record

        record: AgentRecord | None = await self._redis.transaction(
            update, key, value_from_callable=True
        )
        return record

    @_asked
    async def agent(self, tenant_id: str | None, agent_id: str) -> AgentRecord | None:
        raw = await self._redis.get(P + "agent:" + _key(tenant_id, agent_id))
        return AgentRecord.from_json(raw) if raw else None

    @_asked
    async def agents(self, tenant_id: str | None, *, every: bool = False) -> list[AgentRecord]:
        keys = sorted(await self._redis.smembers(P + "agents"))
        prefix = P + "agent:" + (tenant_id or "") + "/"
        if not every:
            keys = [k for k in keys if k.startswith(prefix)]
        if not keys:
            return []
        raws = await self._redis.mget(keys)
        return [AgentRecord.from_json(raw) for raw in raws if raw]

    @_asked
    async def renew(self, records: list[AgentRecord], until: float) -> None:
        if records:
            keys = [P + "agent:" + _key(r.tenant_id, r.agent_id) for r in records]
            await self._renew(keys=keys, args=[records[0].worker, until])

    @_asked
    async def claim(self, call_id: str, who: str) -> str:
        key = P + "claim:" + call_id
        if await self._redis.set(key, who, nx=True, ex=CLAIM_TTL):
            return who
        return str(await self._redis.get(key) or "")

    @_asked
    async def put_ring(self, call_id: str, ring: dict[str, Any]) -> None:
        await self._redis.set(P + "ring:" + call_id, json.dumps(ring), ex=CLAIM_TTL)

    @_asked
    async def ring(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._redis.get(P + "ring:" + call_id)
        return json.loads(raw) if raw else None

    @_asked
    async def drop_ring(self, call_id: str) -> None:
        await self._redis.delete(P + "ring:" + call_id)

    @_asked
    async def put_route(
        self, route_id: str, body: dict[str, Any], *, cap: int | None = None
    ) -> bool:
        # As update_agent: the routes counted under WATCH, the route written in MULTI/EXEC,
        # which Redis refuses if another worker wrote a route meanwhile; then counted again.
        key = P + "routes"

        async def put(pipe: Any) -> bool:
            if cap is not None:
                rows = await pipe.hgetall(key)
                if at_cap({k: json.loads(v) for k, v in rows.items()}, route_id, body, cap):
                    return False
            pipe.multi()
            pipe.hset(key, route_id, json.dumps(body))
            return True

        stored: bool = await self._redis.transaction(put, key, value_from_callable=True)
        return stored

    @_asked
    async def route(self, route_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(P + "routes", route_id)
        return json.loads(raw) if raw else None

    @_asked
    async def routes(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in (await self._redis.hgetall(P + "routes")).values()]

    @_asked
    async def delete_route(self, route_id: str) -> bool:
        return bool(await self._redis.hdel(P + "routes", route_id))

    @_asked
    async def publish(self, message: dict[str, Any]) -> None:
        await self._redis.publish(CHANNEL, json.dumps(message))
