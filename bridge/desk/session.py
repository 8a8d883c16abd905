"""One connected agent on this worker: its socket's outgoing queue and the calls ringing it.

The desk writes to an agent with :meth:`AgentSession.send` (never awaits the socket): messages
queue (bounded; past it the oldest goes and is counted) and one writer task drains them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..calls import ConnectedLeg
from ..tasks import CloseOnce, TaskSet
from .tokens import AgentClaims

log = logging.getLogger(__name__)

QUEUE = 256
"""Messages waiting for one agent's socket."""
RINGS = 64
"""Calls remembered as ringing one agent (accepting one it was never rung for is refused)."""

Write = Callable[[str], Awaitable[None]]


class AgentSession:
    """See the module docstring."""

    def __init__(
        self, claims: AgentClaims, write: Write, hang_up: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        self.claims = claims
        self._write = write
        self._hang_up = hang_up
        """Closes the socket: a session the desk lets go (replaced by a new socket of the same
        agent) says nothing more and hears nothing more."""
        self._queue: deque[str] = deque(maxlen=QUEUE)
        self._ready = asyncio.Event()
        self._greeted = asyncio.Event()
        """Set by :meth:`greet`: nothing is written before the hello (messages for the agent
        may come from the bus while its connect still reads its record)."""
        self._tasks = TaskSet(f"agent:{claims.agent_id}")
        self.dropped = 0
        self.rings: OrderedDict[str, int] = OrderedDict()
        """Call id → the ring round that rang this agent for it."""
        self.leg: ConnectedLeg | None = None
        """The agent's always-connected media leg (its ``offer``), owned here: lent to each
        call the agent takes, closed with the session (or, on a call then, by the call)."""
        self._closed = False
        self._closing: CloseOnce[None] = CloseOnce(f"agent:{claims.agent_id}:close")

    @property
    def key(self) -> tuple[str | None, str]:
        return self.claims.tenant_id, self.claims.agent_id

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, work: Any, name: str) -> None:
        """Run ``work`` as this session's task (closed with it)."""
        if self._tasks.closed:
            work.close()
        else:
            self._tasks.spawn(work, name)

    async def drop_leg(self) -> None:
        """Let the leg go: closed now when idle, by its call's close when on one."""
        leg, self.leg = self.leg, None
        if leg is None:
            return
        if leg.attached_to is not None and not leg.closed:
            leg.orphan()
        else:
            await leg.shutdown()

    def start(self) -> None:
        self._tasks.spawn(self._drain(), "writer")

    def greet(self, hello: dict[str, Any]) -> None:
        """The socket's first message, ahead of any queued while the connect went on; the
        writer starts writing with it."""
        if self._closed:
            return
        self._queue.appendleft(json.dumps(hello))
        self._greeted.set()
        self._ready.set()

    def send(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(json.dumps(message))
        self._ready.set()

    def rung(self, call_id: str, round_no: int) -> None:
        self.rings[call_id] = round_no
        self.rings.move_to_end(call_id)
        while len(self.rings) > RINGS:
            self.rings.popitem(last=False)

    async def _drain(self) -> None:
        await self._greeted.wait()
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                await self._write(self._queue.popleft())

    async def close(self) -> None:
        """Stop writing, let the leg go, close the socket (idempotent; concurrent callers
        share one teardown, which runs to its end even if a caller is cancelled:
        ``tasks.CloseOnce``)."""
        self._closed = True
        await self._closing.run(self._teardown)

    async def _teardown(self) -> None:
        await self._tasks.close()
        await self.drop_leg()
        hang_up, self._hang_up = self._hang_up, None
        if hang_up is not None:
            await hang_up()
