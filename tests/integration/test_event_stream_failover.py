"""The events stream after Redis came back empty on a host whose clock is behind the old
stream's ids (a failover to a replica that had none of it): every new id is lower than the
last one each worker's reader saw. The reader used to read on after that id, in the new
stream's future: its SSE clients heard no event again until the clock caught up. A real
``redis-server``, restarted empty; the old primary's ids are an hour ahead."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_events import RedisEventLog
from bridge.cluster.redis_writes import EVENTS
from bridge.errors import ReplayUnavailable

from ..support.waits import until

pytestmark = pytest.mark.timeout(30)


async def test_events_after_an_empty_failover_to_a_clock_behind_reach_the_followers(
    redis, caplog
) -> None:
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
        ahead = f"{int(time.time() * 1000) + 3_600_000}-0"  # the old primary's clock
        await client.xadd(EVENTS, {"t": "call.ringing", "c": "c1", "d": "{}"}, id=ahead)
        await until(lambda: got, timeout=5, what="the old primary's event")
        await redis.stop()
        await redis.start()  # the new primary: empty, its clock an hour behind those ids
        writer = aioredis.from_url(redis.url, decode_responses=True)  # a worker's, new
        try:
            await writer.xadd(EVENTS, {"t": "call.answered", "c": "c1", "d": "{}"})
        finally:
            await writer.aclose()
        await until(lambda: len(got) >= 2, timeout=5, what="the new primary's event")
        assert [e[1] for e in got] == ["call.ringing", "call.answered"]
        said = [r for r in caplog.records if "reading the new stream" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING
        # A client resuming from the old primary's id is told what it missed is gone (it
        # used to be followed from there: it too heard nothing new).
        with pytest.raises(ReplayUnavailable):
            async for _entry in log.follow(ahead, keepalive=0.2):
                break
    finally:
        for task in (follower, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.close_streams()
        await log.aclose()
        await client.aclose()
