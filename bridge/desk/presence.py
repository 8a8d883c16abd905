"""``AgentPresence``: the writes of the agents' records, the desk's child (``lease.py`` renews
them). Each is one atomic update of the record in the store
(:meth:`~.store.DeskStore.update_agent`): the writers of one agent — its own ``presence`` over
its socket on one worker, the bridge's ``busy`` and the free at the end of its call on the
call's worker, a reconnect on a third — never write back a record they read over another's
change made meanwhile.

The agent's own presence (``chosen``) waits for the bridge's ``busy``: an agent on a call is
``busy`` whatever it says (``available`` would have it rung for another call while on this
one), and the end of its call puts it back to what it chose (``away`` set on the call stays
``away``); a ``busy`` it says on a call is the call's (an app that resends the state it was
told when its socket reopens mid-call is not ``busy`` for good after it).

A reconnect keeps an agent ``busy`` only while the call its record names is live — on this
worker (its registry) or on another (the call directory's record): an agent left busy on a
call that is gone (a free lost, a worker that died on the call) is ``available`` again when
its app reconnects, instead of busy for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from ..calls.model import Call
from .store import AgentKey, AgentRecord, DeskStore
from .tokens import AgentClaims

log = logging.getLogger(__name__)

LiveElsewhere = Callable[[str], Awaitable[bool]]
"""Whether a call that is not this worker's is live on another."""


async def _nowhere(call_id: str) -> bool:
    return False


class AgentPresence:
    """See the module docstring."""

    def __init__(
        self,
        store: DeskStore,
        worker_id: str,
        grace: float,
        here: Callable[[str], Call | None],
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.grace = grace
        self._here = here
        """This worker's call of that id, live or ended (its registry)."""
        self.elsewhere: LiveElsewhere = _nowhere
        """Whether a call not this worker's is live on another: the call directory's record,
        bound by the app (alone, a call not here is nowhere); raises when it cannot say."""

    async def connected(self, claims: AgentClaims) -> AgentRecord:
        """An agent's socket opened here: it is ``available``, or still ``busy`` on its call
        while that call is live (a reconnect mid-call: the call's end frees it)."""
        previous = await self.store.agent(claims.tenant_id, claims.agent_id)
        on = previous.call_id if previous is not None and previous.state == "busy" else None
        gone = on if on and not await self._live(on, claims.agent_id) else None
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
            # Busy on another call than the one found gone: marked since the look, it stands.
            if previous is not None and previous.state == "busy" and previous.call_id:
                if previous.call_id != gone:
                    return replace(
                        fresh,
                        state="busy",
                        since=previous.since,
                        call_id=previous.call_id,
                        chosen=previous.chosen,
                    )
            return fresh

        record = await self.store.update_agent(claims.tenant_id, claims.agent_id, connected)
        assert record is not None
        return record

    async def _live(self, call_id: str, agent_id: str) -> bool:
        call = self._here(call_id)
        if call is not None and call.owner == self.worker_id:
            return call.live
        try:
            return await self.elsewhere(call_id)
        except Exception as exc:  # the directory's own errors (Redis's are not OSError)
            log.warning(
                "agent %s reconnected busy on call %s: kept busy, the call directory cannot "
                "say whether that call is live (%s)",
                agent_id,
                call_id,
                exc,
            )
            return True

    async def mark(self, key: AgentKey, state: str, call_id: str | None) -> bool:
        """The bridge sets the agent's state (``busy`` on ``call_id``); ``False``: no such
        agent."""
        changed = await self.store.update_agent(*key, lambda r: r and r.with_state(state, call_id))
        return changed is not None

    async def free(self, key: AgentKey, call_id: str) -> str | None:
        """The agent is off ``call_id``: what it chose itself again (``available`` unless it
        said otherwise), if its record still names that call; the state it is in now
        (``None``: the record names another call, and that ``busy`` stands)."""

        def freed(record: AgentRecord | None) -> AgentRecord | None:
            if record is None or record.call_id != call_id:
                return None
            return record.with_state(record.chosen)

        record = await self.store.update_agent(*key, freed)
        return None if record is None else record.state

    async def chose(self, key: AgentKey, state: str) -> None:
        """The agent's own ``presence``: its state now, or, on a call, what it is once that
        call ends (a ``busy`` said on a call is the call's: module docstring)."""

        def chose(record: AgentRecord | None) -> AgentRecord | None:
            if record is None:
                return None
            if record.call_id:  # busy on it, whatever the agent says
                return replace(record, chosen=record.chosen if state == "busy" else state)
            return replace(record.with_state(state), chosen=state)

        await self.store.update_agent(*key, chose)
