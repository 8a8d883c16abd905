"""The Redis directory's reaper and lease against a real ``redis-server`` on loopback, with the
interleavings a stalled worker that comes back meets: it must never be reaped while it beats,
nor lose what it wrote while a survivor reaped it."""

from __future__ import annotations

from typing import Any

import pytest

from ..support.cluster import require_redis, worker_lease
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
