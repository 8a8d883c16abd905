"""``AgentPresence``: the writes of the agents' records, the desk's child (``lease.py`` renews
them). Each is one atomic update of the record in the store
(:meth:`~.store.DeskStore.update_agent`): the writers of one agent — its own ``presence`` over
its socket on one worker, the bridge's ``busy`` and the free at the end of its call on the
call's worker, a reconnect on a third — never write back a record they read over another's
change made meanwhile.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .store import AgentKey, AgentRecord, DeskStore
from .tokens import AgentClaims


class AgentPresence:
    """See the module docstring."""

    def __init__(self, store: DeskStore, worker_id: str, grace: float) -> None:
        self.store = store
        self.worker_id = worker_id
        self.grace = grace

    async def connected(self, claims: AgentClaims) -> AgentRecord:
        """An agent's socket opened here: it is ``available``, or still ``busy`` on its call
        (a reconnect mid-call: the call's end frees it)."""
        now = time.time()
        fresh = AgentRecord(
            claims.tenant_id,
            claims.agent_id,
            claims.groups,
            "available",
            since=now,
            alive_until=now + self.grace,
            worker=self.worker_id,
        )

        def connected(previous: AgentRecord | None) -> AgentRecord:
            if previous is not None and previous.state == "busy" and previous.call_id:
                return replace(fresh, state="busy", since=previous.since, call_id=previous.call_id)
            return fresh

        record = await self.store.update_agent(claims.tenant_id, claims.agent_id, connected)
        assert record is not None
        return record

    async def mark(self, key: AgentKey, state: str, call_id: str | None) -> bool:
        """The bridge sets the agent's state (``busy`` on ``call_id``); ``False``: no such
        agent."""
        changed = await self.store.update_agent(*key, lambda r: r and r.with_state(state, call_id))
        return changed is not None

    async def free(self, key: AgentKey, call_id: str) -> bool:
        """The agent is off ``call_id``: ``available`` again if its record still names that
        call (``False``: it does not, and a ``busy`` on another call since then stands)."""

        def freed(record: AgentRecord | None) -> AgentRecord | None:
            return record.with_state("available") if record and record.call_id == call_id else None

        return await self.store.update_agent(*key, freed) is not None

    async def chose(self, key: AgentKey, state: str) -> None:
        """The agent's own ``presence``: its state, on the call it is on if any."""
        await self.store.update_agent(*key, lambda r: r and r.with_state(state, r.call_id))
