"""The Redis directory's reaper and lease against a real ``redis-server`` on loopback, with the
interleavings a stalled worker that comes back meets (it must never be reaped while it beats,
nor lose what it wrote while a survivor reaped it), a call moved while its worker is reaped, a
Redis emptied under a live connection, a draining survivor and one stopped mid-reap."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ..support.cluster import require_redis, worker_lease
from ..support.waits import until
from .test_cluster import dead_worker_with_calls, survivor_reaper

require_redis()

pytestmark = pytest.mark.timeout(30)


class BeatsBeforeTheClaim:
    """The survivor's Redis client, with worker ``dead`` beating once again (its loop ran again
    after a stall) just before the survivor's first script (its claim) reaches Redis: after the
    survivor saw the heartbeat gone, before it claimed and fenced the worker."""

    def __init__(self, client: Any, lease: Any) -> None:
        self._client = client
        self._lease = lease
        self.beat_fenced: bool | None = None

    async def eval(self, *args: Any) -> Any:
        if self.beat_fenced is None:
            fenced: list[bool] = []

            async def end_local_calls() -> None:
                fenced.append(True)

            self._lease._end_local_calls = end_local_calls
            await self._lease.beat()
            self.beat_fenced = bool(fenced)
        return await self._client.eval(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_worker_that_beats_again_before_its_reap_is_claimed_is_not_reaped(redis) -> None:
    """A worker whose loop stalled past the heartbeat TTL runs again and beats between the
    survivor's check (no heartbeat) and its claim. Its beat saw no fence, so it goes on with
    its calls; the survivor must not end or adopt them (two workers would carry one call, and
    the live one hears of it only a beat later). Before, the survivor claimed, fenced and
    reaped it regardless."""
    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import P, owned_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    lease = worker_lease(client, 2.0, calls=1)
    lease.worker_id = "dead"
    reaped: list[str] = []

    async def lost_call(call: Any, attachments: Any) -> None:
        reaped.append(call.id)

    racing = BeatsBeforeTheClaim(client, lease)
    try:
        await survivor_reaper(racing, "alive", lost_call).reap_once()
        assert racing.beat_fenced is False  # it beat in time: nothing told it it was dead
        assert reaped == []
        assert not await client.exists(f"{P}reaped:dead")
        assert await client.smembers(owned_key("dead")) == {"c1"}
    finally:
        await client.aclose()


async def test_a_call_the_reaped_worker_makes_once_back_stays_listed_as_its_own(redis) -> None:
    """A survivor reaps a stalled worker's calls (adoptions take seconds); meanwhile the worker
    runs again, finds the fence, ends its old calls and takes a new one. The survivor, done,
    must take off only the calls it reaped: before, it deleted the worker's whole ``owned:``
    set and its place in ``workers``, so the new call was listed nowhere (missing from
    ``GET /call/status`` and a tenant's count, and never reaped if that worker died later)."""
    import redis.asyncio as aioredis

    from bridge.calls import Call, CallState, Direction
    from bridge.cluster.directory import CallRecord
    from bridge.cluster.redis_writes import WORKERS, owned_key, queue_record

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["old"])
    lease = worker_lease(client, 2.0)
    lease.worker_id = "dead"

    async def lost_call(call: Any, attachments: Any) -> None:
        await lease.beat()  # back: fenced, it ends its old calls, then a new call comes
        fresh = Call(
            id="fresh",
            peer="2@s.whatsapp.net",
            direction=Direction.INBOUND,
            owner="dead",
            engine_call_id="e-fresh",
            state=CallState.ACTIVE,
        )
        record = CallRecord("fresh", "dead", "", "e-fresh", fresh.snapshot())
        async with client.pipeline(transaction=False) as pipe:
            queue_record(pipe, record, "dead", 60)
            await pipe.execute()

    try:
        await survivor_reaper(client, "alive", lost_call).reap_once()
        assert await client.smembers(owned_key("dead")) == {"fresh"}
        assert "dead" in await client.smembers(WORKERS)
    finally:
        await client.aclose()


async def test_a_redis_emptied_under_a_live_connection_gets_the_workers_calls_again(
    redis, caplog
) -> None:
    """Redis loses everything while no command of the worker fails (a failover behind a proxy
    or a managed endpoint that keeps the connection, a ``FLUSHALL``): the worker's heartbeat
    key is gone long before its TTL. The worker must write its live calls' records again, as
    it does when Redis comes back from an outage; before, only a failed command led there, so
    its calls stayed out of the directory for good (requests about them on other workers 404,
    a survivor could not reap them)."""
    import asyncio

    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import worker_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    caught_up: list[int] = []

    async def catch_up() -> None:
        caught_up.append(len(caught_up))

    lease = worker_lease(client, 1.5, calls=1)
    lease._catch_up = catch_up
    await lease.start()
    assert caught_up == [0]
    beating = asyncio.ensure_future(lease.run())
    try:
        await until(lambda: client.exists(worker_key("w1")), what="the first beat")
        await asyncio.sleep(0.6)  # a beat or so
        await client.flushall()
        await until(lambda: len(caught_up) == 2, 5, "the calls written again")
        assert await client.exists(worker_key("w1"))
        assert not beating.done()
        assert [r.levelno for r in caplog.records if "lost" in r.getMessage()] == [logging.WARNING]
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await client.aclose()


async def test_a_fenced_worker_keeps_beating_while_it_ends_its_calls(redis) -> None:
    """A worker back from a partition (Redis and the engine both out of reach) finds the fence
    and ends its calls: each hang-up may wait seconds for the engine. Its heartbeat must go on
    meanwhile: before, the beat waited for the ending, the key lapsed, and a second survivor
    reaped this live worker again, ending or adopting the calls it had taken since (it went on
    taking calls), and its fence was then deleted unseen."""
    import asyncio

    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import P, worker_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    ending = asyncio.Event()
    ended = asyncio.Event()

    async def end_local_calls() -> None:  # three slow hang-ups: over twice the TTL
        ending.set()
        await asyncio.sleep(2.5)
        ended.set()

    lease = worker_lease(client, 1.0, calls=3, end_local_calls=end_local_calls)
    await client.set(f"{P}reaped:w1", "a-survivor")
    beating = asyncio.ensure_future(lease.run())
    try:
        await asyncio.wait_for(ending.wait(), 5)
        lapsed = 0
        while not ended.is_set():
            lapsed += not await client.exists(worker_key("w1"))
            await asyncio.sleep(0.05)
        assert lapsed == 0

        async def fence_gone() -> bool:  # deleted once the ending is over (a moment after)
            return not await client.exists(f"{P}reaped:w1")

        await until(fence_gone, 3, "the fence deleted")
        assert not beating.done() and await client.exists(worker_key("w1"))
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await client.aclose()


class MovesBeforeTheRead:
    """The survivor's Redis client, with the dead worker's call ``c1`` taken over by worker
    ``t`` (a handover the dead worker sent just before it died) after the survivor listed the
    dead worker's calls, before it read the call's record."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.moved = False

    async def get(self, key: str) -> Any:
        from bridge.calls import CallState
        from bridge.cluster.directory import CallRecord
        from bridge.cluster.redis_writes import call_key, owned_key, queue_record

        if not self.moved and key == call_key("c1"):
            self.moved = True
            record = CallRecord.from_json(await self._client.get(key))
            snapshot = {**record.snapshot, "owner": "t", "state": CallState.ACTIVE.value}
            async with self._client.pipeline(transaction=True) as pipe:  # t's take_over
                taken = CallRecord("c1", "t", "", record.engine_call_id, snapshot)
                queue_record(pipe, taken, "t", 60, take_over=True)
                pipe.srem(owned_key("dead"), "c1")
                await pipe.execute()
        return await self._client.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_call_taken_over_while_its_dead_worker_is_reaped_is_not_adopted_again(
    redis,
) -> None:
    """A worker hands a call over and dies before it can let go: the new owner's take-over
    lands after the survivor listed the dead worker's calls. The survivor must leave that call
    to its new owner; before, it adopted (or ended) it too, from the record that already named
    the new owner: two workers carried one call, each writing it as its own."""
    import redis.asyncio as aioredis

    from bridge.cluster.directory import CallRecord
    from bridge.cluster.redis_writes import call_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    reaped: list[str] = []

    async def lost_call(call: Any, attachments: Any) -> None:
        reaped.append(call.id)

    racing = MovesBeforeTheRead(client)
    try:
        await survivor_reaper(racing, "alive", lost_call).reap_once()
        assert racing.moved and reaped == []
        stored = CallRecord.from_json(await client.get(call_key("c1")))
        assert (stored.owner, stored.live) == ("t", True)
    finally:
        await client.aclose()


async def test_a_dead_workers_record_that_cannot_be_read_expires(redis, caplog) -> None:
    """A dead worker's record the survivor cannot read (another version's, or damaged) cannot
    be ended: it is logged, and it must not stay in Redis for good. Before, it kept no TTL once
    the reap took it off the worker's set: a live-looking record nobody lists or ends, one
    more with each such reap."""
    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import call_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["fine", "damaged"])
    await client.set(call_key("damaged"), '{"callID": "damaged"}')  # no owner, no snapshot
    reaped: list[str] = []

    async def lost_call(call: Any, attachments: Any) -> None:
        reaped.append(call.id)

    try:
        await survivor_reaper(client, "alive", lost_call).reap_once()
        assert reaped == ["fine"]
        assert 0 < await client.ttl(call_key("damaged")) <= 60
        assert [r.levelno for r in caplog.records if "could not end" in r.getMessage()] == [
            logging.ERROR
        ]
    finally:
        await client.aclose()


async def test_a_draining_survivor_leaves_a_dead_workers_calls_to_one_that_takes_calls(
    redis,
) -> None:
    """A worker dies while another drains (a rolling deploy). The draining worker cannot adopt
    (it takes no calls): its recovery would end every call, movable or not. While a worker that
    takes calls is alive, that one must reap, adopting what can move; before, whichever
    survivor looked first claimed the dead worker, the draining one as likely as any. With only
    draining workers left, a draining one still reaps (nobody else would)."""
    import json

    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import P, worker_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    reaped: list[str] = []

    async def lost_call(call: Any, attachments: Any) -> None:
        reaped.append(call.id)

    other = worker_lease(client, 30.0)
    other.worker_id = "taker"
    await other.beat()
    draining = survivor_reaper(client, "draining", lost_call)
    draining._draining = lambda: True
    try:
        await draining.reap_once()
        assert reaped == [] and not await client.exists(f"{P}reap:dead")
        other.draining = True  # now every other worker drains too
        await other.beat()
        assert json.loads(await client.get(worker_key("taker")))["draining"]
        await draining.reap_once()
        assert reaped == ["c1"]
    finally:
        await client.aclose()


async def test_a_survivor_stopped_mid_reap_leaves_the_rest_to_another_at_once(redis) -> None:
    """A survivor that stops (its SIGTERM, its directory closing) while it reaps a dead worker
    lets go of its claim: another survivor reaps what is left at once. Before, the claim
    stayed for its five minutes, and so did the dead worker's other calls: live to every
    client, with nobody carrying them."""
    import asyncio

    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import P

    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    began = asyncio.Event()
    reaped: list[str] = []

    async def stuck(call: Any, attachments: Any) -> None:
        began.set()
        await asyncio.Event().wait()  # an adoption under way when the survivor stops

    async def lost_call(call: Any, attachments: Any) -> None:
        reaped.append(call.id)

    stopping = asyncio.ensure_future(survivor_reaper(client, "stopping", stuck).reap_once())
    try:
        await asyncio.wait_for(began.wait(), 5)
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        assert not await client.exists(f"{P}reap:dead")
        await survivor_reaper(client, "another", lost_call).reap_once()
        assert reaped == ["c1"]
    finally:
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        await client.aclose()
