"""A moved answered call's events in its first moments on the new owner, while its run still
read which agent is on it (``RouteRun.early_events``), told once the run carries on
(``desk/handoffs.py`` ``carry_on``): to the agent on the call, who is the one an agent of the
group took it from when a transfer was taken before the move."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from bridge.desk import handoffs
from bridge.desk.runner import RouteRun
from bridge.desk.store import MemoryDeskStore


async def test_a_transfer_taken_before_the_move_tells_the_early_events_to_who_took_it() -> None:
    """Ann transferred the call to a group and bob took it just before it moved: the new owner
    reads the ring naming bob the winner, ann the transfer's. A mute while it read went to
    ann, who had handed the call off (and is told ``transferred`` a moment later), and bob,
    on the call, never heard it. Told to bob, as the events that follow."""
    sent: list[tuple[Any, dict[str, Any]]] = []
    spawned: list[asyncio.Task[Any]] = []

    async def send(key: Any, message: dict[str, Any], round_no: int = 0) -> None:
        sent.append((key, message))

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    def spawn(work: Any, name: str) -> None:
        spawned.append(asyncio.ensure_future(work))

    desk = SimpleNamespace(
        store=MemoryDeskStore(), send=send, spawn=spawn, free=nothing, clock=lambda: 0.0
    )
    call = SimpleNamespace(id="c1", live=True, tenant_id=None)
    runtime = SimpleNamespace(
        call_id="c1",
        call=call,
        hold=SimpleNamespace(set=nothing),
        participants=SimpleNamespace(leave=nothing),
        emit=lambda *args, **kwargs: None,
        spawn=lambda work, name: work.close(),
    )
    run = RouteRun(desk, runtime, None)  # type: ignore[arg-type]
    muted = {"type": "call.muted", "callID": "c1"}
    run.early_events.append(muted)  # as ``Desk._call_event`` keeps it while the run reads
    ring = {"step": 0, "winner": "/bob", "transfer": {"group": "support", "from": "/ann"}}
    await handoffs.carry_on(run, ring)
    await asyncio.gather(*spawned)
    assert run.winner == (None, "bob")
    told = [key for key, message in sent if message == muted]
    assert told == [(None, "bob")], sent
