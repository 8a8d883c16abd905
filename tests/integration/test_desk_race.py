"""Double answers in 1 000 racing trials (issue 49's target: 0), in-process and fast: two agents
accept the same ring round at once — on one desk with the memory claim, and on two desks
("workers") sharing a real Redis — and in a third of the trials a hang-up claims the round in
the same turn ("terminate always wins" when it is first). Each trial: exactly one of them holds
the round's claim, exactly the holder's ``accepted`` reaches the bus (none when the hang-up
won), and every agent that did not win hears ``call.taken``. Then an accept taken as the call
ends: the agent is free again once the call is gone."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest

from bridge.desk import AgentClaims, AgentSession, AgentTokens, Desk, MemoryDeskStore
from bridge.desk.redis_store import RedisDeskStore
from bridge.desk.wire import AgentMessage

from ..support.calls import wait_state
from ..support.waits import until

TRIALS = 1000


async def _write(text: str) -> None:
    pass


def desk_on(store: Any) -> Desk:
    # The race is the desk's and the store's alone: no call manager is reached on accept.
    return Desk(store, AgentTokens(b"k" * 32), None, None, None, worker_id="w")  # type: ignore[arg-type]


def agent(name: str) -> AgentSession:
    return AgentSession(AgentClaims(None, name, ("sales",), time.time() + 60), _write)


def sent(session: AgentSession, call_id: str) -> list[str]:
    out = [json.loads(m) for m in session._queue]
    session._queue.clear()
    return [m["type"] for m in out if m.get("callID") == call_id]


async def race(desks: list[Desk], sessions: list[AgentSession], accepted: Counter[str]) -> None:
    store = desks[0].store
    for i in range(TRIALS):
        call_id = f"race-{i}"
        for session in sessions:
            session.rung(call_id, 1)
        accept = AgentMessage("accept", call_id=call_id)
        work = [desk.handle(session, accept) for desk, session in zip(desks, sessions, strict=True)]
        if i % 3 == 0:  # the caller hangs up in the same turn
            work.insert(i % 2 * 2, store.claim(f"{call_id}:1", "ended"))
        await asyncio.gather(*work)
        holder = await store.claim(f"{call_id}:1", "timeout")
        assert holder in ("ended", "/ann", "/bob"), holder
        for session in sessions:
            told = sent(session, call_id)
            if holder == f"/{session.key[1]}":
                assert told == [], told  # the winner hears "accepted" from the call's run
            else:
                assert told == ["call.taken"], (i, holder, told)
    # The bus carries exactly one ``accepted`` per trial an agent won, never two.
    wins = TRIALS - len(range(0, TRIALS, 3))  # at least these went to an agent
    await until(lambda: sum(accepted.values()) >= wins, 10, "the accepts on the bus")
    await asyncio.sleep(0.2)  # nothing more arrives
    assert max(accepted.values()) == 1
    for call_id in accepted:
        assert await store.claim(f"{call_id}:1", "timeout") in ("/ann", "/bob")
    assert sum(accepted.values()) >= wins


def counting(accepted: Counter[str]) -> Any:
    def on(message: dict[str, Any]) -> None:
        if message.get("op") == "accepted":
            accepted[str(message["callID"])] += 1

    return on


async def test_1000_racing_trials_one_desk_memory_claim() -> None:
    store = MemoryDeskStore()
    accepted: Counter[str] = Counter()
    await store.start(counting(accepted))
    desk = desk_on(store)
    started = time.monotonic()
    await race([desk, desk], [agent("ann"), agent("bob")], accepted)
    print(f"\n{TRIALS} racing trials, memory claim: {time.monotonic() - started:.2f} s, 0 double")


@pytest.mark.timeout(60)
async def test_1000_racing_trials_two_workers_redis_claim(redis) -> None:
    stores = [RedisDeskStore(redis.url), RedisDeskStore(redis.url)]
    accepted: Counter[str] = Counter()
    await stores[0].start(counting(accepted))  # one worker counts what the bus carries
    await stores[1].start(lambda message: None)
    try:
        started = time.monotonic()
        await race([desk_on(s) for s in stores], [agent("ann"), agent("bob")], accepted)
        print(
            f"\n{TRIALS} racing trials, Redis claim, two workers: "
            f"{time.monotonic() - started:.2f} s, 0 double"
        )
    finally:
        for store in stores:
            await store.close()


class SlowToClose:
    """A child of the call that takes a while to close (a recording flushing, a peer
    closing): the call's teardown waits for it before it cancels the call's tasks, the
    route's included. It hears the end first and passes it on (``ended``)."""

    id, kind, wants_media = "slow", "slow", False

    def __init__(self, ended: asyncio.Event) -> None:
        self.ended = ended

    def call_state(self, state: str, end_reason: str | None) -> None:
        if state == "ended":
            self.ended.set()

    async def close(self) -> None:
        await asyncio.sleep(0.3)


async def test_an_accept_taken_as_the_call_ends_leaves_the_agent_free(make_client, redis) -> None:
    """The accept won its round over Redis and the call's run is taking it — its look-up of
    where the agent's leg is held here until the hang-up has ended the call — while the call
    tears down (slowly, :class:`SlowToClose`). The agent hears ``accepted`` and
    ``call.ended``, is ``available`` again and is rung for the next call (before, the run
    marked it busy after the end had looked for a winner: busy for good, never rung again)."""
    from bridge.api.keys import DESK, MANAGER

    from .test_desk import Agent, incoming, states

    client = await make_client(directory=redis.url, internal_secret="s" * 32)
    store = client.app[DESK].store
    looked_up, ended = asyncio.Event(), asyncio.Event()
    read, save = store.agent, store.put_ring
    taking = False

    async def saved(call_id: str, ring: dict[str, Any]) -> None:
        nonlocal taking
        await save(call_id, ring)
        taking = ring["winner"] is not None  # the run took the accept: its next read is

    async def held_read(tenant_id: str | None, agent_id: str) -> Any:
        if taking and not looked_up.is_set():
            looked_up.set()  # where the agent's socket is, for its leg
            await ended.wait()
        return await read(tenant_id, agent_id)

    store.agent, store.put_ring = held_read, saved  # type: ignore[method-assign]
    ann = await Agent.connect(client, "ann")
    call_id = await incoming(client)
    await ann.next("ringing")
    client.app[MANAGER].find_runtime(call_id).attach(SlowToClose(ended))
    await ann.send(type="accept", callID=call_id)
    await asyncio.wait_for(looked_up.wait(), 5)
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    heard: set[str] = set()
    async with asyncio.timeout(5):
        while not {"accepted", "call.ended"} <= heard:  # in either order
            heard.add(json.loads((await ann.ws.receive()).data)["type"])
    try:
        await until(lambda: _free(client), 2, "ann available")
    except AssertionError:
        pytest.fail(f"ann left {await states(client)} once the call is gone")
    again = await incoming(client, "5521988886666")
    assert (await ann.next("ringing"))["callID"] == again
    await client.post("/call/hangup", json={"callID": again})
    await ann.ws.close()


async def _gone(client: Any, call_id: str) -> bool:
    resp = await client.get(f"/call/{call_id}")
    return resp.status == 404 or (await resp.json()).get("state") == "ended"


async def _free(client: Any) -> bool:
    from .test_desk import states

    return (await states(client)) == {"ann": "available"}


class StandInLeg:
    """An agent's connected leg as lending sees it (``test_streams.py``'s stand-in): usable,
    attached to a call's bus and released."""

    usable, closed = True, False
    attached_to: str | None = None

    def attach(self, call_id: str, *_: Any) -> None:
        self.attached_to = call_id

    def release(self) -> None:
        self.attached_to = None

    async def shutdown(self) -> None:
        self.closed = True


async def test_a_late_lent_answer_is_not_taken_for_the_next_ask(
    make_client, redis, monkeypatch
) -> None:
    """Two workers on a real Redis: the call on B (the app), ann and bob on A (a desk of its
    own, lending with the real relay to B). B's ask for ann's leg gives up before A answers
    (its wait cut to nothing here): ann hears ``leg: false``. A's answer comes later still,
    while B asks for bob's leg after a transfer to bob's group (A's stream to B held until
    then, and its answer for bob until ann's is out): bob hears ``leg: false``, A having no
    leg of his (before, B took ann's late ``lent ok`` for bob's and told him ``leg: true``, a
    leg that never came), and B has A let ann's late leg go (``unlend``)."""
    import aiohttp

    from bridge.api.internal import relay_opener
    from bridge.desk import lending
    from bridge.desk.lending import Lending

    from .test_desk import incoming

    secret = "s" * 32
    client = await make_client(directory=redis.url, internal_secret=secret)
    b = str(client.make_url("")).rstrip("/")
    store = RedisDeskStore(redis.url)
    a = Desk(store, AgentTokens(b"k" * 32), None, None, None, worker_id="a")  # type: ignore[arg-type]
    heard: list[dict[str, Any]] = []
    bob_asked, ann_answered = asyncio.Event(), asyncio.Event()

    def on_bus(message: dict[str, Any]) -> None:
        heard.append(message)
        if message.get("op") == "lend" and message.get("agent") == "bob":
            bob_asked.set()
        if message.get("op") not in ("accepted", "declined", "control"):
            a._on_bus(message)  # those are for the call's worker (B): A runs no calls

    publish = store.publish

    async def publish_in_order(message: dict[str, Any]) -> None:
        if message.get("op") == "lent" and not message.get("ok"):
            await ann_answered.wait()  # bob's answer (no leg) after ann's late one
        await publish(message)
        if message.get("op") == "lent" and message.get("ok"):
            ann_answered.set()

    store.publish = publish_in_order  # type: ignore[method-assign]
    said: dict[str, list[dict[str, Any]]] = {"ann": [], "bob": []}

    def socket(name: str, groups: tuple[str, ...]) -> AgentSession:
        async def write(text: str) -> None:
            said[name].append(json.loads(text))

        return AgentSession(AgentClaims(None, name, groups, time.time() + 60), write)

    async def told(name: str, kind: str) -> dict[str, Any]:
        return await until(
            lambda: next((m for m in said[name] if m["type"] == kind), None), 5, f"{name} {kind}"
        )

    async with aiohttp.ClientSession() as http:
        opener = relay_opener(http, secret)

        async def open_late(_url: str, worker: str, call_id: str) -> Any:
            await bob_asked.wait()  # A is slow: its answer for ann comes during bob's ask
            return await opener(b, worker, call_id)

        a.lending = Lending(a, open_late, "http://a")
        await store.start(on_bus)
        ann, bob = socket("ann", ("front",)), socket("bob", ("sales",))
        try:
            for session in (ann, bob):
                await a.connect(session)
            ann.leg = StandInLeg()  # type: ignore[assignment]
            call_id = await incoming(client)
            await told("ann", "ringing")
            monkeypatch.setattr(lending, "ANSWER_WAIT", 0.0)  # B's ask gives up at once
            await a.handle(ann, AgentMessage("accept", call_id=call_id))
            assert (await told("ann", "accepted"))["leg"] is False
            # "accepted" goes out before the answer: a transfer needs the call active.
            await wait_state(client, call_id, "active")
            monkeypatch.setattr(lending, "ANSWER_WAIT", 3.0)
            await told("bob", "call.taken")  # the first ring rang everyone
            said["bob"].clear()
            moved = await client.post(
                "/call/transfer", json={"callID": call_id, "group": "sales", "timeoutS": 5}
            )
            assert moved.status == 202, await moved.text()
            await told("bob", "ringing")
            await a.handle(bob, AgentMessage("accept", call_id=call_id))
            assert (await told("bob", "accepted"))["leg"] is False  # A had no leg of bob's
            assert (await told("ann", "transferred"))["to"] == "bob"
            late = next(m for m in heard if m["op"] == "lent" and m["ok"])
            assert late["agent"] == "ann"
            await until(lambda: [m for m in heard if m["op"] == "unlend"], 5, "B to have A let go")
            assert [m["request"] for m in heard if m["op"] == "unlend"] == [late["request"]]
            await until(lambda: ann.leg.attached_to is None, 5, "ann's late leg let go")
            await client.post("/call/hangup", json={"callID": call_id})
            await told("bob", "call.ended")
        finally:
            await a.close()
