"""``CallManager``: the calls' state machine — call control and engine events.

The manager decides what happens to calls — make, answer, hang up, accept a browser's offer,
ring, activate, end on a time limit, lost media or an engine event — and keeps the registry
and the live runtimes. Everything a live call *has* (bus, WebRTC session, engine media,
attachments, mute and hold, the task that ends it) belongs to its
:class:`~bridge.calls.runtime.CallRuntime`, which the manager creates with the call and
closes when it ends.

Two policies sit beside it and drive it through :meth:`CallManager.add`,
:meth:`CallManager.end` and :meth:`CallManager.record_end`: who takes a new inbound call
(:mod:`.inbound`, which the manager hands the engine's ``INCOMING`` events) and the calls
nobody here owns any more (:mod:`.recovery`: orphans at start-up, a dead worker's calls).
A live call moving between workers (:mod:`.handover`) comes in through
:meth:`CallManager.adopt_moved` and leaves through :meth:`CallManager.release_moved`: taken
in or let go without ``call.created`` or ``call.ended``, since it neither starts nor ends.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import CallSettings, ShutdownCalls
from ..engines import BilledEngine, Engine, EngineEvent
from ..errors import (
    CallNotFound,
    CallStateError,
    ShuttingDown,
)
from ..metrics import Metrics
from ..numbers.model import DEFAULT_NUMBER, Number
from ..numbers.switchboard import Switchboard
from ..numbers.tenants import Tenant
from ..rtc import SessionFactory
from ..tasks import TaskSet
from .admission import Admission
from .answering import answer
from .artifacts import ArtifactSink
from .endings import Endings
from .engine_events import EngineEvents
from .events import CallEvents
from .hangup import hang_up_quietly
from .live import LiveRuntimes
from .live_report import OpenReport
from .model import Call, CallState, Direction, EndReason, default_owner, normalize_user
from .quality import (
    count_active,
    count_ended,
    count_started,
    live_sessions,
    media_totals,
)
from .registry import CallRegistry, InMemoryCallRegistry, sweep_forever
from .runtime import CallRuntime
from .teardowns import Teardowns

log = logging.getLogger(__name__)

IncomingCalls = Callable[[EngineEvent], Awaitable[None]]
"""Who takes a new inbound call the engine reports (``InboundCalls.incoming``)."""


class CallManager:
    """Runs calls: call control, engine events, time limits. See the module docstring."""

    def __init__(
        self,
        settings: CallSettings,
        engine: Engine | Switchboard,
        metrics: Metrics,
        sessions: SessionFactory,
        *,
        registry: CallRegistry | None = None,
        events: CallEvents | None = None,
    ) -> None:
        """``registry`` and ``events`` may be made first (the app's directory reads the one
        and observes the other before the manager exists)."""
        self.settings = settings
        # Every number's engine behind one face (a lone engine: the default number's alone).
        self.engine = engine if isinstance(engine, Switchboard) else Switchboard(engine)
        self.engine.engines_in_use = self.engines_in_use
        self.metrics = metrics
        self.sessions = sessions
        self.registry: CallRegistry = registry or InMemoryCallRegistry(settings.ended_call_ttl)
        self.events = events or CallEvents()
        self.owner = default_owner()
        self.incoming: IncomingCalls | None = None
        self.artifacts: ArtifactSink | None = None  # a provider's recordings (resources)
        self.open_report: OpenReport | None = None  # each runtime's report (call reports on)
        self._runtimes = LiveRuntimes()
        self.until_calls = self._runtimes.until_calls
        """Returns once this worker has a live call: an idle worker's samplers wait on it."""
        self.admission = Admission(settings.max_calls, self.registry.live)
        self._tasks = TaskSet("calls")
        self._teardowns = Teardowns(self.events)
        self.endings = Endings(self)
        self.shutting_down = False
        metrics.attach_media(
            lambda: media_totals(metrics, self._runtimes.values()),
            lambda: (self.engine.name, self.engine.stats, self.engine.up),
        )
        metrics.sessions_active.set_function(lambda: live_sessions(self._runtimes.values()))
        metrics.calls_max.set(settings.max_calls)

    # -- lifecycle
    def take_incoming(self, incoming: IncomingCalls) -> None:
        """Hand the engine's ``INCOMING`` events to ``incoming`` (the inbound policy,
        :class:`~.inbound.InboundCalls`, registers itself; without one they are ignored)."""
        self.incoming = incoming

    async def start(self) -> None:
        events = EngineEvents(self)
        self._tasks.spawn(events.consume_forever(), "engine-events")
        self._tasks.spawn(events.take_arrivals_forever(), "engine-arrivals")
        self._tasks.spawn(sweep_forever(self.registry), "sweeper")
        self._runtimes.watch(self._tasks, self.settings, self.metrics, self.endings.time_limit)

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
        await self._teardowns.close()  # those under way finish, their call.ended out
        await self._tasks.close()
        if self.artifacts is not None:
            await self.artifacts.close()
        self.events.close()

    async def _shutdown_call(self, call: Call) -> None:
        if self.settings.shutdown_calls is ShutdownCalls.KEEP:
            await self.end(call, EndReason.HANDOVER)
            return
        await hang_up_quietly(self.engine_of(call), call)
        await self.end(call, EndReason.SHUTDOWN)

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

    def live_runtimes(self) -> list[CallRuntime]:
        return list(self._runtimes.values())

    def find_runtime(self, call_id: str) -> CallRuntime | None:
        """The runtime of a live call, or ``None`` (an ended call has none)."""
        return self._runtimes.get(call_id)

    def engine_of(self, call: Call) -> Engine:
        """The engine the call runs on: the one its runtime started on (its number's engine
        rebuilt since, the call stays on the old one until it ends), else its number's."""
        runtime = self._runtimes.get(call.id)
        return runtime.engine if runtime is not None else self.engine.of(call.number_id)

    def engines_in_use(self) -> list[Engine]:
        """The engines live calls here run on (a deleted or rebuilt number's engine waits for
        its calls)."""
        return [runtime.engine for runtime in self._runtimes.values()]

    def check_capacity(self, tenant: Tenant | None = None) -> None:
        """Room for one more call (:class:`~.admission.Admission`)."""
        self.admission.shutting_down = self.shutting_down
        self.admission.check(tenant)

    async def admit(self, tenant: Tenant | None) -> None:
        """Room for one more call of ``tenant``, its calls on other workers counted."""
        self.admission.shutting_down = self.shutting_down
        await self.admission.admit(tenant)

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
        number: Number | None = None,
        tenant: Tenant | None = None,
        other_leg: tuple[str, ...] = (),
    ) -> Call:
        """Dial ``phone`` from ``number`` (the default number without one).
        ``status_callback`` (already checked by the caller) receives the call's events
        instead of ``BRIDGE_WEBHOOK_URL``; ``tenant``'s ``maxCalls`` caps its live calls;
        ``other_leg``: the codecs of the leg it is placed for (a PBX phone's)."""
        digits = normalize_user(phone)  # or the BSUID the API let through
        number_id = number.number_id if number is not None else DEFAULT_NUMBER
        engine = self.engine.engine(number_id)
        await self.admit(tenant)  # nothing awaited from here until the dial holds its place
        call_id = uuid.uuid4().hex
        with self.admission.dialling(number.tenant_id if number is not None else ""):
            engine_id = await self.engine.dial_from(number_id, digits, call_id, other_leg)
        call = Call(
            id=call_id,
            peer=f"{digits}@s.whatsapp.net",
            direction=Direction.OUTBOUND,
            owner=self.owner,
            engine_call_id=engine_id,
            state=CallState.CALLING,
            metadata=metadata or {},
            status_callback=status_callback,
            pulse_s=engine.billing_pulse_s if isinstance(engine, BilledEngine) else None,
            number_id=number_id,
            tenant_id=number.tenant_id if number is not None else "",
        )
        if self.shutting_down:
            await hang_up_quietly(engine, call)
            raise ShuttingDown("the bridge is shutting down")
        self.add(call)
        log.info(
            "call %s: dialled %s (engine id %s)",
            call.id,
            call.peer,
            engine_id,
            extra={"call_id": call.id},
        )
        return call

    def add(self, call: Call) -> None:
        """Take a new call into the live set: registered, its runtime created,
        ``call.created`` published."""
        count_started(self.metrics, call)
        self._take_in(call)
        self.events.publish("call.created", call)

    def _take_in(self, call: Call) -> CallRuntime:
        self.registry.add(call)
        self.engine.bind(call.engine_call_id, call.number_id)
        engine, media_lost = self.engine_of(call), self.endings.media_lost
        runtime = CallRuntime(call, engine, self.events, self.metrics, media_lost, self.open_report)
        self._runtimes.add(runtime)
        count_active(self.metrics, self.registry.live())
        return runtime

    async def answer(self, call_id: str, *, status_callback: str | None = None) -> Call:
        """Answer a ringing inbound call (:func:`.answering.answer`); ``status_callback``
        (already checked) receives its events from now on."""
        return await answer(self, call_id, status_callback)

    async def hangup(self, call_id: str) -> Call:
        call = self.get(call_id)
        if not call.live:
            raise CallStateError(f"call {call.id} has already ended ({call.end_reason})")
        # The user wants out, whatever the engine answers: the call ends here now, and a
        # hang-up the engine did not take (unreachable, an error, no answer) is sent again.
        await hang_up_quietly(self.engine_of(call), call)
        if not call.live:
            return call
        if call.state is CallState.ACTIVE:
            reason = EndReason.HANGUP
        elif call.direction is Direction.INBOUND:
            reason = EndReason.DECLINED
        else:
            reason = EndReason.CANCELED
        await self.end(call, reason)
        return call

    def ring(self, call: Call) -> None:
        call.transition(CallState.RINGING)
        self.events.publish("call.ringing", call)
        runtime = self._runtimes.get(call.id)
        if runtime is not None:
            runtime.state_changed()

    def activate(self, call: Call) -> None:
        call.transition(CallState.ACTIVE)
        log.info("call %s: active", call.id, extra={"call_id": call.id})
        self.events.publish("call.active", call)
        runtime = self._runtimes.get(call.id)
        if runtime is not None:
            runtime.state_changed()
            runtime.media.wake()

    # -- ending (the ends from below: calls/endings.py)
    def record_end(self, call: Call, reason: EndReason, *, keep: bool = False) -> None:
        """End a call that never lived in this process — one turned away (``keep``: it stays
        readable like any ended call) or a dead worker's, rebuilt from the directory — count
        it and publish ``call.ended``."""
        call.transition(CallState.ENDED, reason)
        if keep:
            self.registry.add(call)
            self.registry.ended(call)
        count_ended(self.metrics, call, str(reason))
        self.events.publish("call.ended", call)

    async def end(self, call: Call, reason: EndReason, **data: Any) -> None:
        """End a live call here (idempotent): ``ended`` with ``reason``, its runtime closed,
        ``call.ended`` published (with ``data``). The engine's side is the caller's business."""
        if call.live:
            await self._teardowns.run(call, self._ended(call, reason), data)

    def end_soon(self, call: Call, reason: EndReason, **data: Any) -> None:
        """:meth:`end`, its teardown on a task of its own: the call is ended at once (no event
        of its counts any more), and whoever reads the engine's events goes on to the next —
        another call's — while this call's forks, sessions and files close (seconds, behind
        an unresponsive fork or peer). ``call.ended`` follows the teardown, as with :meth:`end`."""
        if call.live:
            self._teardowns.soon(call, self._ended(call, reason), data)

    def _ended(self, call: Call, reason: EndReason) -> CallRuntime | None:
        """The synchronous half of an end: the call ended and forgotten; its runtime, to close."""
        call.transition(CallState.ENDED, reason)
        self.registry.ended(call)
        self.engine.forget(call.engine_call_id)  # (its hang-up goes to ``engine_of(call)``)
        log.info("call %s: ended (%s)", call.id, reason, extra={"call_id": call.id})
        runtime = self._runtimes.pop(call.id)
        if runtime is not None:
            runtime.retire_counters()
        count_ended(self.metrics, call, str(reason))
        if call.answered_at is not None and call.ended_at is not None:
            self.metrics.call_duration.observe(call.ended_at - call.answered_at)
        count_active(self.metrics, self.registry.live())
        return runtime

    # -- moves between workers, in two steps (calls/letting_go.py, calls/handover.py)
    def adopt_moved(self, call: Call) -> CallRuntime:
        """Carry on a live call another worker handed over or left behind (not a new call:
        no ``call.created``, not counted as started); its runtime is returned to be filled."""
        self.check_capacity()
        return self._take_in(call)

    def release_moved(self, call_id: str) -> CallRuntime | None:
        """Forget a live call another worker carries on now, without ending it; its runtime
        (returned) is the caller's to close without hanging up."""
        call = self.registry.get(call_id)
        runtime = self._runtimes.pop(call_id)
        if call is not None:
            self.registry.forget(call)
            self.engine.forget(call.engine_call_id)
        if runtime is not None:
            runtime.retire_counters()
        count_active(self.metrics, self.registry.live())
        return runtime
