"""EventRing: the shared, bounded event log that SSE followers read from (cluster/event_ring.py)."""

import asyncio

from bridge.cluster.event_ring import EventRing


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


async def test_a_resume_the_memory_log_cannot_serve_is_told_not_skipped() -> None:
    """``BRIDGE_DIRECTORY=memory``: a client whose ``Last-Event-ID`` the ring still reaches
    gets what it missed; one that fell more than the backlog behind, or holds an id from before
    a restart, gets ``ReplayUnavailable`` where the stream is read (``replay.unavailable``), not
    a stream that silently skipped what it missed; so does one newer than its last event (no
    id streams from now)."""
    import pytest

    from bridge.calls.events import CallEvent
    from bridge.cluster.directory import MemoryDirectory
    from bridge.errors import ReplayUnavailable

    log = MemoryDirectory("w1", "http://127.0.0.1:1", backlog=100, local_calls=list)
    for n in range(150):
        log.observe(CallEvent("call.event", {}, f"t{n}"), None)
    log.close_streams()
    boot = log._boot  # the ids are boot-seq

    async def read(last_id: str | None) -> list[str]:
        return [e[0] async for e in log.follow(last_id, keepalive=60) if e is not None]

    assert await read(f"{boot}-149") == [f"{boot}-150"]
    assert await read(f"{boot}-50") == [f"{boot}-{n}" for n in range(51, 151)]  # the oldest kept
    for gone in (f"{boot}-49", f"{boot}-1", f"{boot - 1}-149"):
        with pytest.raises(ReplayUnavailable):
            await read(gone)
    assert await read(None) == []
    with pytest.raises(ReplayUnavailable, match="newer than any event"):
        await read(f"{boot}-151")


async def test_an_id_from_before_a_restart_is_told_even_before_any_event_here() -> None:
    """A client reconnects (``retry: 2000``) to a process restarted moments ago, before it
    had any event: its ``Last-Event-ID`` is from before the restart, and what it missed
    (its calls' ends) is gone. The empty ring's last id, (0, 0), made every id look newer than
    this process's own, and the stream went on from now as if nothing was missed."""
    import pytest

    from bridge.cluster.directory import MemoryDirectory
    from bridge.errors import ReplayUnavailable

    log = MemoryDirectory("w1", "http://127.0.0.1:1", backlog=100, local_calls=list)
    log.close_streams()
    boot = log._boot

    async def read(last_id: str | None) -> list[str]:
        return [e[0] async for e in log.follow(last_id, keepalive=60) if e is not None]

    with pytest.raises(ReplayUnavailable):
        await read(f"{boot - 5000}-42")
    assert await read(None) == []
    with pytest.raises(ReplayUnavailable, match="newer than any event"):
        await read(f"{boot}-3")  # of this boot, yet no event was logged


async def test_a_log_whose_ids_start_over_lower_reaches_its_followers_from_the_first() -> None:
    """Redis came back empty on a host whose clock is behind: the new events' keys are below
    the followers' positions. They used to be passed over as old; the ring starts over."""
    ring = EventRing(4)
    ring.append((5000, 0), entry(1))
    got = []

    async def follow() -> None:
        async for item in ring.follow((5000, 0), keepalive=60):
            got.append(item)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    ring.append((1000, 0), entry(2))
    ring.append((1000, 1), entry(3))
    ring.close()
    await asyncio.wait_for(task, 5)
    assert got == [entry(2), entry(3)]
    assert ring.last_key == (1000, 1) and ring.reaches((1000, 0))
