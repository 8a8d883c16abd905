"""Double answers in 1 000 racing trials (issue 49's target: 0), in-process and fast: two agents
accept the same ring round at once — on one desk with the memory claim, and on two desks
("workers") sharing a real Redis — and in a third of the trials a hang-up claims the round in
the same turn ("terminate always wins" when it is first). Each trial: exactly one of them holds
the round's claim, exactly the holder's ``accepted`` reaches the bus (none when the hang-up
won), and every agent that did not win hears ``call.taken``."""

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
