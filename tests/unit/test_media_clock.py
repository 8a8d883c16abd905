"""``WorkerClock``: the worker's one 20 ms media clock (registration, failure isolation)."""

from __future__ import annotations

from bridge.media.clock import WorkerClock, worker_clock
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


async def test_a_failing_tick_is_unregistered_and_the_others_keep_ticking() -> None:
    clock = WorkerClock()
    good: list[float] = []

    def bad(now: float) -> None:
        raise RuntimeError("boom")

    clock.register(bad)
    stop = clock.register(good.append)
    await until(lambda: len(good) >= 3)
    assert len(clock._ticks) == 1
    stop()


async def test_one_clock_per_worker_loop() -> None:
    assert worker_clock() is worker_clock()
