"""The dead-worker check reads who is registered and whose heartbeat is there, then reaps. A
survivor stopped (or Redis paused) under those reads got their answers late, by which time
Redis's own clock had expired every heartbeat the pause kept from being written: in a
clean-clone run it reaped a live worker 0.1 s after Redis was back, which ended its calls
(``worker_lost``). Such reads prove no death: the round is given up."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.cluster.redis_reaper import Reaper


class StalledRedis:
    """The live worker ``w2`` registered, its heartbeat gone; each read takes ``delay``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.claims = 0

    async def smembers(self, key: str) -> set[str]:
        await asyncio.sleep(self.delay)
        return {"w1", "w2"}

    async def exists(self, key: str) -> int:
        await asyncio.sleep(self.delay)
        return 0

    async def eval(self, *args: Any) -> int:
        self.claims += 1
        return 0  # another survivor's: nothing more to do here


def reaper(redis: StalledRedis, settled: list[bool]) -> Reaper:
    async def flush(timeout: float) -> None:
        return None

    async def end_lost_call(*args: Any) -> None:
        return None

    return Reaper(
        redis,
        worker_id="w1",
        heartbeat_ttl=1.0,
        ended_ttl=60,
        settled=lambda: settled[0],
        down=lambda exc: None,
        flush=flush,
        end_lost_call=end_lost_call,
    )


async def test_reads_that_outlast_half_a_ttl_or_an_unsettled_lease_reap_nobody() -> None:
    stalled = StalledRedis(delay=0.3)  # two reads: 0.6 s, past half the 1 s TTL
    await reaper(stalled, [True]).reap_once()
    assert stalled.claims == 0
    unsettled = StalledRedis(delay=0.0)
    await reaper(unsettled, [False]).reap_once()  # the lease found Redis away meanwhile
    assert unsettled.claims == 0
    quick = StalledRedis(delay=0.0)
    await reaper(quick, [True]).reap_once()  # a prompt read of a missing heartbeat: claimed
    assert quick.claims == 1
