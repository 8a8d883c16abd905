"""Two bridge processes on a real Redis, agents connected to different workers: presence seen
from both, a call ringing on A is rung to an agent on B, exactly one of two racing agents
wins (the claim is Redis's), and the loser stops ringing within 100 ms."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest

from ..support.cluster import Bridge, get, post, require_redis, wait_call
from ..support.spectrum import dominant_frequency
from .test_cluster import start_pair

require_redis()

pytestmark = pytest.mark.timeout(120)


async def connect(session: Any, bridge: Bridge, agent: str) -> Any:
    status, body = await post(session, bridge.base, "/agents/tokens", {"agentID": agent})
    assert status == 201, body
    ws = await session.ws_connect(f"{bridge.base}/agents/connect?token={body['token']}")
    assert json.loads((await ws.receive()).data)["type"] == "hello"
    return ws


async def until_type(ws: Any, kind: str, call_id: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg["type"] == kind and msg.get("callID") == call_id:
                msg["at"] = time.monotonic()
                return dict(msg)


async def outcome(ws: Any, call_id: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg.get("callID") == call_id and msg["type"] in ("accepted", "call.taken"):
                msg["at"] = time.monotonic()
                return dict(msg)


async def test_agents_on_two_workers_one_winner_each_call(redis, session, tmp_path) -> None:
    a, b = await start_pair(redis, session, tmp_path)
    try:
        ann, bob = await connect(session, a, "ann"), await connect(session, b, "bob")
        for bridge in (a, b):  # presence is the cluster's: both workers list both agents
            _, listing = await get(session, bridge.base, "/agents")
            assert {x["agentID"]: x["state"] for x in listing["agents"]} == {
                "ann": "available",
                "bob": "available",
            }
        stops = []
        winners = []
        for i in range(10):
            status, call = await post(
                session, a.base, "/call/sim/incoming", {"phone": f"55219888877{i:02d}"}
            )
            assert status == 201, call
            call_id = call["callID"]
            await until_type(ann, "ringing", call_id), await until_type(bob, "ringing", call_id)
            for ws in (ann, bob):
                await ws.send_str(json.dumps({"type": "accept", "callID": call_id}))
            got = await asyncio.gather(outcome(ann, call_id), outcome(bob, call_id))
            assert sorted(g["type"] for g in got) == ["accepted", "call.taken"], got
            winners.append(
                next(n for n, g in zip("ab", got, strict=True) if g["type"] == "accepted")
            )
            stops.append(abs(got[0]["at"] - got[1]["at"]))
            await wait_call(session, b.base, call_id, "active")
            await post(session, b.base, "/call/hangup", {"callID": call_id})
            await wait_call(session, a.base, call_id, "ended")
            for _ in range(50):
                _, listing = await get(session, b.base, "/agents")
                if {x["state"] for x in listing["agents"]} == {"available"}:
                    break
                await asyncio.sleep(0.05)
        print(
            f"\nthe other agent stops ringing after the first answer: max "
            f"{1000 * max(stops):.1f} ms over {len(stops)} calls; winners {''.join(winners)}"
        )
        assert max(stops) < 0.1
        await bob.close()
        dropped = time.monotonic()
        for _ in range(120):
            _, listing = await get(session, a.base, "/agents")
            if {x["agentID"]: x["state"] for x in listing["agents"]}["bob"] == "away":
                break
            await asyncio.sleep(0.05)
        assert time.monotonic() - dropped <= 5.0
        await ann.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_leg_on_worker_a_is_lent_to_a_call_on_worker_b(redis, session, tmp_path) -> None:
    """Issue 49: an aiortc agent connected (socket and leg) to worker A takes a call that lives
    on worker B: B asks A, A joins the call's PCM stream on B and attaches the leg, so the
    call comes on the leg with no new offer (``accepted`` says ``leg: true``); the sim's echo
    of the agent's 440 Hz comes back over the leg (both hops asserted by frequency). Then the
    call is transferred to a group whose agent is on B (its own leg there: its 520 Hz echoed):
    ann is let go — her stream closed, she hears nothing more of the call — and her leg parks
    on A; it takes the next call the same way, which she hangs up on her socket (on A: B does
    it)."""
    from .test_desk import Agent
    from .test_desk_leg import LegAgent

    a, b = await start_pair(redis, session, tmp_path)
    legs: list[LegAgent] = []

    async def agent_on(bridge: Bridge, name: str, groups: list[str], freq: float) -> LegAgent:
        body = {"agentID": name, "groups": groups}
        _status, made = await post(session, bridge.base, "/agents/tokens", body)
        ws = await session.ws_connect(f"{bridge.base}/agents/connect?token={made['token']}")
        leg = LegAgent(Agent(ws), freq=freq)
        legs.append(leg)
        await leg.agent.next("hello")
        await leg.offer()
        return leg

    def hears(leg: LegAgent) -> float:
        return dominant_frequency(leg.recorder.since(time.monotonic() - 0.6), leg.recorder.rate)

    def hears_nothing(leg: LegAgent) -> bool:
        """Nothing of the call (now bob's 520 Hz, echoed): a parked leg gets only its
        keepalive, silence (whose first frame may carry her decoder's tail of the last audio)."""
        pcm = leg.recorder.since(time.monotonic() - 0.6).astype(np.float64)
        if pcm.size == 0 or float(np.sqrt(np.mean(np.square(pcm)))) < 30:
            return True
        return abs(dominant_frequency(pcm, leg.recorder.rate) - 520) > 30

    try:
        route = {"name": "front", "numbers": "default", "steps": [{"ring": {"group": "front"}}]}
        assert (await post(session, a.base, "/routes", route))[0] == 201
        ann = await agent_on(a, "ann", ["front"], 440.0)
        bob = await agent_on(b, "bob", ["night"], 520.0)
        for round_ in range(2):
            status, call = await post(
                session, b.base, "/call/sim/incoming", {"phone": f"552198888770{round_}"}
            )
            assert status == 201 and call["owner"] == b.worker_id, call
            call_id = call["callID"]
            await ann.agent.next("ringing")
            ann.mic.on.set()
            clicked = time.monotonic()
            await ann.agent.send(type="accept", callID=call_id)
            accepted = await ann.agent.next("accepted")
            took = 1000 * (time.monotonic() - clicked)
            print(f"lent across workers: accept → accepted {took:.1f} ms")
            assert accepted["callID"] == call_id and accepted["leg"] is True, accepted
            await wait_call(session, a.base, call_id, "active")
            await asyncio.sleep(1.2)
            assert hears(ann) == pytest.approx(440, abs=10)
            if round_ == 0:  # to the night group: bob, on B
                body = {"callID": call_id, "group": "night", "timeoutS": 10}
                status, moved = await post(session, a.base, "/call/transfer", body)
                assert status == 202, moved
                await bob.agent.next("ringing")
                bob.mic.on.set()
                await bob.agent.send(type="accept", callID=call_id)
                assert (await bob.agent.next("accepted"))["leg"] is True
                assert (await ann.agent.next("transferred"))["to"] == "bob"
                ann.mic.on.clear()
                await asyncio.sleep(1.2)
                assert hears(bob) == pytest.approx(520, abs=10)
                assert hears_nothing(ann)  # let go: nothing of the call reaches her
                bob.mic.on.clear()
                await post(session, a.base, "/call/hangup", {"callID": call_id})
                await bob.agent.next("call.ended")
            else:  # on her socket, on A: the call's worker B does it
                ann.mic.on.clear()
                await ann.agent.send(type="hangup", callID=call_id)
                await ann.agent.next("call.ended")
            for leg in (ann, bob) if round_ == 0 else (ann,):
                while (await leg.agent.next("presence"))["state"] != "available":
                    pass
    finally:
        for leg in legs:
            await leg.agent.ws.close()  # an open agent socket holds a stopping worker ~10 s
            await leg.close()
        await asyncio.gather(a.stop(), b.stop())


async def test_two_workers_creating_the_last_route_at_once_keep_max_routes(
    redis, session, tmp_path
) -> None:
    """BRIDGE_MAX_ROUTES was counted, then the route written: two workers taking a tenant's
    last route at the same moment both counted one short and both wrote it. The count is
    decided with the write now (WATCH/MULTI on the routes): exactly one of each pair is 201,
    the other the 409 a sequential one gets."""
    a, b = await start_pair(redis, session, tmp_path, BRIDGE_MAX_ROUTES="1")
    try:
        body = {"name": "front", "numbers": "default", "steps": [{"hangup": {}}]}
        for _ in range(50):
            answers = await asyncio.gather(
                post(session, a.base, "/routes", body), post(session, b.base, "/routes", body)
            )
            assert sorted(status for status, _ in answers) == [201, 409], answers
            lost = next(made for status, made in answers if status == 409)
            assert lost["error"]["code"] == "too_many_routes", lost
            won = next(made for status, made in answers if status == 201)
            async with session.delete(f"{a.base}/routes/{won['routeID']}") as resp:
                assert resp.status == 200
    finally:
        await asyncio.gather(a.stop(), b.stop())
