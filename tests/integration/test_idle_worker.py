"""An idle worker (no calls, no agent) parks what only calls or agents need: the watchdog,
the call timelines' and the quality samplers wait for a call (``CallManager.until_calls``),
the presence lease for an agent, the switchboard's closer for a retired engine, and the loop-lag
monitor samples once a second while the media clock is stopped. Before, each woke a few times a
second to find nothing: ~19 wake-ups a second in all (``bench/idle_worker.py``,
docs/performance.md). A lone worker reads its numbers store's version every two seconds, not ten
times a second: no other process writes it. Checked by what each task awaits, not by timing
it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bridge.api.keys import CATALOG
from bridge.media.clock import worker_clock
from bridge.numbers.store import ALONE_POLL, POLL_INTERVAL

from ..support.waits import until

PARKED = (
    "calls:watchdog",
    "calls:quality",
    "app:call-timelines",
    "desk:presence-lease",
    "switchboard:retire-engines",
)
ON_CALLS = ("calls:watchdog", "calls:quality", "app:call-timelines")


def awaiting(name: str) -> list[str]:
    """The chain of coroutines the task named ``name`` awaits, outermost first."""
    task = next(t for t in asyncio.all_tasks() if t.get_name() == name)
    chain, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        if coro.cr_frame is None:
            break
        chain.append(coro.cr_frame.f_code.co_qualname)
        coro = coro.cr_await
    return chain


def parked(name: str) -> bool:
    chain = awaiting(name)
    return "Event.wait" in chain and "clock_sleep" not in chain


def lag_pause() -> float:
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "app:loop-lag")
    frame = task.get_coro().cr_frame  # type: ignore[union-attr]
    return float(frame.f_locals["pause"])


async def test_an_idle_worker_parks_its_samplers_until_a_call(make_client: Any) -> None:
    client = await make_client(call_reports=True, stats_interval=0.5)
    await until(lambda: all(parked(name) for name in PARKED), timeout=5, what="parked")
    assert lag_pause() == 1.0  # the media clock is stopped: a sample a second
    made = await client.post("/call/make", json={"phone": "5521999999999"})
    call_id = (await made.json())["callID"]
    # A call: the watchdog and the samplers run (on the media clock).
    await until(lambda: not any(parked(name) for name in ON_CALLS), timeout=5, what="awake")
    assert "clock_sleep" in awaiting("calls:watchdog")
    assert parked("desk:presence-lease")  # no agent: nothing to renew
    await client.post("/call/hangup", json={"callID": call_id})
    await until(lambda: all(parked(name) for name in PARKED), timeout=5, what="parked again")
    # Media on the clock (a leg's tick): the lag monitor samples four times a second.
    unregister = worker_clock().register(lambda now: None)
    try:
        await until(lambda: lag_pause() == 0.25, timeout=5, what="the lag monitor's pace")
    finally:
        unregister()
    await until(lambda: lag_pause() == 1.0, timeout=5, what="the lag monitor's idle pace")


async def test_a_lone_worker_reads_its_numbers_store_seldom(
    make_client: Any, tmp_path: Path, redis: Any
) -> None:
    """Its own writes reload the catalog at once (the API's); workers that share a Redis store
    read each other's every ``POLL_INTERVAL``."""
    alone = await make_client(data_dir=str(tmp_path / "alone"))
    assert alone.app[CATALOG].poll == ALONE_POLL
    made = await alone.post("/numbers", json={"phone": "+5511988887777", "engine": "sim"})
    assert made.status == 201, await made.text()
    number = (await made.json())["numberID"]
    assert (await alone.get(f"/numbers/{number}")).status == 200  # no poll waited for
    shared = await make_client(directory=redis.url, internal_secret="s" * 32)
    assert shared.app[CATALOG].poll == POLL_INTERVAL
