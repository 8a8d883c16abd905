"""``CallManager``: call control and engine events.

The manager decides what happens to calls — make, answer, hang up, mute, accept a browser's
offer, end on a time limit or an engine event — and keeps the registry. Everything a live
call *has* (bus, WebRTC session, engine media, attachments) belongs to its
:class:`~bridge.calls.runtime.CallRuntime`, which the manager creates with the call and
closes when it ends.

(Over 400 lines on purpose: call control and engine events drive one state machine, and
reading them side by side is what keeps its transitions honest.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import CallSettings, OrphanCalls, ShutdownCalls
from ..engines import Engine, EngineEvent, EngineEventKind, RemoteCall
from ..errors import (
    AtCapacity,
    BadOffer,
    CallNotFound,
    CallStateError,
    EngineCallNotFound,
    EngineError,
    EngineUnavailable,
    ShuttingDown,
)
from ..media import Role
from ..metrics import Metrics
from ..rtc import SessionFactory
from ..rtc.sdp import validate_offer
from ..tasks import TaskSet
from .events import CallEvents
from .model import Call, CallState, Direction, EndReason, default_owner, normalize_phone
from .quality import media_totals, sample_quality_forever
from .registry import CallRegistry, InMemoryCallRegistry
from .runtime import CallRuntime
from .watchdog import watch_forever

log = logging.getLogger(__name__)

MEDIA_LOST_GRACE = 2.0
"""Seconds to wait, after the engine media closed for good, for the engine's own report of
the call's end (so the end reason stays accurate) before failing the call."""

ORPHAN_RECHECK = 3.0
"""Seconds a worker sharing a directory waits before it takes an unowned engine call for an
orphan (another worker's dial may not be recorded yet)."""

HANGUP_TIMEOUT = 2.0
"""Seconds the bridge waits for the engine to take a hang-up it decided itself (time limits,
lost media, shutdown, orphans); past it the hang-up is retried in the background."""


def _offer_result(exc: BaseException) -> str:
    """A bounded label for a failed offer."""
    if isinstance(exc, BadOffer):
        return "bad_offer"
    if isinstance(exc, CallNotFound):
        return "not_found"
    if isinstance(exc, CallStateError):
        return "conflict"
    if isinstance(exc, AtCapacity | ShuttingDown):
        return "capacity"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


class CallManager:
    """Runs calls: call control, engine events, time limits. See the module docstring."""

    def __init__(
        self,
        settings: CallSettings,
        engine: Engine,
        metrics: Metrics,
        sessions: SessionFactory,
        *,
        registry: CallRegistry | None = None,
        claim_inbound: Callable[[str], Awaitable[bool]] | None = None,
        known_elsewhere: Callable[[str], Awaitable[bool]] | None = None,
        place_inbound: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> None:
        """``claim_inbound(engine call id)`` says whether this process creates the call for a
        newly seen inbound engine call (one worker of several does); ``known_elsewhere``
        whether another live worker carries an engine call (so it is no orphan);
        ``place_inbound(engine call id, peer)`` whether a less loaded worker took a new inbound
        call this process claimed."""
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.sessions = sessions
        self.registry: CallRegistry = registry or InMemoryCallRegistry(settings.ended_call_ttl)
        self.events = CallEvents()
        self.owner = default_owner()
        self._claim_inbound = claim_inbound or _always
        self._known_elsewhere = known_elsewhere or _never
        self._place_inbound = place_inbound or _stay
        self._runtimes: dict[str, CallRuntime] = {}
        self._dialling = 0  # dials in flight hold a capacity slot
        self._dials_idle = asyncio.Event()  # set while no dial is in flight
        self._dials_idle.set()
        self._ending: set[str] = set()  # calls being ended by the bridge
        self._tasks = TaskSet("calls")
        self.shutting_down = False
        metrics.attach_media(lambda: media_totals(metrics, self._runtimes.values()), self._engine)
        metrics.sessions_active.set_function(self._live_sessions)
        metrics.calls_max.set(settings.max_calls)

    # -- lifecycle
    async def start(self) -> None:
        self._tasks.spawn(self._consume_engine_events(), "engine-events")
        self._tasks.spawn(self._sweep_loop(), "sweeper")
        self._tasks.spawn(
            sample_quality_forever(
                self.metrics, self._runtimes.values, self.settings.stats_interval
            ),
            "quality",
        )
        self._tasks.spawn(
            watch_forever(self.settings, self._runtimes.values, self._end_by_bridge), "watchdog"
        )
        self._tasks.spawn(self._sweep_orphans(), "orphans")

    def stop_accepting(self) -> None:
        """Refuse new calls and end the event streams (first step of a shutdown)."""
        self.shutting_down = True
        self.events.close()

    async def close(self) -> None:
        """End every live call (hang up, or leave it up for handover), stop every task."""
        self.shutting_down = True
        results = await asyncio.gather(
            *(self._shutdown_call(c) for c in self.registry.live()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.error("ending a call at shutdown", exc_info=result)
        await self._tasks.close()
        self.events.close()

    async def _shutdown_call(self, call: Call) -> None:
        if self.settings.shutdown_calls is ShutdownCalls.KEEP:
            await self._end(call, EndReason.HANDOVER)
            return
        await self._hangup_quietly(call)
        await self._end(call, EndReason.SHUTDOWN)

    async def _hangup_quietly(self, call: Call) -> None:
        try:
            await asyncio.wait_for(self.engine.hangup(call.engine_call_id), HANGUP_TIMEOUT)
        except EngineCallNotFound:
            log.info("call %s: engine no longer knew it", call.id, extra={"call_id": call.id})
        except (EngineError, TimeoutError, ConnectionError) as exc:
            self._hangup_later(call, exc)

    def _hangup_later(self, call: Call, exc: BaseException) -> None:
        """The engine did not take our hang-up: the engine layer retries it once it is back."""
        why = str(exc) or type(exc).__name__
        log.warning(
            "call %s: could not hang up engine call %s (%s); retrying until the engine is back",
            call.id,
            call.engine_call_id,
            why,
            extra={"call_id": call.id},
        )
        self.engine.hangup_later(call.engine_call_id, why)

    async def _sweep_orphans(self) -> None:
        """Once the engine first lists its calls, hang up those no live call here owns.

        Orphans are answered calls and outbound calls (a bridge that died dialled or carried
        them); a ringing inbound call is a new call, offered like any other, not an orphan.
        """
        listed = await self.engine.startup_calls()
        # A dial in flight may be in the listing before it is ours: let those dials finish.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._dials_idle.wait(), 10.0)
        candidates = [
            remote
            for remote in listed
            if not remote.ended
            and not remote.ringing_inbound
            and self.registry.by_engine_id(remote.id) is None  # no live call of ours owns it
        ]
        if candidates and self._known_elsewhere is not _never:
            # Another worker may be dialling one right now: its record reaches the directory
            # a moment after the engine lists the call.
            await asyncio.sleep(ORPHAN_RECHECK)
        for remote in candidates:
            if self.registry.by_engine_id(remote.id) is not None:
                continue
            if await self._known_elsewhere(remote.id):
                continue  # another worker's live call
            await self._orphan(remote)

    async def _orphan(self, remote: RemoteCall) -> None:
        what = (
            f"{remote.state} {remote.direction or '?'} call {remote.id} with {remote.peer or '?'}"
        )
        if self.settings.orphan_calls is OrphanCalls.KEEP:
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

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.registry.sweep()

    # -- queries
    def get(self, call_id: str) -> Call:
        call = self.registry.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            raise CallNotFound(f"no call {str(call_id)[:64]!r}")
        return call

    def live_calls(self) -> list[Call]:
        return self.registry.live()

    def runtime(self, call_id: str) -> CallRuntime:
        """The runtime of a live call: 404 for an unknown call, 409 for an ended one."""
        call = self.get(call_id)
        runtime = self._runtimes.get(call.id)
        if runtime is None or not call.live:
            raise CallStateError(f"call {call.id} has ended")
        return runtime

    def find_runtime(self, call_id: str) -> CallRuntime | None:
        """The runtime of a live call, or ``None`` (tests and diagnostics)."""
        return self._runtimes.get(call_id)

    def check_capacity(self) -> None:
        if self.shutting_down:
            raise ShuttingDown("the bridge is shutting down")
        if len(self.registry.live()) + self._dialling >= self.settings.max_calls:
            raise AtCapacity(f"the bridge carries its maximum of {self.settings.max_calls} calls")

    def stats(self, call_id: str) -> dict[str, Any]:
        """One call's numbers as JSON (for support cases; kept after the call ended)."""
        call = self.get(call_id)
        runtime = self._runtimes.get(call.id)
        if runtime is None:
            return call.final_stats or {"callID": call.id, "state": str(call.state)}
        return runtime.stats_json()

    # -- call control
    async def make(
        self,
        phone: str,
        metadata: dict[str, Any] | None = None,
        *,
        status_callback: str | None = None,
    ) -> Call:
        """Dial ``phone``. ``status_callback`` (already checked by the caller) receives the
        call's events instead of ``BRIDGE_WEBHOOK_URL``."""
        digits = normalize_phone(phone)
        self.check_capacity()
        call_id = uuid.uuid4().hex
        self._dialling += 1
        self._dials_idle.clear()
        try:
            engine_id = await self.engine.dial(digits, call_id=call_id)
        finally:
            self._dialling -= 1
            if not self._dialling:
                self._dials_idle.set()
        call = Call(
            id=call_id,
            peer=f"{digits}@s.whatsapp.net",
            direction=Direction.OUTBOUND,
            owner=self.owner,
            engine_call_id=engine_id,
            state=CallState.CALLING,
            metadata=metadata or {},
            status_callback=status_callback,
        )
        if self.shutting_down:
            await self._hangup_quietly(call)
            raise ShuttingDown("the bridge is shutting down")
        self._add(call)
        log.info(
            "call %s: dialled %s (engine id %s)",
            call.id,
            call.peer,
            engine_id,
            extra={"call_id": call.id},
        )
        return call

    def _add(self, call: Call) -> None:
        self.registry.add(call)
        self.metrics.calls_started.labels(str(call.direction)).inc()
        self._runtimes[call.id] = CallRuntime(
            call, self.engine, self.events, self.metrics, self._media_lost
        )
        self._count_active()
        self.events.publish("call.created", call)

    async def answer(self, call_id: str, *, status_callback: str | None = None) -> Call:
        """Answer a ringing inbound call; ``status_callback`` (already checked) receives its
        events from now on."""
        call = self.get(call_id)
        if call.direction is not Direction.INBOUND or call.state is not CallState.RINGING:
            raise CallStateError(
                f"call {call.id} is {call.direction} and {call.state}; only a ringing inbound "
                "call can be answered"
            )
        if status_callback is not None:
            call.status_callback = status_callback
        await self.engine.answer(call.engine_call_id)
        if call.state is CallState.RINGING:
            self._activate(call)
        return call

    async def hangup(self, call_id: str) -> Call:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has already ended ({call.end_reason})")
        try:
            await self.engine.hangup(call.engine_call_id)
        except EngineCallNotFound:
            log.info("call %s: engine no longer knew it", call.id, extra={"call_id": call.id})
        except (EngineUnavailable, TimeoutError, ConnectionError) as exc:
            # The user wants out: the call ends here now, the engine's side once it is back.
            self._hangup_later(call, exc)
        if not call.live:
            return call
        if call.state is CallState.ACTIVE:
            reason = EndReason.HANGUP
        elif call.direction is Direction.INBOUND:
            reason = EndReason.DECLINED
        else:
            reason = EndReason.CANCELED
        await self._end(call, reason)
        return call

    def set_muted(self, call_id: str, muted: bool) -> Call:
        runtime = self.runtime(call_id)
        call = runtime.call
        call.muted = muted
        runtime.bus.muted = muted
        self.events.publish("call.muted" if muted else "call.unmuted", call)
        return call

    # -- the browser's WebRTC leg
    async def webrtc_offer(
        self, call_id: str, sdp: str, participant_id: str = "agent", role: Role = Role.AGENT
    ) -> str:
        """Answer a browser's offer for a call, replacing that participant's previous peer
        connection."""
        started = time.monotonic()
        try:
            answer = await self._webrtc_offer(call_id, sdp, participant_id, role)
        except BaseException as exc:
            self.metrics.offers.labels(_offer_result(exc)).inc()
            raise
        self.metrics.offers.labels("answered").inc()
        self.metrics.offer_to_answer.observe(time.monotonic() - started)
        return answer

    async def _webrtc_offer(self, call_id: str, sdp: str, participant_id: str, role: Role) -> str:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has ended; start a new call")
        validate_offer(sdp)  # before any socket or peer connection exists
        runtime = self.runtime(call.id)
        runtime.check_join(participant_id, role, self.settings.max_participants)
        if not runtime.sessions:
            if self.shutting_down:
                raise ShuttingDown("the bridge is shutting down")
            sessions = sum(1 for r in self._runtimes.values() if r.sessions)
            if sessions >= self.settings.max_calls:
                raise AtCapacity("the bridge carries its maximum of WebRTC sessions")
        session = await self.sessions.create(
            call.id,
            runtime.bus,
            runtime.on_session_state,
            participant_id=participant_id,
            role=role,
            on_dtmf=runtime.on_session_dtmf,
        )
        return await runtime.replace_session(session, sdp)

    async def webrtc_close(self, call_id: str, participant_id: str = "agent") -> Call:
        """Close a participant's peer connection if any (idempotent); the WhatsApp call stays
        up."""
        call = self.get(call_id)
        runtime = self._runtimes.get(call.id)
        if runtime is not None:
            await runtime.close_session(participant_id)
        return call

    # -- contact-centre control
    def set_role(self, call_id: str, participant_id: str, role: Role) -> Call:
        runtime = self.runtime(call_id)
        runtime.set_role(participant_id, role)
        return runtime.call

    async def transfer(self, call_id: str, to: str) -> Call:
        runtime = self.runtime(call_id)
        await runtime.transfer(to)
        return runtime.call

    # -- engine events
    async def _consume_engine_events(self) -> None:
        while True:
            event = await self.engine.events.get()
            try:
                await self._on_engine_event(event)
            except Exception:
                log.exception("handling engine event %s", event)

    async def _on_engine_event(self, event: EngineEvent) -> None:
        if event.kind is EngineEventKind.INCOMING:
            await self._incoming(event)
            return
        call = self.registry.by_engine_id(event.engine_call_id)
        if call is None:
            log.debug("engine event for an unknown or ended call: %s", event)
            return
        if event.kind is EngineEventKind.DTMF:
            if call.live:
                self.metrics.dtmf.labels("received", "whatsapp").inc()
                self.events.publish("call.dtmf", call, **{**event.data, "source": "whatsapp"})
            return
        if event.kind is EngineEventKind.RINGING and call.state is CallState.CALLING:
            self._ring(call)
        elif event.kind is EngineEventKind.ANSWERED and call.state in (
            CallState.CALLING,
            CallState.RINGING,
        ):
            self._activate(call)
        elif event.kind is EngineEventKind.ENDED:
            if call.state is CallState.ACTIVE:
                reason = EndReason.REMOTE_HANGUP
            elif call.direction is Direction.INBOUND:
                reason = EndReason.REMOTE_CANCELED
            else:
                reason = EndReason.REJECTED
            if event.reason in EndReason.__members__.values():
                reason = EndReason(event.reason)
            await self._end(call, reason, **dict(event.data))

    async def _incoming(self, event: EngineEvent) -> None:
        if self.registry.by_engine_id(event.engine_call_id) is not None:
            return  # already known (a webhook and a poll can both report it)
        if not await self._claim_inbound(event.engine_call_id):
            return  # another worker polled the same engine first and took it
        if await self._place_inbound(event.engine_call_id, event.peer or "unknown"):
            return  # a less loaded worker took it
        await self._ring_inbound(event.engine_call_id, event.peer or "unknown")

    async def adopt_inbound(self, engine_call_id: str, peer: str) -> Call:
        """Take a new inbound call another worker discovered and placed here (at capacity:
        :class:`AtCapacity`, and the placing worker rings it itself)."""
        known = self.registry.by_engine_id(engine_call_id)
        if known is not None:
            return known
        self.check_capacity()
        return await self._ring_inbound(engine_call_id, peer)

    async def _ring_inbound(self, engine_call_id: str, peer: str) -> Call:
        call = Call(
            id=uuid.uuid4().hex,
            peer=peer,
            direction=Direction.INBOUND,
            owner=self.owner,
            engine_call_id=engine_call_id,
            state=CallState.RINGING,
        )
        try:
            self.check_capacity()
        except (AtCapacity, ShuttingDown) as exc:
            log.warning("declining inbound call from %s: %s", peer, exc.message)
            await self._hangup_quietly(call)
            if isinstance(exc, AtCapacity):
                # Keep a record, so operators see the calls capacity turned away.
                call.transition(CallState.ENDED, EndReason.BUSY)
                self.registry.add(call)
                self.registry.ended(call)
                self.metrics.calls_ended.labels(str(call.direction), "busy").inc()
                self.events.publish("call.ended", call)
            return call
        self._add(call)
        log.info("call %s: inbound from %s is ringing", call.id, peer, extra={"call_id": call.id})
        self.events.publish("call.ringing", call)
        return call

    def _ring(self, call: Call) -> None:
        call.transition(CallState.RINGING)
        self.events.publish("call.ringing", call)
        runtime = self._runtimes.get(call.id)
        if runtime is not None:
            runtime.state_changed()

    def _activate(self, call: Call) -> None:
        call.transition(CallState.ACTIVE)
        log.info("call %s: active", call.id, extra={"call_id": call.id})
        self.events.publish("call.active", call)
        runtime = self._runtimes.get(call.id)
        if runtime is not None:
            runtime.state_changed()
            runtime.wake_engine_media()

    # -- ending
    async def end_lost_call(self, call: Call) -> None:
        """End a call whose worker died (rebuilt from the shared directory by a survivor):
        hang up on the engine where it allows it, end it ``failed``/``worker_lost``, emit."""
        if self.registry.get(call.id) is not None or not call.live:
            return
        call.transition(CallState.ENDED, EndReason.FAILED)
        call.end_detail = "worker_lost"
        self.metrics.calls_ended.labels(str(call.direction), str(EndReason.FAILED)).inc()
        log.warning(
            "call %s: ended (failed, worker_lost: worker %s died)",
            call.id,
            call.owner,
            extra={"call_id": call.id},
        )
        self.events.publish("call.ended", call)
        # The event first, the engine after (a dead worker may have had many calls, and each
        # hang-up may wait for HANGUP_TIMEOUT).
        if not self._tasks.closed:
            self._tasks.spawn(self._hangup_quietly(call), f"lost:{call.id}")

    async def end_local_calls_as_lost(self) -> None:
        """Another worker took this one for dead and ended its calls: end them here too."""
        for call in self.registry.live():
            call.end_detail = "worker_lost"
            await self._hangup_quietly(call)
            await self._end(call, EndReason.FAILED)

    def _media_lost(self, runtime: CallRuntime, exc: BaseException | None) -> None:
        """The engine media ended for good (after any reconnects the channel made)."""
        if runtime.call.live and not self.shutting_down and not self._tasks.closed:
            self._tasks.spawn(
                self._fail_without_media(runtime.call), f"media-lost:{runtime.call_id}"
            )

    async def _fail_without_media(self, call: Call) -> None:
        await asyncio.sleep(MEDIA_LOST_GRACE)
        if not call.live:
            return
        log.warning(
            "call %s: engine media lost for good, hanging up", call.id, extra={"call_id": call.id}
        )
        await self._hangup_quietly(call)
        await self._end(call, EndReason.FAILED)

    def _end_by_bridge(self, call: Call, reason: EndReason) -> None:
        """A time limit ran out: hang up on the engine and end the call (once)."""
        if call.id in self._ending or not call.live or self._tasks.closed:
            return
        self._ending.add(call.id)

        async def end() -> None:
            try:
                log.info("call %s: ending (%s)", call.id, reason, extra={"call_id": call.id})
                await self._hangup_quietly(call)
                await self._end(call, reason)
            finally:
                self._ending.discard(call.id)

        self._tasks.spawn(end(), f"limit:{call.id}")

    async def _end(self, call: Call, reason: EndReason, **data: Any) -> None:
        if not call.live:
            return
        call.transition(CallState.ENDED, reason)
        self.registry.ended(call)
        log.info("call %s: ended (%s)", call.id, reason, extra={"call_id": call.id})
        runtime = self._runtimes.pop(call.id, None)
        if runtime is not None:
            runtime.retire_counters()
        self.metrics.calls_ended.labels(str(call.direction), str(reason)).inc()
        if call.answered_at is not None and call.ended_at is not None:
            self.metrics.call_duration.observe(call.ended_at - call.answered_at)
        self._count_active()
        try:
            if runtime is not None:
                # Teardown runs to completion even if the caller is cancelled meanwhile.
                await asyncio.shield(runtime.close())
                call.final_stats = runtime.final_stats
        finally:
            self.events.publish("call.ended", call, **data)

    # -- handover: calls/handover.py moves live calls between workers through these two hooks
    def adopt_moved(self, call: Call) -> CallRuntime:
        """Carry on a live call another worker handed over or left behind (not a new call:
        no ``call.created``, not counted as started); its runtime is returned to be filled."""
        self.check_capacity()
        self.registry.add(call)
        runtime = CallRuntime(call, self.engine, self.events, self.metrics, self._media_lost)
        self._runtimes[call.id] = runtime
        self._count_active()
        return runtime

    def release_moved(self, call_id: str) -> CallRuntime | None:
        """Forget a live call another worker carries on now, without ending it; its runtime
        (returned) is the caller's to close without hanging up."""
        call = self.registry.get(call_id)
        runtime = self._runtimes.pop(call_id, None)
        if call is not None:
            self.registry.forget(call)
        if runtime is not None:
            runtime.retire_counters()
        self._count_active()
        return runtime

    # -- metrics
    def _count_active(self) -> None:
        live = self.registry.live()
        for direction in Direction:
            count = sum(1 for c in live if c.direction is direction)
            self.metrics.calls_active.labels(str(direction)).set(count)

    def _live_sessions(self) -> int:
        return sum(
            1
            for r in self._runtimes.values()
            for s in r.sessions.values()
            if s.state not in ("closed", "failed")
        )

    def _engine(self) -> tuple[str, Any, bool]:
        return self.engine.name, self.engine.stats, self.engine.up


async def _always(engine_call_id: str) -> bool:
    return True


async def _never(engine_call_id: str) -> bool:
    return False


async def _stay(engine_call_id: str, peer: str) -> bool:
    return False
