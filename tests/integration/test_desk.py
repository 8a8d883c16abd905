"""Agents (people) on the desk: tokens, presence, ringing, one winner, routes — over the real
app, real WebSockets, the sim engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import WSMsgType

from bridge.api.keys import DESK

from ..support.calls import wait_state
from ..support.waits import until


async def token(client: Any, agent: str, groups: list[str] | None = None, **kw: Any) -> str:
    resp = await client.post(
        "/agents/tokens", json={"agentID": agent, "groups": groups or ["sales"], **kw}
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


class Agent:
    """An agent's socket as a test drives it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, client: Any, name: str, groups: list[str] | None = None) -> Agent:
        ws = await client.ws_connect(f"/agents/connect?token={await token(client, name, groups)}")
        agent = cls(ws)
        hello = await agent.next("hello")
        assert hello["agentID"] == name
        return agent

    async def next(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads((await self.ws.receive()).data)
                if msg["type"] == kind:
                    return msg

    async def send(self, **body: Any) -> None:
        await self.ws.send_str(json.dumps(body))


async def incoming(client: Any, phone: str = "5521988887777") -> str:
    resp = await client.post("/call/sim/incoming", json={"phone": phone})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["callID"]


async def states(client: Any) -> dict[str, str]:
    body = await (await client.get("/agents")).json()
    return {a["agentID"]: a["state"] for a in body["agents"]}


async def test_token_presence_and_away_after_a_drop(client) -> None:
    agent = await Agent.connect(client, "ann")
    assert await states(client) == {"ann": "available"}
    await agent.send(type="presence", state="away")
    await until(lambda: _is(client, "ann", "away"))
    await agent.send(type="presence", state="available")
    await until(lambda: _is(client, "ann", "available"))
    # An agent token cannot issue tokens.
    resp = await client.post(
        "/agents/tokens",
        json={"agentID": "x"},
        headers={"Authorization": f"Bearer {await token(client, 'ann')}"},
    )
    assert resp.status in (401, 403)
    await agent.ws.close()
    loop = asyncio.get_running_loop()
    dropped = loop.time()
    await until(lambda: _is(client, "ann", "away"), timeout=6.0)
    assert loop.time() - dropped <= 5.0


async def _is(client: Any, agent: str, state: str) -> bool:
    return (await states(client)).get(agent) == state


async def test_bad_tokens_are_refused_at_the_upgrade(client) -> None:
    for query in ("", "?token=nope", "?token=agt1.e30.AAAA"):
        resp = await client.get(f"/agents/connect{query}")
        assert resp.status == 401, query
        assert (await resp.json())["error"]["code"] in ("bad_agent_token", "unauthorized")
    expired = await token(client, "old", ttl=1)
    await asyncio.sleep(1.1)
    assert (await client.get(f"/agents/connect?token={expired}")).status == 401


@pytest.mark.parametrize(
    "body, field",
    [
        ({"groups": ["a"]}, "agentID"),
        ({"agentID": "has space"}, "agentID"),
        ({"agentID": "a", "ttl": 0}, "ttl"),
        ({"agentID": "a", "groups": "sales"}, "groups"),
    ],
)
async def test_bad_token_requests_name_the_field(client, body, field) -> None:
    resp = await client.post("/agents/tokens", json=body)
    assert resp.status == 400
    assert field in (await resp.json())["error"]["message"]


async def test_one_of_two_agents_takes_the_call(client) -> None:
    ann, bob = await Agent.connect(client, "ann"), await Agent.connect(client, "bob")
    call_id = await incoming(client)
    rings = [await ann.next("ringing"), await bob.next("ringing")]
    assert {r["callID"] for r in rings} == {call_id}
    assert rings[0]["from"].startswith("5521988887777") and rings[0]["number"] == "default"
    assert (await client.get(f"/call/{call_id}")).status == 200
    assert (await (await client.get(f"/call/{call_id}")).json())["state"] == "ringing"
    await asyncio.gather(
        ann.send(type="accept", callID=call_id), bob.send(type="accept", callID=call_id)
    )
    got = await asyncio.gather(_outcome(ann, call_id), _outcome(bob, call_id))
    assert sorted(got) == ["accepted", "call.taken"]
    await wait_state(client, call_id, "active")
    listing = await states(client)
    assert sorted(listing.values()) == ["available", "busy"]
    busy = next(a for a, s in listing.items() if s == "busy")
    loser = bob if busy == "ann" else ann
    winner = ann if busy == "ann" else bob
    assert got[0] == ("accepted" if winner is ann else "call.taken")
    assert loser is not winner
    await client.post("/call/hangup", json={"callID": call_id})
    ended = await winner.next("call.ended")
    assert ended["callID"] == call_id
    await until(lambda: _is(client, busy, "available"))


async def test_decline_and_a_call_nobody_answers_stays_with_the_app(client) -> None:
    ann = await Agent.connect(client, "ann")
    call_id = await incoming(client)
    await ann.next("ringing")
    await ann.send(type="decline", callID=call_id)
    await ann.next("ringing.stopped")
    assert (await (await client.get(f"/call/{call_id}")).json())["state"] == "ringing"
    await ann.send(type="accept", callID=call_id)
    error = await ann.next("error")
    assert error["code"] == "not_ringing"


async def test_twenty_calls_two_agents_racing_twenty_single_winners(client) -> None:
    ann, bob = await Agent.connect(client, "ann"), await Agent.connect(client, "bob")
    winners: dict[str, list[str]] = {}
    for _ in range(20):
        call_id = await incoming(client)
        await ann.next("ringing"), await bob.next("ringing")
        await asyncio.gather(
            ann.send(type="accept", callID=call_id), bob.send(type="accept", callID=call_id)
        )
        got = await asyncio.gather(_outcome(ann, call_id), _outcome(bob, call_id))
        winners[call_id] = [n for n, o in zip(("ann", "bob"), got, strict=True) if o == "accepted"]
        assert sorted(got) == ["accepted", "call.taken"], got
        await wait_state(client, call_id, "active")
        await client.post("/call/hangup", json={"callID": call_id})
        await until(lambda: _all_available(client))
    assert all(len(w) == 1 for w in winners.values())
    assert len(winners) == 20


async def _all_available(client: Any) -> bool:
    return set((await states(client)).values()) == {"available"}


async def _outcome(agent: Agent, call_id: str) -> str:
    async with asyncio.timeout(5):
        while True:
            msg = json.loads((await agent.ws.receive()).data)
            if msg.get("callID") == call_id and msg["type"] in ("accepted", "call.taken"):
                return str(msg["type"])


async def test_desk_is_scoped(client) -> None:
    assert DESK in client.app


async def test_a_call_a_trunk_answers_rings_no_agent(client) -> None:
    """A number whose calls go straight to a PBX (a trunk's "answer") is the PBX's: the desk
    runs no route and rings nobody, so the two never both act on one call."""
    from bridge.api.keys import DESK

    ann = await Agent.connect(client, "ann")
    client.app[DESK].answered_elsewhere = lambda call: call.peer.startswith("5521900000001")
    theirs = await incoming(client, "5521900000001")
    ours = await incoming(client, "5521900000002")
    ring = await ann.next("ringing")
    assert ring["callID"] == ours  # the trunk's call never rang her
    with pytest.raises(TimeoutError):
        await ann.next("ringing", timeout=0.5)
    assert (await (await client.get(f"/call/{theirs}")).json())["state"] == "ringing"


async def test_an_agent_whose_connect_fails_midway_is_not_kept(client) -> None:
    """An agent's socket whose set-up fails after it was taken in (the store unreachable as
    its presence is written) is let go as a closed socket is: before, its session stayed with
    the desk for good, renewed as present, and rung, with nobody behind it."""
    desk = client.app[DESK]
    update_agent = desk.store.update_agent

    async def unreachable(*_: Any) -> None:
        raise OSError("the desk's store is unreachable")

    desk.store.update_agent = unreachable
    for n in range(20):
        ws = await client.ws_connect(f"/agents/connect?token={await token(client, f'a{n}')}")
        await ws.receive()  # the server closed it: no hello
        await ws.close()
    desk.store.update_agent = update_agent
    await until(lambda: not desk.sessions(), timeout=3.0)
    agent = await Agent.connect(client, "ann")  # the store back: agents connect as before
    assert [s.key[1] for s in desk.sessions()] == ["ann"]
    await agent.ws.close()


async def test_a_replaced_socket_is_told_and_closed(client) -> None:
    """An agent connecting again (a second tab, a reconnect before the old socket timed out)
    replaces its first socket: that one hears ``error {code: "replaced"}`` and is closed, so
    nothing it says acts for the agent any more (before, it stayed open for good)."""
    first = await Agent.connect(client, "ann")
    second = await Agent.connect(client, "ann")
    assert (await first.next("error"))["code"] == "replaced"
    async with asyncio.timeout(5.0):
        while (await first.ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
            pass
    await second.send(type="ping")
    await second.next("pong")
    assert await states(client) == {"ann": "available"}
    await second.ws.close()
