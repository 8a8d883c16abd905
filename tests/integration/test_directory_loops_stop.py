"""A worker's directory closing stops its heartbeat and its writer even where the cancellation
was swallowed, and a reap's claim renewal ends with the reap: redis-py (``asyncio.wait_for`` on
Python 3.11) may return a command's answer instead of raising a cancellation that lands as the
answer arrives. A heartbeat that stopped only when cancelled then beat on after its worker left
the directory (writing it back in: alive to the others until its TTL, its calls unreaped), and
a renewal kept the dead worker's claim for good while the reap waited on it. A real
``redis-server``; the swallow is staged where it happens, in the command's await."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cluster.redis_lease import worker_key
from bridge.cluster.redis_reaper import Reaper

from ..support.cluster import worker_directory

pytestmark = pytest.mark.timeout(60)


async def _nothing(*args: Any) -> None:
    return None


async def swallowing(entered: asyncio.Event, answer: Any = None) -> Any:
    """A command whose answer comes back as it is cancelled: the first cancellation is lost
    (the next, a test's clean-up, is not)."""
    first = not entered.is_set()
    entered.set()
    try:
        await asyncio.sleep(0.2)
    except asyncio.CancelledError:
        if not first:
            raise
    return answer


async def test_a_closed_directorys_heartbeat_ends_though_its_cancel_was_swallowed(redis) -> None:
    directory = worker_directory(redis.url, "w-left", heartbeat_ttl=0.3)
    await directory.start()
    lease = directory._lease
    real_beat = lease.beat
    in_beat = asyncio.Event()
    beats_after_close = 0
    closing = False

    async def beat() -> None:
        nonlocal beats_after_close
        if closing:
            beats_after_close += 1
        await real_beat()
        await swallowing(in_beat)  # the beat's answer arrives with the close's cancellation

    lease.beat = beat  # type: ignore[method-assign]
    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        await asyncio.wait_for(in_beat.wait(), 5)
        closing = True
        await directory.close()
        heartbeat = [t for t in asyncio.all_tasks() if t.get_name() == "directory:heartbeat"]
        assert heartbeat == [], "the heartbeat beats on after its directory closed"
        await asyncio.sleep(0.3)  # three of its intervals
        assert beats_after_close == 0
        assert not await client.exists(worker_key("w-left"))  # it left, and stays gone
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "directory:heartbeat":
                task.cancel()
        await client.aclose()


class SwallowingRedis:
    """A client whose renewal's answer comes back with the reap's cancellation."""

    def __init__(self) -> None:
        self.renewals = 0
        self.entered = asyncio.Event()

    async def eval(self, *args: Any) -> int:
        self.renewals += 1
        return int(await swallowing(self.entered, 1))


async def test_a_reaps_claim_renewal_ends_with_the_reap_though_its_cancel_was_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bridge.cluster import redis_reaper

    monkeypatch.setattr(redis_reaper, "REAP_CLAIM_MS", 30)  # a renewal every 10 ms
    client = SwallowingRedis()
    reaper = Reaper(
        client,
        worker_id="survivor",
        heartbeat_ttl=1.0,
        ended_ttl=60,
        settled=lambda: True,
        down=lambda exc: None,
        flush=_nothing,
        end_lost_call=_nothing,
    )
    reaped = asyncio.Event()
    renewing = asyncio.create_task(reaper._renew("claim", reaped))
    await asyncio.wait_for(client.entered.wait(), 5)
    reaped.set()  # the reap is done as the renewal's answer arrives
    renewing.cancel()
    await asyncio.wait_for(asyncio.gather(renewing, return_exceptions=True), 2)
    assert client.renewals == 1


async def test_a_closed_catalogs_follower_ends_though_its_cancel_was_swallowed(tmp_path) -> None:
    """The numbers catalog's follower (every worker's, reading the store's version), the same:
    a read of Redis swallowing the close's cancellation left it polling for good."""
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.store import LocalStore, Sealing

    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    await catalog.start(poll=0.01)
    read = asyncio.Event()
    reads_after_close = 0
    closing = False

    async def version() -> int:
        nonlocal reads_after_close
        reads_after_close += closing
        return int(await swallowing(read, catalog.version))

    catalog.store.version = version  # type: ignore[method-assign]
    await asyncio.wait_for(read.wait(), 5)
    closing = True
    await catalog.close()
    await asyncio.sleep(0.1)  # ten polls
    assert reads_after_close == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "catalog:catalog-follow"]
