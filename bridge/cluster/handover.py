"""Calls move to another worker instead of ending: at a deploy (a draining worker hands them
over) and after a crash (a survivor adopts a dead worker's calls).

**Drain** (SIGTERM with ``BRIDGE_SHUTDOWN_CALLS=handover``): the worker says in its heartbeat
that it takes no new calls, then hands each live call its engine can move to the least-loaded
other worker with room (``POST /call/handover`` there, with ``BRIDGE_INTERNAL_SECRET``). The
new owner claims the call in the directory and opens the engine media before it answers; only
then does the old worker emit ``call.moved {from, to, reason: "drain"}``, relay its browser
through the new owner's PCM stream of the call until the browser's new connection is up there
(make-before-break), and close its own media without hanging up. Calls that cannot move
(Cloud API: Meta's media session ends at this worker's address; a call with a trunk's phone on
it: the phone's SIP leg is this worker's) are served here until they end, at most
``BRIDGE_DRAIN_TIMEOUT`` (``staying.py``). With no other worker with room, the call is
treated as today (hung up at shutdown), with a WARNING.

**Crash**: the survivor that reaps a dead worker decides in its recovery
(``calls/recovery.py``, ``Recovery.lost_call``) whether a call is adopted or ended; an
adopted call is taken here exactly as a handed-over one (:meth:`Handover.adopt`), then
recovery emits ``call.moved {…, reason: "crash"}`` and waits ``BRIDGE_ADOPT_OFFER_TIMEOUT``
for a browser's new offer; a call nobody came back to ends ``failed``/``worker_lost`` as
before, and so does every call that cannot move. What the adopter re-opens — the recording
(its next segment), the media forks, the agents — is what the call's directory record held
when its owner died: every record of a live call carries its attachments as a handover would
(:meth:`Handover.attachments`, written with each event of the call).

An agent's ``apiKey``, and an agent's or a fork's URL that holds a query or credentials, leave
a worker only sealed (``sealing.py``: on the internal API of a drain and in the directory
record alike); an agent on the configured default key carries none, and the new owner uses its
own default.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from ..calls import Call, CallManager, CallRuntime
from ..calls.handover import MovedCall, ResumeRecording, adopt_call
from ..calls.hold import Music
from ..calls.letting_go import (
    OpenRelay,
    announce_move,
    can_move,
    export_attachments,
    export_call,
    hand_over_playbacks,
    relay_until_moved,
    release_call,
    standing_still,
)
from ..errors import BridgeError
from ..metrics import Metrics
from .directory import Directory, WorkerInfo
from .sealing import MovedSecrets, Sealer
from .staying import Staying

log = logging.getLogger(__name__)

MOVES_AT_ONCE = 8
"""Calls handed over concurrently by a draining worker (each opens a socket on the engine)."""

TARGETS_TRIED = 3
"""Workers a draining worker asks, least loaded first, before it gives a call up."""

Send = Callable[[WorkerInfo, MovedCall], Awaitable[tuple[int, str]]]
"""Sends a moved call to a worker: its HTTP status and body (``api/internal.py``)."""


class Recordings(Protocol):
    """What moving a call needs of the recordings (``attachments.RecordingService``)."""

    def export(self, recorder: Any) -> dict[str, Any]: ...
    async def resume(self, host: Any, moved: dict[str, Any], *, left_open: bool = False) -> Any:
        """Record on into the next segment (``left_open``: finish the one before, a crashed
        worker's, too)."""


class Forks(Protocol):
    """What moving a call needs of the media forks (``attachments.ForkService``)."""

    async def resume(self, host: Any, moved: dict[str, Any]) -> Any: ...


class Plays(Protocol):
    """What moving a call needs of the playbacks (``attachments.PlaybackService``): a held
    call's music started anew, an asset's playback played on."""

    async def start(self, host: Any, body: dict[str, Any]) -> Music: ...
    async def resume(self, host: Any, moved: dict[str, Any]) -> Any: ...


class Handover:
    """Moves this worker's calls away when it drains and takes calls moved here (handed over
    by a draining worker, or a dead worker's that recovery adopts). App-scoped; see the module
    docstring."""

    def __init__(
        self,
        manager: CallManager,
        directory: Directory,
        metrics: Metrics,
        send: Send,
        recordings: Recordings | None = None,
        forks: Forks | None = None,
        open_relay: OpenRelay | None = None,
        agents: Forks | None = None,
        sealer: Sealer | None = None,
        playback: Plays | None = None,
    ) -> None:
        """``sealer`` (from ``BRIDGE_INTERNAL_SECRET``) seals the agents' keys a moved call
        carries and its directory record keeps; without one they travel as given.
        ``playback`` plays a held call's music on (without, a call moved here is held in
        silence)."""
        self.manager = manager
        self.directory = directory
        self.metrics = metrics
        self._send = send
        self._recordings = recordings
        self._forks = forks
        self._agents = agents
        """Model agents open again like forks (``agents.AgentService.resume``)."""
        self._open_relay = open_relay
        self._secrets = MovedSecrets(sealer)
        self._playback = playback
        self._gaps: dict[str, tuple[float, str]] = {}
        """Calls moved here waiting for their browser: (move began, wall clock; reason)."""
        self.staying = Staying(manager)
        """The calls a drain keeps here until they end (those that cannot move)."""
        manager.events.listen(self._on_event)

    # -- the draining worker
    async def drain(self) -> None:
        """Hand every live call that can move to another worker (bounded concurrency); the
        others stay until they end (:attr:`staying`, :meth:`wait_unmovable`)."""
        await self.directory.drain()
        gate = asyncio.Semaphore(MOVES_AT_ONCE)
        tried: set[str] = set()

        async def one(call: Call) -> None:
            async with gate:
                await self.move(call, "drain")

        # Again while calls came in meanwhile (one moved here by a worker that drains too,
        # accepted just before this one stopped taking calls).
        while True:
            calls = [c for c in self.manager.live_calls() if c.id not in tried]
            if not calls:
                return
            tried.update(c.id for c in calls)
            movable = [c for c in calls if can_move(self.manager, c)]
            for call in calls:
                if call not in movable:
                    self._stays(call, "drain")
            if movable:
                log.info("draining: handing %d calls over to other workers", len(movable))
                await asyncio.gather(*(one(c) for c in movable), return_exceptions=True)

    async def move(self, call: Call, reason: str) -> bool:
        """Hand ``call`` to the least-loaded other worker with room; ``False`` when none
        took it (it stays here)."""
        runtime = self.manager.find_runtime(call.id)
        if runtime is None or not call.live:
            return False
        try:
            workers = await self.directory.workers()
        except BridgeError as exc:
            return self._kept(call, reason, "failed", f"the directory did not answer: {exc}")
        targets = [w for w in workers if w.has_room and w.id != self.directory.worker_id]
        targets.sort(key=lambda w: w.calls / w.max_calls)
        if not targets:
            return self._kept(
                call,
                reason,
                "no_room",
                "no other live worker has room (start another instance before the deploy, "
                "or raise BRIDGE_MAX_CALLS)",
            )
        # A desk route's run stands still from here: the state exported is the last it acts
        # on, and an accept landing meanwhile is acted on by whichever worker carries the call.
        async with standing_still(runtime):
            if not can_move(self.manager, call):  # a phone rang or answered meanwhile
                return self._stays(call, reason)
            return await self._hand_over(call, runtime, targets, reason)

    async def _hand_over(
        self, call: Call, runtime: CallRuntime, targets: list[WorkerInfo], reason: str
    ) -> bool:
        """Offer ``call`` to ``targets``, least loaded first, until one carries it on."""
        moved = self._secrets.seal(export_call(runtime, reason, self._export_recording))
        # Our queued writes about the call land before the new owner's (never after them).
        await self.directory.flush(2.0)
        why = ""
        for target in targets[:TARGETS_TRIED]:
            token = uuid.uuid4().hex
            try:
                await self.directory.offer_move(call.id, token)
                status, body = await self._send(target, replace(moved, token=token))
            except (OSError, TimeoutError, BridgeError) as exc:
                status, body = 0, str(exc) or type(exc).__name__
            # Over, whatever the answer: the offer goes now (a 201's too, not left to lapse).
            owner = await self._settle(call.id, token)
            if status != 201:
                if owner is None:
                    why = f"worker {target.id}: {status} {body[:200]}; the directory did not say"
                    break  # who won cannot be told: never a second target as well
                if owner == target.id:
                    status = 201  # it took the call over, its answer was lost: it carries it
                elif owner not in ("", self.directory.worker_id):
                    return await self._lost_to(call, owner, reason)
            if status == 201:
                if not call.live:  # it ended while it moved: the new owner finds out too
                    return True
                announce_move(self.manager, call, target.id, reason)
                hand_over_playbacks(runtime, [p["playbackId"] for p in moved.playbacks])
                if self._open_relay is not None:
                    await relay_until_moved(
                        runtime,
                        self._open_relay,
                        target.url,
                        target.id,
                        partial(self._browser_on, call.id, target.id),
                    )
                await release_call(self.manager, call.id)
                self.metrics.handovers.labels(reason, "moved").inc()
                log.info(
                    "call %s: moved to worker %s (%s)",
                    call.id,
                    target.id,
                    reason,
                    extra={"call_id": call.id},
                )
                return True
            why = f"worker {target.id}: {status} {body[:200]}"
        return self._kept(call, reason, "failed", why)

    async def _lost_to(self, call: Call, owner: str, reason: str) -> bool:
        """The directory names another worker the call's carrier (a survivor adopted it while
        this worker was taken for dead): this one lets go of it without a word to the engine,
        and offers it to nobody else."""
        log.warning(
            "call %s: worker %s carries it now, says the directory; letting go of it here",
            call.id,
            owner,
            extra={"call_id": call.id},
        )
        await release_call(self.manager, call.id)
        self.metrics.handovers.labels(reason, "moved").inc()
        return True

    async def _settle(self, call_id: str, token: str) -> str | None:
        """End the offer made to a target under ``token`` (compare-and-delete: it can take the
        call, or give it back, no more) and say who carries it: the record's owner (``""``:
        none, this worker carries it on); ``None`` when the directory did not answer."""
        try:
            return await self.directory.settle_move(call_id, token)
        except BridgeError:
            return None

    async def _browser_on(self, call_id: str, worker: str) -> bool:
        """Whether the call's browser is connected on ``worker`` (its record says so)."""
        try:
            record = await self.directory.record(call_id)
        except BridgeError:
            return False
        if record is None or record.owner != worker:
            return False
        webrtc = record.snapshot.get("webrtc") or {}
        return bool(webrtc.get("state") == "connected")

    def _stays(self, call: Call, reason: str) -> bool:
        """``call`` cannot move (``can_move``): it is served here until it ends."""
        self.metrics.handovers.labels(reason, "cannot_move").inc()
        self.staying.keep(call)
        return False

    def _kept(self, call: Call, reason: str, outcome: str, why: str) -> bool:
        self.metrics.handovers.labels(reason, outcome).inc()
        log.warning(
            "call %s: not handed over (%s); it is %s here as without handover",
            call.id,
            why,
            "hung up at shutdown",
            extra={"call_id": call.id},
        )
        return False

    async def wait_unmovable(self) -> None:
        """Serve the calls that cannot move until they end, at most ``BRIDGE_DRAIN_TIMEOUT``
        (``staying.py``; calls that could move but found no worker are hung up at shutdown)."""
        await self.staying.wait()

    def _export_recording(self, runtime: CallRuntime) -> dict[str, Any] | None:
        recorders = runtime.attached("recorder")
        if not recorders or self._recordings is None:
            return None
        return self._recordings.export(recorders[0])

    def attachments(self, call: Call) -> dict[str, Any] | None:
        """What a survivor re-opens of ``call`` if this worker dies (its directory record's
        ``attachments``: the recording, the forks, the agents, their secrets sealed);
        ``None`` when it has none."""
        runtime = self.manager.find_runtime(call.id)
        if runtime is None:
            return None
        parts = export_attachments(runtime, self._export_recording)
        if not any(parts.values()):
            return None
        return self._secrets.seal_parts(call.id, parts)

    # -- the worker a call moves to
    async def adopt(
        self, moved: MovedCall, carried: Callable[[CallRuntime], None] | None = None
    ) -> Call:
        """Carry on a call another worker hands over (``POST /call/handover``) or a dead
        worker's call that recovery adopts (``carried``: ``adopt_call``'s)."""
        moved = self._secrets.open(moved)
        resume: ResumeRecording | None = None
        if self._recordings is not None:
            # After a crash the dead worker's segment was never finished: this worker does.
            resume = partial(self._recordings.resume, left_open=carried is not None)

        def here(runtime: CallRuntime) -> None:
            # The gap is measured from now on: a crash's call.moved (``carried``) may bring
            # the browser back before the forks and agents are open again.
            self._gaps[runtime.call_id] = (moved.moved_at, moved.reason)
            if carried is not None:
                carried(runtime)

        own_offer = ""
        if carried is not None and not moved.token:
            # A crash adoption takes the record under an offer it makes for the dead worker,
            # so that one failing (or let go of) after its take-over gives the record back: it
            # names the dead worker again, in its set, for this reap or the next survivor's.
            own_offer = uuid.uuid4().hex
            await self.directory.offer_move(moved.call_id, own_offer)
            moved = replace(moved, token=own_offer)
        try:
            # A handover (no ``carried``) has its forks and agents open again before it
            # answers: the old worker lets go of its own on that answer (make-before-break).
            runtime = await adopt_call(
                self.manager,
                moved,
                self.directory,
                resume,
                self._forks.resume if self._forks is not None else None,
                self._agents.resume if self._agents is not None else None,
                here if carried is not None else None,
                self._play_music if self._playback is not None else None,
                self._playback.resume if self._playback is not None else None,
            )
        finally:
            if own_offer:  # over: taken for good, or given back
                await self._settle(moved.call_id, own_offer)
        if carried is None:
            here(runtime)  # its browser offers here once the old worker has the answer
        return runtime.call

    async def _play_music(self, runtime: CallRuntime, asset: str) -> None:
        """A held call moved here: its music loops on, as ``POST /call/hold`` started it."""
        playback = self._playback
        assert playback is not None

        async def start() -> Music:
            return await playback.start(runtime, {"assetId": asset, "loop": True})

        await runtime.hold.set(True, start)

    # -- the audio gap
    def _on_event(self, type_: str, call: Call) -> None:
        if type_ == "call.ended":  # before a browser came back (an adopted call's timeout)
            self._gaps.pop(call.id, None)
            return
        if type_ != "webrtc.state" or call.webrtc_state != "connected":
            return
        began = self._gaps.pop(call.id, None)
        if began is not None:
            self.metrics.handover_gap.labels(began[1]).observe(max(0.0, time.time() - began[0]))
