"""A new inbound call's claim in a Redis that lost its data under a live connection (a failover
behind a proxy, a restart the client reconnected through at once): the claims of the calls
ringing were gone with it, so no worker claims a call until the workers wrote theirs again,
and a call's record names the engine call then. A real ``redis-server``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import P, worker_key
from bridge.errors import DirectoryUnavailable

from ..support.cluster import worker_directory
from ..support.waits import until

pytestmark = pytest.mark.timeout(30)


async def test_no_claim_in_an_emptied_redis_before_the_workers_wrote_their_calls_again(
    redis,
) -> None:
    """Before, the claim was a ``SET NX`` alone: in the emptied Redis the worker claimed a call
    another worker rings (its claim gone), and rang it too."""
    directory = worker_directory(redis.url, "w1", heartbeat_ttl=1.0)
    client = aioredis.from_url(redis.url, decode_responses=True)
    await directory.start()
    try:
        assert await directory.claim_engine_call("E1")  # up since its start: claims at once
        assert not await directory.claim_engine_call("E1")
        await client.flushall()  # the claims, the records and the heartbeats gone
        with pytest.raises(DirectoryUnavailable, match="lost this worker's heartbeat"):
            await directory.claim_engine_call("E2")
        assert not await client.exists(f"{P}claim:E2")
        await until(lambda: directory.available, 5, "the worker registered again", every=0.05)
        with pytest.raises(DirectoryUnavailable, match="came back"):
            await directory.claim_engine_call("E2")
        # Meanwhile the worker ringing E2 writes its call again: its record names E2.
        await client.set(f"{P}engine:E2", "call-2")

        async def claimed(engine_call_id: str) -> list[bool]:
            try:
                return [await directory.claim_engine_call(engine_call_id)]
            except DirectoryUnavailable:
                return []  # a heartbeat TTL since it came back, not yet

        assert await until(lambda: claimed("E2"), 5, "claims told again", every=0.05) == [False]
        assert await claimed("E3") == [True]
    finally:
        await directory.close()
        await client.aclose()


async def test_a_worker_started_while_redis_was_away_claims_nothing_for_a_ttl_once_it_answers(
    redis,
) -> None:
    """A worker that starts during an outage (a node lost with Redis on it: the worker's pod
    comes back first) finds Redis back empty, the other workers not yet done writing their
    calls again: it waits out the TTL they have to, as a worker that was up before does.
    Before, the hold-back was only for a worker registered before the outage: this one claimed
    at once, a call another worker rings included."""
    await redis.stop()
    directory = worker_directory(redis.url, "w2", heartbeat_ttl=1.0)
    await directory.start()  # the lease keeps trying
    try:
        with pytest.raises(DirectoryUnavailable, match="unreachable"):
            await directory.claim_engine_call("E1")
        await redis.start()  # empty
        await until(lambda: directory.available, 5, "the worker registered", every=0.05)
        with pytest.raises(DirectoryUnavailable, match="came back"):
            await directory.claim_engine_call("E1")
    finally:
        await directory.close()


async def test_a_claim_that_finds_the_heartbeat_expired_says_so_though_a_beat_came_under_it(
    redis, monkeypatch, caplog
) -> None:
    """A claim finds this worker's heartbeat gone, its last beat a TTL old (the worker's loop
    held up): said as expired. The heartbeat's beat, due as long, may be answered while the
    claim is under way; the lease's beat time was read once the claim's answer came, so that
    beat made the expired heartbeat read as Redis emptied (an operator sent looking for a
    restart that never was)."""
    directory = worker_directory(redis.url, "w1", heartbeat_ttl=1.0)
    lease = directory._lease
    client = aioredis.from_url(redis.url, decode_responses=True)

    async def held_up() -> None:  # the heartbeat's task held up: it beats here only when told
        await asyncio.Event().wait()

    claim = directory._owner.claim

    async def beaten_under_the_claim(*args: Any) -> int:
        claimed: int = await claim(*args)
        await lease.beat()  # the due beat, answered before the claim's answer is read
        return claimed

    monkeypatch.setattr(lease, "_rest", held_up)
    monkeypatch.setattr(directory._owner, "claim", beaten_under_the_claim)
    await directory.start()
    try:

        async def expired() -> bool:
            return not await client.exists(worker_key("w1"))

        await until(expired, 5, "the heartbeat expired", every=0.05)
        caplog.set_level(logging.WARNING, logger="bridge.cluster.redis_lease")
        with pytest.raises(DirectoryUnavailable, match="heartbeat expired"):
            await directory.claim_engine_call("E1")
        [said] = [r for r in caplog.records if "lost this worker's heartbeat" in r.getMessage()]
        assert "expired, its last beat" in said.getMessage()
        assert "emptied" not in said.getMessage()
    finally:
        await directory.close()
        await client.aclose()
