"""Two bridge processes on a real Redis, agents connected to different workers: presence seen
from both, a call ringing on A is rung to an agent on B, exactly one of two racing agents
wins (the claim is Redis's), and the loser stops ringing within 100 ms."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from ..support.cluster import Bridge, get, post, require_redis, wait_call
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
