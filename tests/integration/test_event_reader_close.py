"""A worker's directory closing stops its events reader, even when the close lands as an
event's read comes back: redis-py swallowed that cancellation, and the reader went on in its
next blocking read after the close gave up on it (5 s later, said "did not stop"), left
running for good. A real ``redis-server``; the close is tried a few loop turns after an event
each time, the moments where it was lost."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import EVENTS

from ..support.cluster import worker_directory

pytestmark = pytest.mark.timeout(60)


async def test_a_directory_closed_as_an_event_is_read_leaves_no_reader_running(
    redis, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.tasks")
    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        for turns in range(4):
            directory = worker_directory(redis.url, f"w{turns}")
            await directory.start()
            await asyncio.sleep(0.2)  # its reader is in its blocking read
            await client.xadd(EVENTS, {"t": "call.ringing", "c": "c1", "d": "{}"})
            for _ in range(turns):
                await asyncio.sleep(0)
            await directory.close()
            readers = [t for t in asyncio.all_tasks() if t.get_name() == "directory:events"]
            assert readers == [], f"a reader left running (closed {turns} turns after)"
        assert not [r for r in caplog.records if "did not stop" in r.getMessage()]
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "directory:events":
                task.cancel()
        await client.aclose()
