"""An agent's presence as every worker writes it: a reconnect finds the agent ``busy`` only while
its call is live (on this worker or another), and the writers of one agent's record — its own
presence over its socket, the bridge's ``busy``/free on the call's worker, a reconnect on
another worker — never lose each other's change (each is one atomic update in the store).

The races are held step by step, as ``test_desk_race.py`` holds them: one writer is stopped
where it has read the agent's record and not yet written it back, the other writes, then the
first goes on. Workers are desks on one real Redis (bare desks where the race is the store's
alone, two in-process apps where a call must be live on one of them)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from bridge.api.keys import DESK, MANAGER
from bridge.desk import AgentClaims, AgentSession, AgentTokens, Desk
from bridge.desk.redis_store import RedisDeskStore
from bridge.desk.store import AgentRecord
from bridge.desk.wire import AgentMessage
from bridge.errors import DirectoryUnavailable

from ..support.waits import until
from .test_desk import Agent, incoming, states

ANN = (None, "ann")


async def _write(text: str) -> None:
    pass


def ann_socket() -> AgentSession:
    return AgentSession(AgentClaims(None, "ann", ("sales",), time.time() + 60), _write)


def bare_desk(store: RedisDeskStore, worker: str) -> Desk:
    # No call reaches these desks: the race is the desk's and the store's alone.
    manager = SimpleNamespace(events=SimpleNamespace(listen=print, observe=print))
    return Desk(store, AgentTokens(b"k" * 32), manager, None, None, worker_id=worker)  # type: ignore[arg-type]


class HeldRead:
    """Stops the first writer that reads the agent's record through ``store`` once it has
    read it and before it writes, until the other writer has written (:meth:`around`): a
    plain read (``store.agent``), or the read of an atomic update (inside its Redis
    transaction, its write queued: then Redis refuses the write and the update reads
    again)."""

    def __init__(self, store: RedisDeskStore) -> None:
        self.store, self.read = store, store.agent
        self.redis = store._redis
        self.transaction = self.redis.transaction
        self.reached, self._go = asyncio.Event(), asyncio.Event()
        store.agent = self._held_read  # type: ignore[method-assign]
        self.redis.transaction = self._held_transaction

    async def _hold(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            await self._go.wait()

    async def _held_read(self, tenant_id: str | None, agent_id: str) -> AgentRecord | None:
        record = await self.read(tenant_id, agent_id)
        await self._hold()
        return record

    async def _held_transaction(self, update: Any, *watches: Any, **kw: Any) -> Any:
        async def held(pipe: Any) -> Any:
            value = await update(pipe)  # read, and its write queued
            await self._hold()
            return value

        return await self.transaction(held, *watches, **kw)

    async def around(self, held: Awaitable[Any], meanwhile: Callable[[], Awaitable[Any]]) -> None:
        """Run ``held``; once it is held, ``meanwhile``; then let it go on."""
        task = asyncio.ensure_future(held)
        reached = asyncio.ensure_future(self.reached.wait())
        try:
            await asyncio.wait({task, reached}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            assert self.reached.is_set(), "the writer read nothing it could be held after"
            await meanwhile()
            self._go.set()
            await asyncio.wait_for(task, 5)
        finally:
            reached.cancel()
            self.store.agent = self.read  # type: ignore[method-assign]
            self.redis.transaction = self.transaction


async def test_the_agents_presence_and_the_bridges_busy_both_land(redis) -> None:
    """Ann (her socket on worker A) sets herself ``away`` while the call's worker B marks her
    ``busy`` on a call: her presence, held between its read and its write, wrote back the
    record it had read, and the call B had marked her on was lost (before: ``away`` with no
    call, so the call's end, which frees whom the call marked, left her as she was). Now both
    land: ``busy`` on the call, ``away`` what she is once it ends."""
    store_a, store_b = RedisDeskStore(redis.url), RedisDeskStore(redis.url)
    a, b = bare_desk(store_a, "a"), bare_desk(store_b, "b")
    ann = ann_socket()
    try:
        await a.connect(ann)
        held = HeldRead(store_a)
        await held.around(
            a.handle(ann, AgentMessage("presence", state="away")),
            lambda: b.set_state(ANN, "busy", "call-1"),
        )
        record = await store_b.agent(*ANN)
        assert record is not None
        assert record.call_id == "call-1", record  # the bridge's busy kept its call
        assert (record.state, record.chosen) == ("busy", "away"), record  # hers, for after it
    finally:
        await ann.close()
        await asyncio.gather(a.close(), b.close())


async def test_a_reconnect_on_another_worker_keeps_its_lease_through_the_bridges_busy(
    redis,
) -> None:
    """Ann's socket moves from worker A to A2 (a reconnect) while the call's worker B marks her
    ``busy``, its write held between its read and its write: it wrote back the record it had
    read, naming A, so A2's lease renewals (only its own agents') skipped her and she was
    ``away`` 3 s later, connected, for good. Now her record names A2 and A2 renews it."""
    store_a, store_a2, store_b = (RedisDeskStore(redis.url) for _ in range(3))
    a, a2, b = bare_desk(store_a, "a"), bare_desk(store_a2, "a2"), bare_desk(store_b, "b")
    first, again = ann_socket(), ann_socket()
    try:
        await a.connect(first)
        await a2.start()  # A2's lease: renews the agents whose socket is on A2
        held = HeldRead(store_b)
        await held.around(b.set_state(ANN, "busy", "call-1"), lambda: a2.connect(again))
        record = await store_b.agent(*ANN)
        assert record is not None and (record.state, record.call_id) == ("busy", "call-1")
        assert record.worker == "a2", record
        written = record.alive_until

        async def renewed() -> bool:
            now = await store_b.agent(*ANN)
            return now is not None and now.alive_until > written

        await until(renewed, 3, "A2 to renew ann's lease")
    finally:
        await asyncio.gather(first.close(), again.close())
        await asyncio.gather(a.close(), a2.close(), b.close())


async def test_a_reconnect_keeps_the_busy_the_bridge_marks_meanwhile(redis) -> None:
    """Ann reconnects on worker A2, her connect held between its read of her record (free)
    and its write, while the call's worker B marks her ``busy`` on a live call: the
    reconnect wrote ``available`` over it (before), and she was rung for other calls while on
    one. Now the busy stands."""
    store_a2, store_b = RedisDeskStore(redis.url), RedisDeskStore(redis.url)
    a2, b = bare_desk(store_a2, "a2"), bare_desk(store_b, "b")
    first, again = ann_socket(), ann_socket()
    try:
        await b.connect(first)
        held = HeldRead(store_a2)
        await held.around(a2.connect(again), lambda: b.set_state(ANN, "busy", "call-1"))
        record = await store_b.agent(*ANN)
        assert record is not None
        assert (record.state, record.call_id, record.worker) == ("busy", "call-1", "a2"), record
    finally:
        await asyncio.gather(first.close(), again.close())
        await asyncio.gather(a2.close(), b.close())


async def test_the_hello_is_the_first_message_whatever_came_during_the_connect(redis) -> None:
    """A message for the agent while its connect still reads its record (a call's event over
    the bus: an agent reconnecting on a live call of another worker) was written before the
    hello (seen in a clean-clone run: ``call.active`` first). The hello is the socket's first."""
    store = RedisDeskStore(redis.url)
    desk = bare_desk(store, "a")
    written: list[dict[str, Any]] = []

    async def write(text: str) -> None:
        written.append(json.loads(text))

    session = AgentSession(AgentClaims(None, "ann", ("sales",), time.time() + 60), write)
    try:
        held = HeldRead(store)
        event = {"type": "call.active", "callID": "call-1"}
        await held.around(desk.connect(session), lambda: desk.send(ANN, event))
        await until(lambda: len(written) == 2, 3, "both written")
        assert [m["type"] for m in written] == ["hello", "call.active"], written
        assert written[0]["agentID"] == "ann" and written[0]["state"] == "available"
    finally:
        await session.close()
        await desk.close()


async def _hello(client: Any, name: str) -> tuple[Agent, dict[str, Any]]:
    from .test_desk import token

    ws = await client.ws_connect(f"/agents/connect?token={await token(client, name)}")
    hello = json.loads((await ws.receive()).data)
    assert hello["type"] == "hello", hello
    return Agent(ws), hello


async def _reconnect(client: Any, agent: Agent) -> tuple[Agent, dict[str, Any]]:
    await agent.ws.close()
    return await _hello(client, "ann")


async def test_a_reconnect_frees_an_agent_whose_call_is_gone(client) -> None:
    """Ann is ``busy`` on a call that is gone — a free lost, a worker that died on the call —
    and her app reconnects: she is ``available`` (before, the record's call was kept without
    a look at it: busy for good, across every reconnect, never rung again)."""
    desk = client.app[DESK]
    ann, _ = await _hello(client, "ann")
    call_id = await incoming(client)
    await ann.next("ringing")
    await ann.send(type="accept", callID=call_id)
    await ann.next("accepted")
    await until(lambda: _listed(client, "busy"), 3, "ann busy")
    # The call ends; its free is lost (the bridge marks her busy on it once more).
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    await until(lambda: _listed(client, "available"), 3, "ann freed")
    await desk.set_state(ANN, "busy", call_id)
    ann, hello = await _reconnect(client, ann)
    assert hello["state"] == "available"
    assert await states(client) == {"ann": "available"}
    # A call this worker never had (its worker died with it): the same.
    await desk.set_state(ANN, "busy", "a-call-of-a-dead-worker")
    ann, hello = await _reconnect(client, ann)
    assert hello["state"] == "available"
    again = await incoming(client, "5521988886666")  # and she is rung again
    assert (await ann.next("ringing"))["callID"] == again
    await client.post("/call/hangup", json={"callID": again})
    await ann.ws.close()


async def _listed(client: Any, state: str) -> bool:
    return (await states(client)).get("ann") == state


async def test_a_reconnect_keeps_an_agent_busy_on_a_call_live_on_another_worker(
    redis, make_client, monkeypatch
) -> None:
    """Two workers (in-process apps) on one Redis: the call on B, ann's socket on A. While the
    call is live on B, a reconnect on A finds her ``busy`` (A has no such call: the call
    directory says it is live); once it ended on B, a busy left on it (a free lost) is gone at
    her next reconnect."""
    secret = "s" * 32
    monkeypatch.setenv("BRIDGE_WORKER_ID", "worker-a")
    a = await make_client(directory=redis.url, internal_secret=secret)
    monkeypatch.setenv("BRIDGE_WORKER_ID", "worker-b")
    b = await make_client(directory=redis.url, internal_secret=secret)
    ann, _ = await _hello(a, "ann")
    call_id = await incoming(b)
    assert (await (await b.get(f"/call/{call_id}")).json())["owner"] == "worker-b"
    assert a.app[MANAGER].registry.get(call_id) is None  # A has no such call
    await ann.next("ringing")
    await ann.send(type="accept", callID=call_id)
    assert (await ann.next("accepted"))["callID"] == call_id
    await until(lambda: _listed(a, "busy"), 3, "ann busy")
    ann, hello = await _reconnect(a, ann)
    assert hello["state"] == "busy"  # live on B
    assert await states(b) == {"ann": "busy"}
    assert (await b.post("/call/hangup", json={"callID": call_id})).status == 200
    await until(lambda: _listed(a, "available"), 3, "ann freed by B")
    await b.app[DESK].set_state(ANN, "busy", call_id)  # the free lost
    ann, hello = await _reconnect(a, ann)
    assert hello["state"] == "available"  # ended on B
    await ann.ws.close()


async def test_a_reconnect_stays_busy_while_the_directory_cannot_say(client, caplog) -> None:
    """Ann is ``busy`` on a call of another worker and reconnects while the call directory
    does not answer: she stays busy (her call may be live), said once at WARNING with why."""
    desk = client.app[DESK]

    async def unreachable(call_id: str) -> bool:
        raise DirectoryUnavailable("the call directory (Redis) is unreachable: refused")

    desk.presence.elsewhere = unreachable
    ann, _ = await _hello(client, "ann")
    await desk.set_state(ANN, "busy", "a-call-of-another-worker")
    ann, hello = await _reconnect(client, ann)
    assert hello["state"] == "busy"
    said = [r for r in caplog.records if "a-call-of-another-worker" in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING"]
    assert "refused" in said[0].getMessage()
    await ann.ws.close()


async def _accepted_call(client: Any, ann: Agent, phone: str = "5521988887777") -> str:
    call_id = await incoming(client, phone)
    await ann.next("ringing")
    await ann.send(type="accept", callID=call_id)
    await ann.next("accepted")
    assert (await ann.next("presence"))["state"] == "busy"
    return call_id


async def _seen_until_pong(agent: Agent) -> list[str]:
    """The types of what reached ``agent`` before the answer to a ``ping`` sent now (the
    socket's messages are handled, and answered, in order)."""
    await agent.send(type="ping")
    seen: list[str] = []
    async with asyncio.timeout(5):
        while True:
            kind = json.loads((await agent.ws.receive()).data)["type"]
            if kind == "pong":
                return seen
            seen.append(kind)


async def test_an_agents_own_away_outlives_the_call_it_was_on(client) -> None:
    """Ann, on a call, sets herself ``away`` (``busy`` still, while on it); the call ends: she
    is ``away`` (only the call's ``busy`` is the bridge's to clear), told so on her socket
    (her app stops its microphone on it), and is not rung. Before, the call's end put her
    back to ``available``.
    A ``busy`` her app sends on a call (``BridgeAgent`` resends the state it was told when its
    socket reopens mid-call) is the call's: she is ``available`` again after it."""
    ann, _ = await _hello(client, "ann")
    call_id = await _accepted_call(client, ann)
    await ann.send(type="presence", state="away")
    await _seen_until_pong(ann)  # her presence taken
    assert await states(client) == {"ann": "busy"}  # on her call
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    assert (await ann.next("presence"))["state"] == "away"
    body = await (await client.get("/agents")).json()
    assert [(a["state"], a["callID"]) for a in body["agents"]] == [("away", None)]
    # Back by her own choice, rung; on the call her app says busy: the call's, not hers.
    await ann.send(type="presence", state="available")
    await until(lambda: _listed(client, "available"), 3, "ann available")
    call_id = await _accepted_call(client, ann, "5521988886666")
    await ann.send(type="presence", state="busy")
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    assert (await ann.next("presence"))["state"] == "available"
    assert await states(client) == {"ann": "available"}
    await ann.ws.close()


async def test_an_agent_on_a_call_is_not_rung_whatever_presence_it_chose(client) -> None:
    """Ann, on a call, sets herself ``available`` (her own presence): another call rings bob,
    never her, and she stays ``busy`` on her call; what she chose applies once it ends
    (``available``, told), and the next call rings her. Before, her ``available`` made her
    rung for another call while still on the first."""
    ann, _ = await _hello(client, "ann")
    first = await _accepted_call(client, ann)
    bob, _ = await _hello(client, "bob")
    await ann.send(type="presence", state="available")
    await _seen_until_pong(ann)  # her presence taken
    assert await states(client) == {"ann": "busy", "bob": "available"}
    second = await incoming(client, "5521988886666")
    assert (await bob.next("ringing"))["callID"] == second
    assert "ringing" not in await _seen_until_pong(ann)
    await bob.send(type="accept", callID=second)
    await bob.next("accepted")
    assert (await client.post("/call/hangup", json={"callID": first})).status == 200
    assert (await ann.next("presence"))["state"] == "available"
    third = await incoming(client, "5521988885555")
    assert (await ann.next("ringing"))["callID"] == third
    for call_id in (second, third):
        await client.post("/call/hangup", json={"callID": call_id})
    await asyncio.gather(ann.ws.close(), bob.ws.close())


async def test_a_desk_started_while_redis_is_down_hears_the_bus_once_it_is_up() -> None:
    """A worker starting while its BRIDGE_DIRECTORY's Redis is not up yet (a pod before its
    Redis, a Redis restarting): the numbers store and the directory's lease wait it out, but
    the desk's bus subscribed once, at start, and its ConnectionError ended the start with a
    traceback. Now the bus subscribes in its read loop, as it reconnects there."""
    from ..support.cluster import Redis, require_redis

    require_redis()
    server = Redis()  # its port chosen, nothing listening yet
    heard: list[dict[str, Any]] = []
    store, sender = RedisDeskStore(server.url), RedisDeskStore(server.url)
    try:
        await store.start(heard.append)
        await server.start()

        async def sent_and_heard() -> bool:
            await sender.publish({"op": "ping"})  # pub/sub keeps nothing for a late subscriber
            return bool(heard)

        await until(sent_and_heard, every=0.1, what="a message on the bus")
        assert heard[0] == {"op": "ping"}
    finally:
        await asyncio.gather(store.close(), sender.close())
        await server.stop()
