"""What the Cloud API engine keeps per call (:class:`CloudCall`, by Meta's ``wacid``), what both
roads do with their calls (:class:`MetaCalls`) and the webhooks parked for a dial in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import DirectoryUnavailable
from ..base import CallsOver, EngineEvent, EngineEventKind, emit
from .media import MediaLeg
from .webhook import CallWebhook

PARKED = 16
"""Webhook events kept per dial that arrive before ``connect`` has returned Meta's call id
(found by their ``biz_opaque_callback_data``, our call id); the oldest go first."""


@dataclass
class MetaCall:
    """What an engine keeps of a call on either road (:class:`CloudCall`, ``SipCall``), by the
    engine call id its leg has too (``wacid``: Meta's, or the Call-ID of our own INVITE)."""

    wacid: str
    peer_wa: str
    direction: str  # "inbound" or "outbound"
    leg: MediaLeg
    state: str = "connecting"  # connecting, (calling,) ringing, accepted, ended
    answer_sdp: str = ""  # inbound: our answer to Meta's offer
    metadata: dict[str, Any] = field(default_factory=dict)
    """Inbound: the caller's context (Meta's connect webhook or INVITE headers), into the
    call's metadata."""
    handed_over: bool = False
    """The call's runtime owns the leg (``take_leg``): it closes it, not the engine."""

    @property
    def jid(self) -> str:
        return f"{self.peer_wa}@s.whatsapp.net"

    @property
    def incoming(self) -> dict[str, Any]:
        """The ``INCOMING`` event's data."""
        return {"metadata": self.metadata} if self.metadata else {}


class MetaCalls:
    """A road's live calls, by engine call id (its legs' ``wacid``), written once for both
    roads (``CloudApiEngine``'s, ``SipDialogs``'): a call forgotten, and what its leg tells."""

    calls: Mapping[str, MetaCall]
    events: asyncio.Queue[EngineEvent]
    drop: Callable[[Any], None]
    """The call is ended here: each road's own bookkeeping (its ``drop`` method)."""
    calls_over: Callable[[], CallsOver | None]
    """Where every worker finds the wacids Meta's ``terminate`` said are over before the call
    reached one (the engine's ``EndsBeforeArrival.calls_over``, set by the switchboard;
    ``None``: this worker's memory alone)."""

    async def tell_over(self, wacid: str) -> None:
        """Meta's ``terminate`` named ``wacid``, no call live here: told to every worker, since
        the call's start (an INVITE, a Graph ``connect``) may reach another. Each time Meta
        delivers it, so a repeat that comes once the directory is back is told there too."""
        shared = self.calls_over()
        if shared is not None:
            # Redis away: remembered here alone. The router answered Meta 503 (it could not
            # find the call's worker), so Meta delivers it again.
            with contextlib.suppress(DirectoryUnavailable):
                await shared.mark_over(wacid)

    async def over_elsewhere(self, wacid: str) -> bool:
        """Whether Meta's ``terminate`` for ``wacid`` came to another worker (bounded: the
        directory's read); ``False`` when the directory cannot say (this worker's memory)."""
        shared = self.calls_over()
        if shared is None:
            return False
        try:
            return await shared.marked_over(wacid)
        except DirectoryUnavailable:
            return False

    async def forget(self, call: Any) -> None:
        """The call is over here: dropped, and its leg closed unless a runtime has it."""
        self.drop(call)
        call.leg.expect_close()  # over at Meta: its closing is no failure now
        if not call.handed_over:  # else its runtime closes it as the call ends
            await call.leg.close()

    def leg_closed(self, leg: MediaLeg) -> None:
        """``leg``'s runtime closed it: its call is dropped (late webhooks change nothing)."""
        call = self.calls.get(leg.wacid)
        if call is not None and call.leg is leg:
            self.drop(call)

    def on_dtmf(self, leg: MediaLeg, digit: str, duration_ms: int) -> None:
        """A key the WhatsApp user pressed on ``leg``, as its live call's event."""
        call = self.calls.get(leg.wacid)
        if call is not None and call.state != "ended":
            data = {"digit": digit, "durationMs": duration_ms}
            emit(self.events, EngineEvent(EngineEventKind.DTMF, leg.wacid, data=data))


@dataclass
class CloudCall(MetaCall):
    """The Graph road's view of one call (keyed by Meta's ``wacid``)."""

    call_id: str = ""  # outbound: our call id (biz_opaque_callback_data)
    seen: set[str] = field(default_factory=set)


class Parked(dict[str, deque[CallWebhook]]):
    """Our call id → the webhook events that came before Meta's answer to ``connect`` (one
    entry per dial in flight, so as bounded as the calls; :data:`PARKED` events each)."""

    def open(self, opaque: str) -> None:
        if opaque:
            self[opaque] = deque(maxlen=PARKED)

    def park(self, ev: CallWebhook) -> bool:
        """Keep ``ev`` if it is about a dial in flight (by ``biz_opaque_callback_data``)."""
        if not ev.opaque or ev.opaque not in self:
            return False
        self[ev.opaque].append(ev)
        return True

    def take(self, opaque: str, wacid: str) -> list[CallWebhook]:
        """The dial's parked events about ``wacid``, in order; the dial's entry goes."""
        return [ev for ev in self.pop(opaque, ()) if ev.wacid == wacid]
