"""The engine's events turned into call control: a new inbound call goes to the inbound
policy (``calls/inbound.py``), a permission answer is announced, a key press goes to the
call's DTMF, and ringing, answered and ended move the call's state through the manager.

A new call is taken on a loop of its own (the arrivals), one at a time in the order they
came: taking one may wait seconds (the directory's claim, an offer to another worker that
does not answer, a busy decline), and the other calls' answers and ends must not wait for
it. What the engine says of a call while it is being taken is held, and handled after it
in the order it came (a caller who gave up while the call was placed: rung, then ended)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..engines import EngineEvent, EngineEventKind
from ..logs import FailureKinds
from ..numbers.model import DEFAULT_NUMBER
from ..timefmt import parse_iso_utc
from .model import CallState, Direction, EndReason, engine_key

if TYPE_CHECKING:
    from .control import MovesCalls

log = logging.getLogger(__name__)

ARRIVALS_MAX = 1000
"""New calls waiting to be taken (the engine's own queue's size); past it the engine's
events wait for room: none is dropped."""
HELD_MAX = 64
"""Events held for one call while it is taken (a ringing call gets a handful)."""


def end_reason(state: CallState, direction: Direction, engine_reason: str) -> EndReason:
    """Why a call its engine ended is over: the engine's reason when it names one of ours,
    else what the call's state says — ``remote_hangup`` once active, ``remote_canceled`` for
    an inbound call not yet answered (the caller gave up), ``rejected`` for ours."""
    if engine_reason in EndReason.__members__.values():
        return EndReason(engine_reason)
    if state is CallState.ACTIVE:
        return EndReason.REMOTE_HANGUP
    if direction is Direction.INBOUND:
        return EndReason.REMOTE_CANCELED
    return EndReason.REJECTED


class EngineEvents:
    """Reads the engine's event queue for the manager (one task, the manager's)."""

    def __init__(self, manager: MovesCalls) -> None:
        self.manager = manager
        self._bugs = FailureKinds(log)  # one that fails on every event: said once per kind
        self._arrivals: asyncio.Queue[EngineEvent] = asyncio.Queue(ARRIVALS_MAX)
        self._arriving: dict[str, list[EngineEvent]] = {}
        """The calls waiting to be taken or being taken, by engine key: the events held
        for each (module docstring)."""

    async def consume_forever(self) -> None:
        """Read the engine's events (one of the manager's two tasks for them)."""
        events = self.manager.engine.events
        while True:
            await self._handle(await events.get())

    async def take_arrivals_forever(self) -> None:
        """Take the new calls, one at a time (the other task: module docstring)."""
        while True:
            event = await self._arrivals.get()
            key = engine_key(event.number_id, event.engine_call_id)
            try:
                await self._take(event)
            finally:
                held = self._arriving.pop(key, [])
            for later in held:  # the call is known here now, or placed elsewhere (ignored)
                await self._handle(later)

    async def _handle(self, event: EngineEvent) -> None:
        try:
            await self.on_event(event)
        except Exception as exc:
            self._bugs.failed(exc, "handling engine event %s", event)

    async def _take(self, event: EngineEvent) -> None:
        manager = self.manager
        try:
            if manager.incoming is None:
                log.warning("no inbound policy: engine call %s not taken", event.engine_call_id)
            else:
                await manager.incoming(event)
        except Exception as exc:
            self._bugs.failed(exc, "taking new engine call %s", event)

    async def on_event(self, event: EngineEvent) -> None:
        manager = self.manager
        if event.kind is EngineEventKind.PERMISSION:  # about a user, not a call
            number_id = event.number_id or DEFAULT_NUMBER
            tenant_id = manager.engine.tenant_of(number_id)
            data = {"numberID": number_id, "tenantID": tenant_id, **event.data}
            manager.events.announce("call.permission", **data)
            return
        if event.kind is EngineEventKind.NUMBER:  # about the number: number.paused, …
            self.on_number(event)
            return
        if event.kind is EngineEventKind.ARTIFACT:  # Meta's recording or transcript
            if manager.artifacts is not None:
                await manager.artifacts.take(event)
            return
        key = engine_key(event.number_id, event.engine_call_id)
        if event.kind is EngineEventKind.INCOMING:
            if key not in self._arriving:  # else reported twice while it is taken
                self._arriving[key] = []
                await self._arrivals.put(event)
            return
        held = self._arriving.get(key)
        if held is not None:  # being taken: after it, in order
            if len(held) < HELD_MAX:
                held.append(event)
            else:
                log.warning("engine call %s: event %s dropped while it is taken", key, event)
            return
        call = manager.registry.by_engine_id(key)
        if call is None:
            log.debug("engine event for an unknown or ended call: %s", event)
            return
        if event.webhook_call_id and call.live:  # in the record the state change writes
            call.webhook_call_id = event.webhook_call_id
        if event.kind is EngineEventKind.DTMF:
            runtime = manager.find_runtime(call.id)
            digit = event.data.get("digit")
            if runtime is not None and isinstance(digit, str):
                runtime.dtmf.on_whatsapp(digit, int(event.data.get("durationMs") or 0))
            return
        if event.kind is EngineEventKind.RINGING and call.state is CallState.CALLING:
            manager.ring(call)
        elif event.kind is EngineEventKind.ANSWERED and call.state in (
            CallState.CALLING,
            CallState.RINGING,
        ):
            manager.activate(call)
        elif event.kind is EngineEventKind.ENDED:
            reason = end_reason(call.state, call.direction, event.reason)
            if event.detail and call.live:
                call.end_detail = event.detail
            billed = event.data.get("engineDurationS")
            if isinstance(billed, int) and billed >= 0 and call.live:
                call.billed_s = billed
            # Ended now; torn down on its own task: the next event (another call's ringing,
            # answer or end) waits for none of this call's forks and sessions to close.
            manager.end_soon(call, reason, **dict(event.data))

    def on_number(self, event: EngineEvent) -> None:
        """What Meta said about a number, announced with the number and its tenant (so
        each tenant's streams and webhooks get their own numbers' only)."""
        manager = self.manager
        data = dict(event.data)
        type_ = str(data.pop("type", "number.notice"))
        number_id = event.number_id or DEFAULT_NUMBER
        if type_ == "number.paused":
            until = data.get("until")
            end = parse_iso_utc(until) if isinstance(until, str) else None
            manager.metrics.number_paused_until.labels(number_id).set(end or -1)
        tenant_id = manager.engine.tenant_of(number_id)
        manager.events.announce(type_, numberID=number_id, tenantID=tenant_id, **data)
