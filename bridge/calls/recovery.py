"""Calls nobody here owns any more: the engine's orphans at start-up, and a dead worker's calls.

* **Orphans** — at start-up the engine may carry calls no live bridge owns (this process
  died with them, or a dial outlived it). Once the engine first lists its calls,
  :meth:`Recovery.sweep_orphans` hangs up those that are answered or outbound and that no
  live call — here or, with a shared directory, on another worker — owns
  (``BRIDGE_ORPHAN_CALLS=hangup``; ``keep`` only logs them). A ringing inbound call is a new
  call, offered like any other.
* **Lost calls** — when a worker's heartbeat lapses, one survivor's directory rebuilds each of
  its live calls from the directory's record and hands it to :meth:`Recovery.end_lost_call`:
  the call ends ``failed``/``worker_lost`` here (SSE, webhooks, directory) and is hung up on
  the engine where it allows it. A worker that learns it was taken for dead ends its own
  calls the same way (:meth:`Recovery.end_local_calls_as_lost`).

What happens to such a call is decided here, through the state machine's
:meth:`CallManager.record_end` / :meth:`CallManager.end` (and, to take one in as a live call
of this process, :meth:`CallManager.add`); the tasks it needs belong to this object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..config import OrphanCalls
from ..engines import RemoteCall
from ..errors import EngineCallNotFound, EngineError
from ..tasks import TaskSet
from .hangup import HANGUP_TIMEOUT, hang_up_quietly
from .manager import CallManager
from .model import Call, EndReason

log = logging.getLogger(__name__)

ORPHAN_RECHECK = 3.0
"""Seconds a worker sharing a directory waits before it takes an unowned engine call for an
orphan (another worker's dial may not be recorded yet)."""

DIALS_SETTLE = 10.0
"""Seconds the orphan sweep waits for this process's dials in flight (a call being dialled
may be in the engine's listing before it is ours)."""

KnownElsewhere = Callable[[str], Awaitable[bool]]
"""``known_elsewhere(engine call id)``: does another live worker carry this engine call?"""


async def _never(engine_call_id: str) -> bool:
    return False


class Recovery:
    """Orphans and lost calls of one process (see the module docstring)."""

    def __init__(self, manager: CallManager, *, known_elsewhere: KnownElsewhere | None = None):
        """Without ``known_elsewhere`` (one process) every engine call no call here owns is
        an orphan."""
        self.manager = manager
        self.engine = manager.engine
        self._known_elsewhere = known_elsewhere or _never
        self._tasks = TaskSet("recovery")

    async def start(self) -> None:
        """Sweep the engine's orphans in the background (once the engine lists its calls)."""
        self._tasks.spawn(self.sweep_orphans(), "orphans")

    async def close(self) -> None:
        """Stop the sweep and any hang-up of a lost call still waiting for the engine."""
        await self._tasks.close()

    # -- orphans
    async def sweep_orphans(self) -> None:
        """Once the engine first lists its calls, hang up those no live call owns.

        Orphans are answered calls and outbound calls (a bridge that died dialled or carried
        them); a ringing inbound call is a new call, offered like any other.
        """
        manager = self.manager
        listed = await self.engine.startup_calls()
        await manager.dials_settled(DIALS_SETTLE)
        candidates = [
            remote
            for remote in listed
            if not remote.ended
            and not remote.ringing_inbound
            and manager.registry.by_engine_id(remote.id) is None  # no live call of ours owns it
        ]
        if candidates and self._known_elsewhere is not _never:
            # Another worker may be dialling one right now: its record reaches the directory
            # a moment after the engine lists the call.
            await asyncio.sleep(ORPHAN_RECHECK)
        for remote in candidates:
            if manager.registry.by_engine_id(remote.id) is not None:
                continue
            if await self._known_elsewhere(remote.id):
                continue  # another worker's live call
            await self._orphan(remote)

    async def _orphan(self, remote: RemoteCall) -> None:
        what = (
            f"{remote.state} {remote.direction or '?'} call {remote.id} with {remote.peer or '?'}"
        )
        if self.manager.settings.orphan_calls is OrphanCalls.KEEP:
            log.warning(
                "engine %s has an orphaned %s (no live call of this bridge owns it); "
                "left up (BRIDGE_ORPHAN_CALLS=keep)",
                self.engine.name,
                what,
            )
            return
        log.warning(
            "engine %s has an orphaned %s (no live call of this bridge owns it); hanging it up "
            "(BRIDGE_ORPHAN_CALLS=hangup)",
            self.engine.name,
            what,
        )
        try:
            await asyncio.wait_for(self.engine.hangup(remote.id), HANGUP_TIMEOUT)
        except EngineCallNotFound:
            pass  # gone meanwhile
        except (EngineError, TimeoutError, ConnectionError) as exc:
            why = str(exc) or type(exc).__name__
            log.warning("engine call %s: orphan hang-up failed (%s); retrying", remote.id, why)
            self.engine.hangup_later(remote.id, f"orphan: {why}")

    # -- a dead worker's calls
    async def end_lost_call(self, call: Call) -> None:
        """End a call whose worker died (rebuilt from the shared directory by a survivor):
        end it ``failed``/``worker_lost``, emit, then hang it up on the engine where it
        allows it."""
        if self.manager.registry.get(call.id) is not None or not call.live:
            return
        call.end_detail = "worker_lost"
        self.manager.record_end(call, EndReason.FAILED)
        log.warning(
            "call %s: ended (failed, worker_lost: worker %s died)",
            call.id,
            call.owner,
            extra={"call_id": call.id},
        )
        # The event first, the engine after (a dead worker may have had many calls, and each
        # hang-up may wait for HANGUP_TIMEOUT).
        if not self._tasks.closed:
            self._tasks.spawn(hang_up_quietly(self.engine, call), f"lost:{call.id}")

    async def end_local_calls_as_lost(self) -> None:
        """Another worker took this one for dead and ended its calls: end them here too."""
        for call in self.manager.live_calls():
            call.end_detail = "worker_lost"
            await hang_up_quietly(self.engine, call)
            await self.manager.end(call, EndReason.FAILED)
