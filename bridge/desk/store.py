"""Where the desk keeps what every worker must see: agents' presence, the one claim that
decides who takes a ringing call, the routes, and the messages between workers.

:class:`MemoryDeskStore` is one process's (``BRIDGE_DIRECTORY=memory``);
:class:`~.redis_store.RedisDeskStore` keeps the same in the Redis of the call directory, so an
agent connected to one worker is seen, rung and claimed from every other.

Presence is a lease: the worker holding an agent's socket renews ``aliveUntil`` every
:data:`RENEW` seconds; a reader that finds it past sees the agent ``away``. A dropped socket
(or a dead worker) is therefore ``away`` within the grace with no timer per agent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

GRACE = 3.0
"""Seconds an agent whose socket dropped stays as it was before it is ``away`` (≤ 5 s)."""
RENEW = 1.0
"""Seconds between the lease renewals of the agents a worker holds."""
CLAIM_TTL = 3600
"""Seconds a call's claim is kept (longer than any ring)."""

MAX_RINGS = 10_000
"""Rings one process keeps (each is dropped when its call ends)."""

STATES = ("available", "busy", "away")

AgentKey = tuple[str | None, str]
"""An agent: its tenant (``None``: the service's own) and its id."""

BusHandler = Callable[[dict[str, Any]], None]

AgentChange = Callable[["AgentRecord | None"], "AgentRecord | None"]
"""What an update makes of an agent's record, given it as it is (``None``: there is none):
the record to write, or ``None`` to write nothing."""


@dataclass(frozen=True)
class AgentRecord:
    """One agent as every worker sees it."""

    tenant_id: str | None
    agent_id: str
    groups: tuple[str, ...]
    state: str
    """What the agent last set, or the bridge's ``busy`` while it is on a call (whatever the
    agent sets meanwhile: that is ``chosen``)."""
    since: float
    """When it became what it is (longest-idle rings the oldest ``available`` first)."""
    alive_until: float
    worker: str
    call_id: str | None = None
    chosen: str = "available"
    """The presence the agent itself set last (over its socket): what it is again when the
    bridge's ``busy`` on a call ends. Written only when not ``available``, so a record is as a
    bridge before it wrote it unless the agent chose otherwise."""

    def effective(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return self.state if self.alive_until > now else "away"

    def with_state(self, state: str, call_id: str | None = None) -> AgentRecord:
        if state == self.state and call_id == self.call_id:
            return self
        return replace(self, state=state, since=time.time(), call_id=call_id)

    def to_json(self) -> str:
        data = asdict(self)
        if self.chosen == "available":
            del data["chosen"]
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> AgentRecord:
        data = json.loads(raw)
        data["groups"] = tuple(data["groups"])
        # A field a newer bridge added (a rolling upgrade) is passed over.
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})

    def view(self) -> dict[str, Any]:
        """``GET /agents``'s row."""
        return {
            "agentID": self.agent_id,
            "tenantID": self.tenant_id,
            "state": self.effective(),
            "groups": list(self.groups),
            "since": self.since,
            "callID": self.call_id,
        }


_FIELDS = frozenset(f.name for f in fields(AgentRecord))


class DeskStore(Protocol):
    """See the module docstring."""

    async def start(self, on_message: BusHandler) -> None: ...
    async def close(self) -> None: ...

    async def update_agent(
        self, tenant_id: str | None, agent_id: str, change: AgentChange
    ) -> AgentRecord | None:
        """Change the agent's record in one atomic step (across workers): ``change`` is given
        the record as it is now and its answer is written and returned (``None``: nothing
        written). Every writer of a record goes through here, so none writes back a record
        it read over another's change meanwhile; ``change`` may run again (on the newer
        record) when another writer came first, so it only computes."""

    async def agent(self, tenant_id: str | None, agent_id: str) -> AgentRecord | None: ...
    async def agents(self, tenant_id: str | None, *, every: bool = False) -> list[AgentRecord]:
        """The agents of one tenant (``every``: of all tenants, for the service)."""

    async def renew(self, records: list[AgentRecord], until: float) -> None:
        """Extend the lease of the agents this worker holds."""

    async def claim(self, call_id: str, who: str) -> str:
        """Who holds the call's one claim: ``who`` if it was free (atomic across workers)."""

    async def put_ring(self, call_id: str, ring: dict[str, Any]) -> None:
        """Where a call's route is (``{route, step, round, rung}``): a survivor resumes it."""

    async def ring(self, call_id: str) -> dict[str, Any] | None: ...
    async def drop_ring(self, call_id: str) -> None: ...

    async def put_route(
        self, route_id: str, body: dict[str, Any], *, cap: int | None = None
    ) -> bool:
        """Store a route (``body``: its stored form, ``tenantID`` among it); with ``cap``,
        only while its tenant has fewer than ``cap`` other routes, counted and written in one
        atomic step (across workers: two taking a tenant's last place at once cannot both).
        Whether it was stored."""

    async def route(self, route_id: str) -> dict[str, Any] | None: ...
    async def routes(self) -> list[dict[str, Any]]: ...
    async def delete_route(self, route_id: str) -> bool: ...

    async def publish(self, message: dict[str, Any]) -> None:
        """Hand a message to every worker's ``on_message`` (this one's included)."""


def _key(tenant_id: str | None, agent_id: str) -> str:
    return f"{tenant_id or ''}/{agent_id}"


def agent_of(entry: object) -> AgentKey:
    """The agent a ring record names (``_key``'s form)."""
    tenant, _, agent = str(entry).partition("/")
    return (tenant or None, agent)


def at_cap(
    routes: dict[str, dict[str, Any]], route_id: str, body: dict[str, Any], cap: int
) -> bool:
    """Whether ``body``'s tenant has ``cap`` routes (``routes`` stored, by id) besides
    ``route_id``."""
    tenant = body.get("tenantID")
    theirs = [rid for rid, r in routes.items() if rid != route_id and r.get("tenantID") == tenant]
    return len(theirs) >= cap


class MemoryDeskStore:
    """One process: dicts, and messages delivered on the next turn of the loop."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}
        self._claims: dict[str, str] = {}
        self._routes: dict[str, dict[str, Any]] = {}
        self._rings: dict[str, dict[str, Any]] = {}
        self._on_message: BusHandler | None = None

    async def start(self, on_message: BusHandler) -> None:
        self._on_message = on_message

    async def close(self) -> None:
        self._on_message = None

    async def update_agent(
        self, tenant_id: str | None, agent_id: str, change: AgentChange
    ) -> AgentRecord | None:
        key = _key(tenant_id, agent_id)
        record = change(self._agents.get(key))  # read and written in one turn of the loop
        if record is not None:
            self._agents[key] = record
        return record

    async def agent(self, tenant_id: str | None, agent_id: str) -> AgentRecord | None:
        return self._agents.get(_key(tenant_id, agent_id))

    async def agents(self, tenant_id: str | None, *, every: bool = False) -> list[AgentRecord]:
        return [a for a in self._agents.values() if every or a.tenant_id == tenant_id]

    async def renew(self, records: list[AgentRecord], until: float) -> None:
        for record in records:
            key = _key(record.tenant_id, record.agent_id)
            current = self._agents.get(key)
            if current is not None and current.worker == record.worker:
                self._agents[key] = replace(current, alive_until=until)

    async def claim(self, call_id: str, who: str) -> str:
        if len(self._claims) > 10_000:  # bounded: the oldest claims are long decided
            for old in list(self._claims)[:5_000]:
                del self._claims[old]
        return self._claims.setdefault(call_id, who)

    async def put_ring(self, call_id: str, ring: dict[str, Any]) -> None:
        if call_id not in self._rings and len(self._rings) >= MAX_RINGS:
            del self._rings[next(iter(self._rings))]  # bounded: the oldest, long ended
        self._rings[call_id] = ring

    async def ring(self, call_id: str) -> dict[str, Any] | None:
        return self._rings.get(call_id)

    async def drop_ring(self, call_id: str) -> None:
        self._rings.pop(call_id, None)

    async def put_route(
        self, route_id: str, body: dict[str, Any], *, cap: int | None = None
    ) -> bool:
        if cap is not None and at_cap(self._routes, route_id, body, cap):
            return False  # counted and written in one turn of the loop
        self._routes[route_id] = body
        return True

    async def route(self, route_id: str) -> dict[str, Any] | None:
        return self._routes.get(route_id)

    async def routes(self) -> list[dict[str, Any]]:
        return list(self._routes.values())

    async def delete_route(self, route_id: str) -> bool:
        return self._routes.pop(route_id, None) is not None

    async def publish(self, message: dict[str, Any]) -> None:
        handler = self._on_message
        if handler is not None:
            asyncio.get_running_loop().call_soon(handler, message)
