"""A route's run carried on by the worker its call moved to, moving again at once (a rolling
deploy's second drain, ``desk/runner.py`` ``RouteRun.stand_still``): what the move saves for
the next owner is where the run is here, not where a new run begins."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from types import SimpleNamespace
from typing import Any

from bridge.desk import steps
from bridge.desk.routes import Route, Step
from bridge.desk.runner import RouteRun
from bridge.desk.store import MemoryDeskStore

from ..support.waits import until

PLAY_THEN_RING = (Step("play", {"assetId": "a1"}), Step("ring", {"agents": ["ann"]}))


def run_on(store: MemoryDeskStore, send: Any = None, playing: list[Any] | None = None) -> RouteRun:
    """A run of a two-step route on a live call ``c1``: the store, what it sends the agents,
    the playbacks on the call."""
    call = SimpleNamespace(id="c1", live=True, tenant_id=None)
    runtime = SimpleNamespace(
        call_id="c1", call=call, attached=lambda kind: list(playing or ()) * (kind == "playback")
    )
    route = Route("r1", None, "main", None, PLAY_THEN_RING, None, (), {})
    desk = SimpleNamespace(store=store, send=send, clock=lambda: 0.0)
    return RouteRun(desk, runtime, route)  # type: ignore[arg-type]


async def test_a_move_as_a_resumed_ring_closes_its_round_saves_its_step() -> None:
    """A resumed ring kept step 0 until its step's first turn: a move as its last round closed
    (its agents told the ring stopped) saved step 0 for the next owner, which rang the route
    from its start. The run is at the ring's step from the resume on."""
    store, moves = MemoryDeskStore(), []

    async def send(key: Any, message: dict[str, Any], round_no: int = 0) -> None:
        moves.append(asyncio.create_task(run.stand_still()))  # the call moves on meanwhile
        await asyncio.sleep(0)

    run = run_on(store, send)
    ring = {"route": "r1", "step": 1, "round": 2, "rung": ["/ann"]}  # the old owner's
    resuming = asyncio.create_task(run.resume(ring))
    try:
        await until(lambda: moves, 1.0, "the ring's agents told it stopped")
        await asyncio.wait_for(moves[0], 1.0)
        saved = await store.ring("c1")
        assert saved is not None
        assert (saved["step"], saved["round"]) == (1, 2), saved
    finally:
        resuming.cancel()
        with suppress(asyncio.CancelledError):
            await resuming


async def test_a_play_step_carried_on_is_saved_playing_by_the_next_move() -> None:
    """A ``play`` step carried on after a move played on without the run saying so: a second
    move while it played saved nothing under way, and the worker after that never ran the
    next step. The run names the playback it waits for, as the step itself does."""
    store, playing = MemoryDeskStore(), [SimpleNamespace(id="p1")]
    run = run_on(store, playing=playing)
    carrying = asyncio.create_task(steps.carry_on(run, PLAY_THEN_RING[0], 0, {"playing": "p1"}))
    try:
        await asyncio.sleep(2 * steps.LOOK)
        await run.stand_still()  # the call moves on
        saved = await store.ring("c1")
        assert saved is not None
        assert (saved["step"], saved.get("doing")) == (0, {"playing": "p1"}), saved
    finally:
        carrying.cancel()
        with suppress(asyncio.CancelledError):
            await carrying
