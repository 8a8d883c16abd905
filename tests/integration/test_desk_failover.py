"""A worker that dies mid-ring loses no call (issue 49): two bridge processes on a real Redis,
one killed with SIGKILL (the pid this test started).

- the worker holding the rung agent's socket dies: the agent is ``away`` within the grace and
  the ring moves on to the next agent;
- the call's owner dies and its engine lets the call move (the fake ZuckZapGo): the survivor
  adopts the ringing call and its route resumes ringing, from the ring the directory kept;
- the call's owner dies and the call cannot move (the sim engine): it ends
  ``failed``/``worker_lost`` and the agents it was ringing hear so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.cluster import Bridge, get, post, require_redis, wait_call
from ..support.waits import until
from .test_cluster import start_pair
from .test_desk_cluster import connect, until_type

require_redis()

pytestmark = pytest.mark.timeout(90)


async def add_route(session: Any, bridge: Bridge, steps: list[dict[str, Any]]) -> None:
    status, body = await post(
        session, bridge.base, "/routes", {"name": "main", "numbers": "default", "steps": steps}
    )
    assert status == 201, body


def kill(bridge: Bridge) -> None:
    assert bridge.proc is not None
    bridge.proc.kill()  # SIGKILL, by the pid this test started


async def test_the_rung_agents_worker_dies_and_the_ring_moves_on(redis, session, tmp_path):
    a, b = await start_pair(redis, session, tmp_path)
    try:
        await add_route(
            session,
            a,
            [{"ring": {"agents": ["bob", "ann"], "strategy": "sequential", "timeoutS": 30}}],
        )
        ann, bob = await connect(session, a, "ann"), await connect(session, b, "bob")
        status, call = await post(session, a.base, "/call/sim/incoming", {"phone": "5521988880001"})
        assert status == 201, call
        call_id = call["callID"]
        await until_type(bob, "ringing", call_id)
        killed = time.monotonic()
        kill(b)
        await b.proc.wait()  # type: ignore[union-attr]
        rang = await until_type(ann, "ringing", call_id, timeout=8)
        moved_after = rang["at"] - killed
        print(f"\nthe ring moved on {moved_after:.2f} s after bob's worker died")
        assert moved_after <= 5.0  # the grace (3 s) and one look (0.25 s)
        await ann.send_json({"type": "accept", "callID": call_id})
        await until_type(ann, "accepted", call_id)
        await wait_call(session, a.base, call_id, "active")
        _, listing = await get(session, a.base, "/agents")
        assert {x["agentID"]: x["state"] for x in listing["agents"]} == {
            "ann": "busy",
            "bob": "away",
        }
        await ann.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_the_owner_dies_and_a_call_that_cannot_move_ends_with_a_reason(
    redis, session, tmp_path
) -> None:
    a, b = await start_pair(redis, session, tmp_path)
    try:
        await add_route(
            session, a, [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
        )
        ann = await connect(session, a, "ann")
        status, call = await post(session, b.base, "/call/sim/incoming", {"phone": "5521988880002"})
        assert status == 201 and call["owner"] == b.worker_id, call
        call_id = call["callID"]
        await until_type(ann, "ringing", call_id)
        kill(b)
        ended = await until_type(ann, "call.ended", call_id, timeout=10)
        assert ended["endReason"] == "failed" and ended["endDetail"] == "worker_lost", ended
        snapshot = await wait_call(session, a.base, call_id, "ended")
        assert snapshot["endDetail"] == "worker_lost"
        _, listing = await get(session, a.base, "/agents")
        assert {x["agentID"]: x["state"] for x in listing["agents"]} == {"ann": "available"}
        await ann.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())


@pytest.fixture
async def fake() -> AsyncIterator[FakeZuckZapGo]:
    engine = FakeZuckZapGo(tone_hz=700.0)
    await engine.start()
    yield engine
    await engine.stop()


async def test_the_owner_dies_and_the_adopter_resumes_the_ring(
    redis, session, tmp_path, fake
) -> None:
    env = {
        "BRIDGE_ENGINE": "zuckzapgo",
        "BRIDGE_ENGINE_URL": fake.url,
        "BRIDGE_ENGINE_TOKEN": "ztok",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
        "BRIDGE_ADOPT_OFFER_TIMEOUT": "10",
    }
    a, b = await start_pair(redis, session, tmp_path, **env)
    try:
        await add_route(
            session,
            a,
            [{"ring": {"agents": ["ann", "bob"], "strategy": "simultaneous", "timeoutS": 30}}],
        )
        agents = {a.worker_id: await connect(session, a, "ann")}
        agents[b.worker_id] = await connect(session, b, "bob")
        engine_id = fake.ring_inbound("5521988880003")

        async def ringing_call() -> dict[str, Any] | None:
            _, listing = await get(session, a.base, "/call/status")
            return next(iter(listing["calls"]), None)  # the one call of this test

        call = await until(ringing_call, 10, "the inbound call in the directory")
        call_id, owner = call["callID"], call["owner"]
        dead, alive = (a, b) if owner == a.worker_id else (b, a)
        survivor_agent = agents[alive.worker_id]
        await until_type(survivor_agent, "ringing", call_id)
        killed = time.monotonic()
        kill(dead)
        again = await until_type(survivor_agent, "ringing", call_id, timeout=15)
        print(f"\nthe adopted call rang again {again['at'] - killed:.2f} s after its owner died")
        await survivor_agent.send_json({"type": "accept", "callID": call_id})
        await until_type(survivor_agent, "accepted", call_id)
        active = await wait_call(session, alive.base, call_id, "active")
        assert active["owner"] == alive.worker_id
        assert fake.calls[engine_id].state == "active"
        for ws in agents.values():
            await ws.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())
