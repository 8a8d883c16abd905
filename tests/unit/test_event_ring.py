"""EventRing: the shared, bounded event log that SSE followers read from (cluster/directory.py)."""

import asyncio

from bridge.cluster.directory import EventRing


def entry(n: int) -> tuple[str, str, str, str]:
    return (f"call.event{n}", "c1", "{}", "w1")


async def test_follower_gets_only_newer_events_in_order_then_ends_on_close() -> None:
    ring = EventRing(4)
    for n in range(1, 4):
        ring.append((1, n), entry(n))
    assert ring.last_key == (1, 3)
    got = []

    async def follow() -> None:
        async for item in ring.follow((1, 1), keepalive=60):
            got.append(item)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    ring.append((1, 4), entry(4))
    ring.close()
    await asyncio.wait_for(task, 5)
    assert got == [entry(2), entry(3), entry(4)]


async def test_ring_is_bounded_and_a_slow_follower_skips_the_oldest() -> None:
    ring = EventRing(2)
    for n in range(1, 6):
        ring.append((1, n), entry(n))
    ring.close()
    assert [e async for e in ring.follow((0, 0), keepalive=60)] == [entry(4), entry(5)]


async def test_idle_follower_gets_a_keepalive() -> None:
    ring = EventRing(2)
    stream = ring.follow(ring.last_key, keepalive=0.01)
    assert await anext(stream) is None  # None: the SSE layer writes a keepalive comment
    ring.close()
    assert [e async for e in stream] == []
