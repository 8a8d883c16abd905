"""The engine's events turned into call control: a new inbound call goes to the inbound
policy (``calls/inbound.py``), a permission answer is announced, a key press goes to the
call's DTMF, and ringing, answered and ended move the call's state through the manager."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..engines import EngineEvent, EngineEventKind
from .model import CallState, Direction, EndReason, engine_key

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger(__name__)


class EngineEvents:
    """Reads the engine's event queue for the manager (one task, the manager's)."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    async def consume_forever(self) -> None:
        events = self.manager.engine.events
        while True:
            event = await events.get()
            try:
                await self.on_event(event)
            except Exception:
                log.exception("handling engine event %s", event)

    async def on_event(self, event: EngineEvent) -> None:
        manager = self.manager
        if event.kind is EngineEventKind.PERMISSION:  # about a user, not a call
            manager.events.announce("call.permission", **dict(event.data))
            return
        if event.kind is EngineEventKind.INCOMING:
            if manager.incoming is None:
                log.warning("no inbound policy: engine call %s not taken", event.engine_call_id)
            else:
                await manager.incoming(event)
            return
        call = manager.registry.by_engine_id(engine_key(event.number_id, event.engine_call_id))
        if call is None:
            log.debug("engine event for an unknown or ended call: %s", event)
            return
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
            if call.state is CallState.ACTIVE:
                reason = EndReason.REMOTE_HANGUP
            elif call.direction is Direction.INBOUND:
                reason = EndReason.REMOTE_CANCELED
            else:
                reason = EndReason.REJECTED
            if event.reason in EndReason.__members__.values():
                reason = EndReason(event.reason)
            if event.detail and call.live:
                call.end_detail = event.detail
            billed = event.data.get("engineDurationS")
            if isinstance(billed, int) and billed >= 0 and call.live:
                call.billed_s = billed
            await manager.end(call, reason, **dict(event.data))
