"""The events stream on Redis may hold an entry that is not a call event (written by something
else, or by a bridge of another version during a rolling upgrade): each worker's reader passes
it over, says so once, and goes on copying the events after it (it used to end on the missing
field: that worker's SSE clients heard no event again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from bridge.cluster.redis_events import RedisEventLog
from bridge.cluster.redis_writes import EVENTS

from ..support.waits import until


async def test_a_foreign_entry_is_passed_over_and_the_events_after_it_arrive(redis, caplog) -> None:
    client = aioredis.from_url(redis.url, decode_responses=True)
    log = RedisEventLog(redis.url, client, backlog=100, op_timeout=2.0, up=lambda: True)
    caplog.set_level(logging.WARNING, logger="bridge.cluster")
    reader = asyncio.ensure_future(log.read_forever())
    got: list[tuple[str, ...]] = []

    async def follow() -> None:
        async for entry in log.follow(None, keepalive=0.2):
            if entry is not None:
                got.append(entry)

    follower = asyncio.ensure_future(follow())
    try:
        await asyncio.sleep(0.3)  # the reader is at the stream's end
        await client.xadd(EVENTS, {"t": "call.ringing", "c": "c1", "d": "{}"})
        await client.xadd(EVENTS, {"kind": "something else"})
        await client.xadd(EVENTS, {"v": "2", "type": "call.answered"})
        await client.xadd(EVENTS, {"t": "call.answered", "c": "c1", "d": "{}"})
        await until(lambda: len(got) >= 2, timeout=5, what="the events after the foreign ones")
        assert [e[1] for e in got] == ["call.ringing", "call.answered"]
        assert not reader.done()
        # A client resuming from the first event reads the rest from the stream itself.
        first_id = got[0][0]
        resumed: list[tuple[str, ...]] = []
        async for entry in log.follow(first_id, keepalive=0.2):
            if entry is None:
                break
            resumed.append(entry)
        assert [e[1] for e in resumed] == ["call.answered"]
        said = [r for r in caplog.records if "not a call event" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in said]
    finally:
        for task in (follower, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.close_streams()
        await log.aclose()
        await client.aclose()
