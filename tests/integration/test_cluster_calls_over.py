"""Engine calls said over before any worker carried them (Meta's ``terminate`` before its
INVITE), as the Redis directory keeps them for every worker: one worker marks, another reads;
the memory expires; with Redis away each says ``DirectoryUnavailable`` (the SIP engine then
keeps to its own memory: an INVITE waits for Redis no longer than the directory's bounded
read, after its ``100 Trying``). A real ``redis-server``."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import OVER_TTL, P
from bridge.errors import DirectoryUnavailable

from ..support.cluster import worker_directory

pytestmark = pytest.mark.timeout(30)


async def test_a_call_one_worker_marks_over_is_over_for_another_for_a_while(redis) -> None:
    """Before, no worker could tell another: the terminate lived in its worker's memory."""
    one, other = worker_directory(redis.url, "w1"), worker_directory(redis.url, "w2")
    client = aioredis.from_url(redis.url, decode_responses=True)
    await one.start()
    await other.start()
    try:
        await one.mark_over("wacid.early")
        assert await other.marked_over("wacid.early")
        assert not await other.marked_over("wacid.another")
        assert 0 < await client.ttl(f"{P}over:wacid.early") <= OVER_TTL  # forgotten by itself
        await redis.stop()
        with pytest.raises(DirectoryUnavailable):
            await other.marked_over("wacid.early")
        with pytest.raises(DirectoryUnavailable):
            await one.mark_over("wacid.later")
    finally:
        await one.close()
        await other.close()
        await client.aclose()
