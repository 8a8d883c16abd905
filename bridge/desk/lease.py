"""The presence lease of the agents whose sockets are on this worker: the desk's child."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from ..media.clock import clock_sleep
from .store import RENEW, AgentKey, AgentRecord, DeskStore

log = logging.getLogger(__name__)


class PresenceLease:
    """Every :data:`~.store.RENEW` s (on the media clock: no wake-up of its own during calls)
    the lease of the agents held here is renewed, so every worker sees them present until
    ``grace`` after their socket went; parked while no agent is here (an idle worker: no
    wake-up). A store that fails is said once, and its return."""

    def __init__(
        self,
        store: DeskStore,
        worker_id: str,
        grace: float,
        held: Callable[[], Iterable[AgentKey]],
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self._stopping = stopping
        """Its owner closes: the renewals end at their next turn, even where redis-py swallowed
        the close's cancellation (``cluster/redis_lease.py``)."""
        self.worker_id = worker_id
        self.grace = grace
        self._held = held
        self._holding = asyncio.Event()

    def holding(self, any_agent: bool) -> None:
        """Whether an agent's socket is here now (the desk tells it on each change)."""
        if any_agent:
            self._holding.set()
        else:
            self._holding.clear()

    async def renew_forever(self) -> None:
        down = False
        while not self._stopping():
            await self._holding.wait()  # no agent here: nothing to renew, no wake-up
            await clock_sleep(RENEW)
            records = [
                AgentRecord(k[0], k[1], (), "", 0.0, 0.0, self.worker_id) for k in self._held()
            ]
            try:
                await self.store.renew(records, time.time() + self.grace)
            except Exception as exc:  # OSError and redis' errors alike (no ConnectionError's)
                # Once this loop ended, every agent here turned ``away`` for good.
                if not down:
                    down = True
                    log.warning("agents' presence not renewed (%s): retrying every second", exc)
                continue
            if down:
                down = False
                log.warning("agents' presence renewed again")
