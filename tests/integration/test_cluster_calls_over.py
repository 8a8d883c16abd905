"""Engine calls said over before any worker carried them (Meta's ``terminate`` before its
INVITE), as the Redis directory keeps them for every worker: one worker marks, another reads;
the memory expires; with Redis away each says ``DirectoryUnavailable`` (the SIP engine then
keeps to its own memory: an INVITE waits for Redis no longer than the directory's bounded
read, after its ``100 Trying``); on Meta's Graph road the worker a late ``connect`` reaches
does not pre-accept a call whose ``terminate`` reached another. A real ``redis-server``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_writes import OVER_TTL, P
from bridge.errors import DirectoryUnavailable
from bridge.numbers.switchboard import NumberCallsOver

from ..support.cluster import worker_directory
from ..support.waits import until
from ..unit.test_graph_calls_over import deliver, graph_engines, incoming, meta_actions, settled

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


async def test_a_graph_terminate_to_one_worker_keeps_its_connect_to_another_from_ringing(
    redis: Any, meta: Any, tmp_path: Path, caplog: Any
) -> None:
    """Meta's Graph road on two workers, a number added by the API (``n1``): the user hangs up
    at once, Meta's ``terminate`` reaches one worker, the late ``connect`` the other (the
    least-loaded). Before, the second pre-accepted a call Meta had ended (Meta refused it: a
    WARNING "cannot pre-accept" and a ``reject``); now it finds the call over in Redis, under
    the SIP road's key (``over:{numberID}:{wacid}``), and neither pre-accepts nor rings it."""
    caplog.set_level(logging.WARNING)
    one, other = worker_directory(redis.url, "w1"), worker_directory(redis.url, "w2")
    client = aioredis.from_url(redis.url, decode_responses=True)
    await one.start()
    await other.start()
    try:
        number_over = NumberCallsOver("n1", one), NumberCallsOver("n1", other)
        async with graph_engines(meta, tmp_path, *number_over) as (first, second):
            mcall, connect = await meta.user_offer("15550001234")
            deliver(meta, first, meta.terminate_event(mcall, "COMPLETED"))
            key = f"{P}over:n1:{mcall.wacid}"
            await until(lambda: client.exists(key), 3, "the terminate kept in Redis")
            deliver(meta, second, connect)
            await until(lambda: settled(second, mcall.wacid), 3, "the late connect given up")
            assert meta_actions(meta, mcall.wacid) == []  # never pre-accepted, nor rejected
            assert incoming(second) == [] and incoming(first) == []
        said = [r.getMessage() for r in caplog.records if r.name.startswith("bridge")]
        assert said == []
    finally:
        await one.close()
        await other.close()
        await client.aclose()
