"""A worker that finds itself reaped reads its calls' owners in the directory before it ends
them, even when a command failed a moment before: in a clean-clone run a worker resumed after
a stall (SIGSTOP) met a read timeout, then the beat that found its fence; marked down, every
read of its calls' owners said "cannot tell", each call was taken for a survivor's and let go
of quietly (a 404 where the call's end was due: ``test_cluster``'s stalled owner). A real
``redis-server``."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import P
from bridge.errors import DirectoryUnavailable

from ..support.cluster import worker_directory

pytestmark = pytest.mark.timeout(30)


async def test_a_reaped_worker_reads_its_calls_owners_though_marked_down_a_moment_before(
    redis,
) -> None:
    read: list[Any] = []

    async def end_local_calls() -> None:
        try:
            read.append(await directory.record_by_engine_id("engine-call-1"))
        except DirectoryUnavailable as exc:
            read.append(exc)

    directory = worker_directory(redis.url, "w-stalled", end_local_calls=end_local_calls)
    client = aioredis.from_url(redis.url, decode_responses=True)
    await directory.start()
    try:
        assert directory.available
        directory._lease.mark_down(TimeoutError("Timeout reading from redis"))
        await client.set(f"{P}reaped:w-stalled", "survivor")  # a survivor reaped it
        await directory._lease.beat()  # back: the beat finds the fence
        assert read == [None]  # read in the directory (no such call there), not "cannot tell"
        with pytest.raises(DirectoryUnavailable):  # and a request still waits for the lease
            await directory.record("call-1")
    finally:
        await directory.close()
        await client.aclose()
