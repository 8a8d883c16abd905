"""A new inbound call's claim in a Redis that lost its data under a live connection (a failover
behind a proxy, a restart the client reconnected through at once): the claims of the calls
ringing were gone with it, so no worker claims a call until the workers wrote theirs again,
and a call's record names the engine call then. A real ``redis-server``."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import P
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
