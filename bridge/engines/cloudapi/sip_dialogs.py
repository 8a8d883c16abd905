"""The SIP engine's calls and their dialogs: what :class:`~.sip_engine.SipEngine` keeps per call
and what the user agent tells it (the UA's ``CallHandler``: Meta's INVITE, CANCEL, ACK, BYE;
each step and its end reason are docs/engines/cloudapi.md, *What the bridge does on the SIP
road*).

With Meta's ``sip.webhook_delivery`` the number's ``calls`` webhooks name the same calls by
wacid, in any order with the SIP requests and more than once: the INVITE is the call, and only
the first ``terminate`` of a wacid counts (:attr:`SipDialogs.over`). A ``terminate`` naming no
call live here is told to every worker too (``CallsOver``: the call directory), since its INVITE,
not come yet, may reach another (a cluster's workers each listen for Meta's SIP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ...errors import EngineError
from ...sip import InviteServer, UserAgent
from ...sip.dialog import Dialog
from ...sip.headers import warning
from ...sip.message import Request
from ..base import CallsOver, EngineEvent, EngineEventKind, Remembered, emit
from .codes import ended_by_meta
from .graph_side import GraphSide
from .media import MediaLeg
from .sip_calls import (
    SipCall,
    call_duration,
    engine_call_id,
    invite_metadata,
    meta_code,
    peer_number,
)
from .state import MetaCalls
from .webhook import CallWebhook

log = logging.getLogger(__name__)

BYE_GRACE_S = 2.0
"""How long a call Meta's ``terminate`` webhook names may wait for Meta's BYE."""


class SipDialogs(MetaCalls):
    """The calls by engine call id and by dialog (module docstring)."""

    def __init__(
        self,
        events: asyncio.Queue[EngineEvent],
        graph_side: GraphSide,
        new_leg: Callable[[str], MediaLeg],
        other_leg_codecs: Callable[[], tuple[str, ...]] = tuple,
        calls_over: Callable[[], CallsOver | None] = lambda: None,
    ) -> None:
        self.events = events
        self.graph_side = graph_side
        self._new_leg = new_leg
        self._other_leg_codecs = other_leg_codecs
        """The codecs of the leg inbound calls go to (``answer_codec``: Meta's G.711 offer
        answered in kind for a G.711 PBX phone)."""
        self.calls_over = calls_over  # MetaCalls': every worker's memory beside :attr:`over`
        self.calls: dict[str, SipCall] = {}
        self.by_dialog: dict[tuple[str, str], SipCall] = {}
        self.by_meta_wacid: dict[str, SipCall] = {}
        """The calls we placed, by the wacid Meta's answers named (:meth:`named`)."""
        self.ua: UserAgent | None = None
        """Set once the engine has started its user agent."""
        self.over = Remembered()
        """The wacids Meta's ``terminate`` webhook said are over (the first one counts)."""

    def user_agent(self) -> UserAgent:
        """The engine's user agent (:class:`EngineError` before the engine started)."""
        if self.ua is None:
            raise EngineError("the SIP engine is not started")
        return self.ua

    # -- bookkeeping, both directions
    def confirmed(self, call: SipCall, dialog: Dialog) -> None:
        call.dialog = dialog
        self.by_dialog[dialog.key] = call
        self.user_agent().dialogs[dialog.key] = dialog

    def named(self, call: SipCall, wacid: str) -> None:
        """A response to our INVITE named Meta's wacid for ``call``: its webhooks (a
        ``terminate`` backstop) find the call by it."""
        if wacid and not call.meta_wacid and call.state != "ended":
            call.meta_wacid = wacid
            self.by_meta_wacid[wacid] = call

    def by_webhook(self, wacid: str) -> SipCall | None:
        """The live call a ``calls`` webhook names: Meta's own by its INVITE's wacid, ours
        by the wacid Meta's answer named."""
        return self.calls.get(wacid) or self.by_meta_wacid.get(wacid)

    def drop(self, call: SipCall) -> None:
        call.state = "ended"
        self.calls.pop(call.wacid, None)
        if self.by_meta_wacid.get(call.meta_wacid) is call:
            del self.by_meta_wacid[call.meta_wacid]
        if call.tx is not None:  # found by its INVITE's dialog from the INVITE on (a CANCEL)
            self.by_dialog.pop(call.tx.dialog.key, None)  # ended unconfirmed: only there
        if call.dialog is not None:
            self.by_dialog.pop(call.dialog.key, None)
            if self.ua is not None:
                self.ua.dialogs.pop(call.dialog.key, None)

    def ended(self, call: SipCall, reason: str, detail: str = "", **data: Any) -> None:
        ended = EngineEventKind.ENDED
        emit(self.events, EngineEvent(ended, call.wacid, reason=reason, data=data, detail=detail))

    async def terminated(self, wacid: str) -> bool:
        """Meta's ``terminate`` webhook for ``wacid``: whether the call is live here and waits
        for :meth:`terminated_by_meta` (a repeat, or a call whose INVITE has not come, is
        only remembered: here, and for every worker, where its INVITE may go; each time, so a
        repeat Meta delivers once the directory is back is told there too)."""
        first = wacid not in self.over
        self.over.add(wacid)
        if self.by_webhook(wacid) is not None:
            return first
        await self.tell_over(wacid)
        return False

    async def terminated_by_meta(self, ev: CallWebhook) -> None:
        """Meta's ``terminate`` webhook for a call of this number (``sip.webhook_delivery``):
        Meta's BYE normally comes first or with it; a call still live after
        :data:`BYE_GRACE_S` lost its BYE on the way and ends here, as Meta says it did (its
        status, error codes and duration, as a Graph call's terminate: ``codes.py``)."""
        await asyncio.sleep(BYE_GRACE_S)
        call = self.by_webhook(ev.wacid)
        if call is None or call.state == "ended":
            return
        answered, outbound = call.state == "accepted", call.direction == "outbound"
        event = ended_by_meta(call.wacid, ev, answered=answered, outbound=outbound, said=True)
        log.warning(
            "SIP call %s: Meta's terminate webhook came but no BYE within %.0f s: ended (%s%s)",
            ev.wacid,
            BYE_GRACE_S,
            ev.status or "no status",
            f", {event.detail}" if event.detail else "",
        )
        if call.tx is not None and not call.tx.final:  # its CANCEL was lost: end the INVITE
            await call.tx.respond(487, "Request Terminated")
        elif call.dialog is not None:  # its BYE was lost: ours closes the dialog both ways
            await self.user_agent().in_dialog(call.dialog, "BYE")
        await self.forget(call)
        detail = event.detail or "Meta's terminate webhook (no BYE came)"
        self.ended(call, event.reason, detail, **event.data)

    def owns(self, dialog_key: tuple[str, str]) -> bool:
        """Whether a dialog is one of these calls' (the shared listener asks)."""
        return dialog_key in self.by_dialog

    # -- the UA's CallHandler
    async def invite(self, tx: InviteServer) -> None:
        req = tx.req
        cid = engine_call_id(req)
        told = cid not in self.calls and cid not in self.over and await self.over_elsewhere(cid)
        if tx.final:
            return  # cancelled while the directory was asked (the UA answered it)
        if cid in self.calls:
            await tx.respond(486, "Busy Here (a call with this id is live)")
            return
        if told or cid in self.over:  # Meta's terminate webhook overtook it: the call is over
            where = " (to another worker)" if told else ""
            log.warning(
                "SIP call %s: Meta's terminate webhook came before its INVITE%s: 487", cid, where
            )
            await tx.respond(487, "Request Terminated")
            return
        leg = self._new_leg(f"cloudapi-sip:{cid[:24]}")
        leg.wacid = cid
        call = SipCall(cid, peer_number(req), "inbound", leg, metadata=invite_metadata(req), tx=tx)
        self.calls[cid] = call
        self.graph_side.permissions.heard_from(call.peer_wa, called=True)  # a callback?
        self.by_dialog[tx.dialog.key] = call  # a CANCEL may come while the leg answers
        try:
            offer = req.body.decode("utf-8", "replace")
            call.answer_sdp = await leg.answer(offer, self._other_leg_codecs())
        except Exception as exc:
            if call.state == "ended":
                return  # cancelled while the leg answered: its closing stopped it
            log.warning("SIP call %s: Meta's offer cannot be answered: %s", cid, exc)
            await tx.respond(488, "Not Acceptable Here", extra=[warning(exc)])
            await self.forget(call)
            return
        if call.state != "connecting" or tx.final:
            if call.state != "ended":
                await self.forget(call)
            return  # cancelled meanwhile
        call.state = "ringing"
        emit(self.events, EngineEvent(EngineEventKind.INCOMING, cid, call.jid, data=call.incoming))
        await tx.respond(180, "Ringing")

    async def cancelled(self, tx: InviteServer) -> None:
        call = self.by_dialog.get(tx.dialog.key)
        if call is None or call.state == "ended":
            return
        was_ringing = call.state == "ringing"
        await self.forget(call)
        if was_ringing:
            self.ended(call, "remote_canceled", sipReason="CANCEL")

    async def acked(self, dialog: Dialog) -> None:
        call = self.by_dialog.get(dialog.key)
        if call is not None and call.confirmed_at is None:
            call.confirmed_at = time.monotonic()

    async def ack_timeout(self, dialog: Dialog) -> None:
        call = self.by_dialog.get(dialog.key)
        if call is None or call.state == "ended":
            return
        await self.user_agent().in_dialog(dialog, "BYE")
        await self.forget(call)
        self.ended(call, "failed", sipReason="no ACK for our 200 OK")

    async def bye(self, dialog: Dialog, req: Request) -> None:
        call = self.by_dialog.get(dialog.key)
        if call is None or call.state == "ended":
            return
        answered = call.state == "accepted"
        await self.forget(call)
        data: dict[str, Any] = {}
        duration = call_duration(req)
        if duration is not None:
            data["engineDurationS"] = duration
        known, detail = meta_code(req)
        reason = "remote_hangup" if answered else ""
        if known is not None:
            reason = known.reason
            log.warning(
                "SIP call %s: Meta ended it (%s): %s — %s", call.wacid, reason, detail, known.hint
            )
        self.ended(call, reason, detail, **data)


__all__ = ["SipDialogs"]
