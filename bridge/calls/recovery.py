"""Calls nobody here owns any more: the engine's orphans at start-up, and a dead worker's calls.

* **Orphans** — at start-up the engine may carry calls no live bridge owns (this process
  died with them, or a dial outlived it). Once the engine first lists its calls,
  :meth:`Recovery.sweep_orphans` hangs up those that are answered or outbound and that no
  live call — here or, with a shared directory, on another worker — owns
  (``BRIDGE_ORPHAN_CALLS=hangup``; ``keep`` only logs them). A ringing inbound call is a new
  call, offered like any other.
* **Lost calls** — when a worker's heartbeat lapses, one survivor's directory rebuilds each of
  its live calls from the directory's record and hands it to :meth:`Recovery.lost_call`,
  which decides adopt or end. A call whose engine lets another worker carry it on
  (:class:`~bridge.engines.MovableCalls`: ZuckZapGo, WADial) is adopted when this process
  was given a way to (``adopt``: the handover's receiving end, ``cluster/handover.py``) and
  has room: its engine media is opened again here and the recording goes on (its next
  segment); then ``call.moved {…, reason: "crash"}`` tells the browser to offer again while
  the media forks and the agents the record kept (``CallRecord.attachments``) re-open (a
  model's session set-up does not delay the browser's return), and a call no
  browser (nor fork, socket or agent) came back to within ``offer_timeout`` ends
  ``failed``/``worker_lost`` as below. Any other lost call goes to
  :meth:`Recovery.end_lost_call`: it ends ``failed``/``worker_lost`` here (SSE, webhooks,
  directory) and is hung up on the engine where it allows it. A worker that learns it was
  taken for dead ends its own calls the same way (:meth:`Recovery.end_local_calls_as_lost`),
  but lets go quietly of those a survivor adopted meanwhile.

What happens to such a call is decided here, through the state machine's
:meth:`CallManager.record_end` / :meth:`CallManager.end` (and, to take one in as a live call
of this process, :meth:`CallManager.add`, or ``adopt`` for a dead worker's call); the tasks
it needs belong to this object (an adopted call's wait for its browser is its runtime's end
task, :meth:`~bridge.calls.runtime.CallRuntime.end_soon`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import OrphanCalls
from ..engines import RemoteCall
from ..errors import BadRequest, BridgeError, EngineCallNotFound, EngineError, NotOwner
from ..tasks import TaskSet
from .hangup import HANGUP_TIMEOUT, hang_up_quietly
from .letting_go import announce_move, can_move, release_call
from .manager import CallManager
from .model import Call, EndReason
from .moved import MovedCall
from .runtime import CallRuntime, EndCall

log = logging.getLogger(__name__)

ORPHAN_RECHECK = 3.0
"""Seconds a worker sharing a directory waits before it takes an unowned engine call for an
orphan (another worker's dial may not be recorded yet)."""

DIALS_SETTLE = 10.0
"""Seconds the orphan sweep waits for this process's dials in flight (a call being dialled
may be in the engine's listing before it is ours)."""

KnownElsewhere = Callable[[str], Awaitable[bool]]
"""``known_elsewhere(engine key)``: does another live worker carry this engine call? (The key
is :func:`~.model.engine_key`: the engine's id, qualified by its number.)"""

Adopt = Callable[[MovedCall, Callable[[CallRuntime], None]], Awaitable[Call]]
"""``adopt(moved, carried)``: carry a moved call on here — claimed in the directory, its engine
media open, then ``carried(runtime)``, then its forks and agents re-opened (``Handover.adopt``,
the receiving end of a handover); raises a ``BridgeError`` when it cannot (no room, shutting
down, the directory down)."""

FinishRecording = Callable[[Call, dict[str, Any]], None]
"""``finish(call, recording)``: the recording segment a dead worker left open (the
``recording`` its call's record kept), finished and announced in the background
(``RecordingService.finish_left``)."""

ADOPT_OFFER_TIMEOUT = 30.0
"""Seconds an adopted call waits for a browser's new offer (``BRIDGE_ADOPT_OFFER_TIMEOUT``)."""


async def _never(engine_call_id: str) -> bool:
    return False


class Recovery:
    """Orphans and lost calls of one process (see the module docstring)."""

    def __init__(
        self,
        manager: CallManager,
        *,
        known_elsewhere: KnownElsewhere | None = None,
        adopt: Adopt | None = None,
        offer_timeout: float = ADOPT_OFFER_TIMEOUT,
        finish_recording: FinishRecording | None = None,
    ):
        """Without ``known_elsewhere`` (one process) every engine call no call here owns is
        an orphan; without ``adopt`` (one process, or ``BRIDGE_ADOPT_LOST_CALLS=false``)
        every lost call is ended."""
        self.manager = manager
        self.engine = manager.engine
        self._known_elsewhere = known_elsewhere or _never
        self._adopt = adopt
        self.offer_timeout = offer_timeout
        self._finish_recording = finish_recording
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
        await manager.admission.dials_settled(DIALS_SETTLE)
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
            if await self._known_elsewhere(remote.id):
                continue  # another worker's live call
            # Ours is read after the directory: a call handed over here meanwhile is in the
            # registry before the directory names this worker its owner (``adopt_call``).
            if manager.registry.by_engine_id(remote.id) is not None:
                continue
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
            async with asyncio.timeout(HANGUP_TIMEOUT):
                await self.engine.hangup(remote.id)
        except EngineCallNotFound:
            pass  # gone meanwhile
        except (EngineError, TimeoutError, ConnectionError) as exc:
            why = str(exc) or type(exc).__name__
            log.warning("engine call %s: orphan hang-up failed (%s); retrying", remote.id, why)
            self.engine.hangup_later(remote.id, f"orphan: {why}")

    # -- a dead worker's calls
    async def lost_call(self, call: Call, attachments: dict[str, Any] | None = None) -> None:
        """A call whose worker died (rebuilt from the shared directory by a survivor): carry
        it on here if its engine lets it move and this process has room, with the
        ``attachments`` its record kept (``{recording, forks, agents}``: re-opened as a
        handover's), else end it (:meth:`end_lost_call`)."""
        manager = self.manager
        if manager.registry.get(call.id) is not None or not call.live:
            return
        movable = can_move(manager, call)
        if self._adopt is None or not movable or manager.shutting_down:
            if not movable:
                manager.metrics.handovers.labels("crash", "cannot_move").inc()
            self._recording_left(call, attachments)
            await self.end_lost_call(call)
            return
        dead = call.owner
        try:
            moved = MovedCall.from_json(
                {
                    **(attachments or {}),
                    "call": call.snapshot(),
                    "engineCallID": call.engine_call_id,
                    "reason": "crash",
                    "statusCallback": call.status_callback,
                }
            )
        except BadRequest as exc:  # a record written by another version: the call alone
            log.warning(
                "call %s: its attachments are unreadable (%s); adopting the call without them",
                call.id,
                exc.message,
                extra={"call_id": call.id},
            )
            moved = MovedCall(
                snapshot=call.snapshot(),
                engine_call_id=call.engine_call_id,
                reason="crash",
                status_callback=call.status_callback,
            )

        def carried(runtime: CallRuntime) -> None:
            # Its engine media is open here: the browser is told now, while the forks and
            # agents re-open (a model's session set-up must not lengthen the caller's gap).
            ours = runtime.call
            ours.owner = dead  # announce_move says where it came from
            announce_move(manager, ours, manager.owner, "crash")
            manager.metrics.handovers.labels("crash", "moved").inc()
            log.warning(
                "call %s: adopted from dead worker %s; waiting up to %g s for its browser",
                call.id,
                dead,
                self.offer_timeout,
                extra={"call_id": call.id},
            )
            runtime.end_soon(self._unclaimed(ours), "no-browser", after=self.offer_timeout)

        try:
            await self._adopt(moved, carried)
        except NotOwner:
            return  # taken over by another worker since its record was read: its call now
        except BridgeError as exc:
            manager.metrics.handovers.labels("crash", "no_room").inc()
            log.warning(
                "call %s of dead worker %s not adopted (%s): ending it (worker_lost)",
                call.id,
                dead,
                exc.message,
                extra={"call_id": call.id},
            )
            self._recording_left(call, attachments)
            await self.end_lost_call(call)

    def _recording_left(self, call: Call, attachments: dict[str, Any] | None) -> None:
        """A lost call ended here: the recording segment its dead worker was writing is
        finished here (an adopted call's is by its adoption: ``RecordingService.resume``)."""
        recording = (attachments or {}).get("recording")
        if recording and self._finish_recording is not None:
            self._finish_recording(call, recording)

    def _unclaimed(self, call: Call) -> EndCall:
        """The end of an adopted call nobody came back to within the offer timeout: no
        browser offered, no fork or socket is attached (a recording alone does not count)."""

        async def end() -> None:
            runtime = self.manager.find_runtime(call.id)
            if runtime is None or not call.live:
                return
            others = any(a.kind != "recorder" for a in runtime.attachments.values())
            if runtime.participants.sessions or others:
                return
            self.manager.metrics.handovers.labels("crash", "no_browser").inc()
            log.warning(
                "call %s: no browser offered within %g s of its adoption: ending it (worker_lost)",
                call.id,
                self.offer_timeout,
                extra={"call_id": call.id},
            )
            call.end_detail = "worker_lost"
            await hang_up_quietly(self.manager.engine_of(call), call)
            await self.manager.end(call, EndReason.FAILED)

        return end

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
            engine = self.manager.engine_of(call)
            self._tasks.spawn(hang_up_quietly(engine, call), f"lost:{call.id}")

    async def end_local_calls_as_lost(self) -> None:
        """Another worker took this one for dead and ended its calls: end them here too —
        except a call a survivor adopted meanwhile (the directory names a live owner other
        than this worker): that call is the survivor's now, and this worker lets go of it
        without a word to the engine or the clients (hanging it up would end the adopted
        call)."""
        for call in self.manager.live_calls():
            if await self._known_elsewhere(call.engine_key):
                log.warning(
                    "call %s: carried on by another worker since this one was taken for dead; "
                    "letting go of it here",
                    call.id,
                    extra={"call_id": call.id},
                )
                await release_call(self.manager, call.id)
                continue
            call.end_detail = "worker_lost"
            await hang_up_quietly(self.manager.engine_of(call), call)
            await self.manager.end(call, EndReason.FAILED)
