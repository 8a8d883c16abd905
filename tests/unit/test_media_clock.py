"""``WorkerClock``: the worker's one 20 ms media clock (registration, failure isolation)."""

from __future__ import annotations

import asyncio
import time

from bridge.media.clock import WorkerClock, clock_sleep, worker_clock
from tests.support.waits import until


async def test_every_registered_tick_runs_and_an_unregistered_one_stops() -> None:
    clock = WorkerClock()
    a: list[float] = []
    b: list[float] = []
    stop_a = clock.register(a.append)
    stop_b = clock.register(b.append)
    await until(lambda: len(a) >= 3 and len(b) >= 3)
    assert a[:3] == b[:3]  # one tick, one time, for every call
    assert a == sorted(a)
    stop_a()
    n = len(a)
    await until(lambda: len(b) >= n + 3)
    assert len(a) == n
    stop_b()
    assert clock._handle is None  # nothing registered: the clock does not run


async def test_a_failing_tick_is_unregistered_its_owner_told_and_the_others_keep_ticking() -> None:
    clock = WorkerClock()
    good: list[float] = []
    told: list[str] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    def owner_fails_too() -> None:
        told.append("second")
        raise RuntimeError("the owner's own bug")

    clock.register(bad, failed=lambda: told.append("first"))
    clock.register(bad, failed=owner_fails_too)
    clock.register(bad)  # no owner to tell: dropped all the same
    stop = clock.register(good.append)
    await until(lambda: len(good) >= 3)
    assert len(clock._ticks) == 1 and told == ["first", "second"]  # each told once
    assert not clock._on_failure
    stop()


async def test_one_clock_per_worker_loop() -> None:
    assert worker_clock() is worker_clock()


async def test_a_tick_runs_receive_then_mix_then_wakes_the_tracks() -> None:
    """Within one tick the receivers hand on their frames before the mixers run (a frame
    received is mixed in the same tick), and a track waiting for the tick resumes after both."""
    from bridge.media.clock import Phase

    clock = WorkerClock()
    order: list[str] = []
    stop_mix = clock.register(lambda now: order.append("mix"), Phase.MIX)
    stop_rx = clock.register(lambda now: order.append("receive"), Phase.RECEIVE)
    n = await clock.next_tick()
    order.append("track")
    assert order[-3:] == ["receive", "mix", "track"] and n == clock.n
    stop_mix()
    stop_rx()
    await clock.next_tick()  # a waiting track alone keeps the clock running
    assert clock.running
    await until(lambda: not clock.running)  # and nothing at all stops it


async def test_a_track_cancelled_while_waiting_leaves_the_others_waiting() -> None:
    """A participant leaving cancels its track's task while it waits for the tick: the other
    tracks (the next agent's, the WhatsApp leg's sender) must still get theirs. With one shared
    future, cancelling one waiter cancelled them all and every sender of the call went quiet."""
    clock = WorkerClock()
    leaving = asyncio.ensure_future(clock.next_tick())
    staying = asyncio.ensure_future(clock.next_tick())
    await asyncio.sleep(0)
    leaving.cancel()
    n = await asyncio.wait_for(staying, 1.0)
    # Its tick came (the first; by the time this resumes on a busy host, the clock may have
    # ticked once more for it: the grid is kept one tick for a track just resolved).
    assert n == 1 <= clock.n and not staying.cancelled()
    assert leaving.cancelled()


async def test_a_tick_that_unregisters_the_last_and_registers_again_leaves_one_timer() -> None:
    """Within one tick, the last registration leaves and a new one comes (a bus whose source
    ended starts another): the clock keeps exactly one timer, one tick per period — not a
    second timer beside the first (two ticks a period, every receiver popping twice)."""
    clock = WorkerClock()
    later: list[float] = []
    swapped: list[bool] = []
    stop: list[object] = []

    def first(now: float) -> None:
        if not swapped:
            swapped.append(True)
            stop[0]()  # the last registration leaves ...
            clock.register(later.append)  # ... and another comes, in the same tick

    stop.append(clock.register(first))
    await until(lambda: len(later) >= 5)
    ticks = clock.n
    await until(lambda: clock.n >= ticks + 5)
    # One tick per period: as many callback runs as ticks since it came, never twice as many.
    assert len(later) == clock.n - 1
    # A timer that came due in this loop iteration has moved to the ready queue already (a late
    # loop wakes for it and for this test at once): count it there too.
    loop = asyncio.get_running_loop()
    handles = [*loop._scheduled, *loop._ready]  # type: ignore[attr-defined]
    fires = [
        h for h in handles if not h.cancelled() and getattr(h, "_callback", None) == clock._fire
    ]
    assert len(fires) == 1


async def test_a_stall_past_resync_counts_the_ticks_it_passed_over() -> None:
    """A stall shorter than ``resync`` is caught up tick by tick (nothing skipped); a longer
    one restarts the schedule from now, and the ticks it passed over are counted: every leg
    on the clock lost that much audio (``bridge_media_clock_skipped_ticks_total``)."""
    import time

    clock = WorkerClock()
    times: list[float] = []
    stop = clock.register(times.append)
    await until(lambda: len(times) >= 2)
    time.sleep(0.1)  # noqa: ASYNC251 (the worker stalls on purpose), less than resync
    n = len(times)
    await until(lambda: len(times) >= n + 6)
    assert clock.skipped == 0
    steps = [round((b - a) * 1000) for a, b in zip(times[n - 1 :], times[n:], strict=False)]
    assert steps[:5] == [20] * 5  # each caught-up tick keeps its own time on the grid
    began = time.monotonic()
    time.sleep(0.5)  # noqa: ASYNC251 (a stall), longer than resync: 25 ticks
    n = len(times)
    await until(lambda: len(times) >= n + 3)
    # At least the sleep's 25 ticks less the one due as it began; at most the ticks up to the
    # first after the stall (a loaded host wakes the loop later than the sleep's end).
    assert 24 <= clock.skipped <= round((times[n + 1] - began) / 0.02) + 1, (clock.skipped, times)
    # The tick due when the stall began runs (late, at its own time); the next is a tick
    # after the stall's end: the ones between never ran, not even late.
    gaps = [b - a for a, b in zip(times[n - 1 :], times[n:], strict=False)]
    assert max(gaps) > 0.45 and sorted(gaps)[-2] < 0.05, gaps
    stop()


async def test_a_sleep_on_the_clock_ends_at_a_tick_and_wakes_nothing_of_its_own() -> None:
    """``clock_sleep``: while the clock runs for media, a periodic task's sleep ends in a tick
    (after its phases), no timer of its own; up to a tick late, never early."""
    clock = worker_clock()
    ticks: list[float] = []
    unregister = clock.register(ticks.append)
    loop = asyncio.get_running_loop()
    timers = {"call_at": 0, "call_later": 0}
    real = {name: getattr(loop, name) for name in timers}

    def counting(name: str) -> object:
        def counted(*args: object, **kwargs: object) -> object:
            timers[name] += 1
            return real[name](*args, **kwargs)

        return counted

    for name in timers:
        setattr(loop, name, counting(name))
    try:
        await clock.next_tick()
        ticks_before, asked = len(ticks), time.monotonic()
        timers.update(call_at=0, call_later=0)
        await clock_sleep(0.05)
        woke = time.monotonic()
    finally:
        for name in timers:
            setattr(loop, name, real[name])
        unregister()
    assert woke - asked >= 0.05 - 1e-3
    assert clock.now >= asked + 0.05 - 1e-3  # the tick it ended in is at or after its time
    assert len(ticks) - ticks_before >= 2
    # The clock's own timer, one a tick: nothing more for the sleep.
    assert timers["call_later"] == 0 and timers["call_at"] <= len(ticks) - ticks_before + 1
