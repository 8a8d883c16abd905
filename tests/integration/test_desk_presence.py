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
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from bridge.desk import AgentClaims, AgentSession, AgentTokens, Desk
from bridge.desk.redis_store import RedisDeskStore
from bridge.desk.store import AgentRecord
from bridge.desk.wire import AgentMessage

from ..support.waits import until

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
    call, so the call's end, which frees whom the call marked, left her as she was)."""
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
        assert record.state == "away"  # hers, the last to land
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
