"""``CallList``: a polled engine's live calls as its last listing showed them, and what each
new listing changed, as engine events (a new inbound call rings, ours rings or goes active, a
call gone from the list has ended — for ZuckZapGo, the only remote-hangup signal). Sans-IO:
:class:`~.polling.PollingEngine` fetches the listing and hands it over."""

from __future__ import annotations

import asyncio
import time

from .base import EngineEvent, EngineEventKind, Remembered, RemoteCall, emit

ENDED_REMEMBERED = 10_000
"""Calls over that are remembered (the ones this bridge hung up are most), the latest kept."""
LIST_GRACE = 5.0
"""Seconds a call we just dialled may be missing from the engine's list before it counts as
ended (an engine may list a new call a little after answering the dial request)."""


class CallList:
    """The calls the engine listed (and the ones we just created), diffed listing by listing
    into events on ``events``."""

    def __init__(self, events: asyncio.Queue[EngineEvent]) -> None:
        self.events = events
        self._known: dict[str, RemoteCall] = {}
        self._unlisted_since: dict[str, float] = {}
        self._ended = Remembered(ENDED_REMEMBERED)
        """The calls over (ended there, or hung up here): a late listing or webhook of one
        changes nothing."""

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._known

    def over(self, call_id: str) -> bool:
        """Whether the call is known over (ended there, or hung up here)."""
        return call_id in self._ended

    def live(self, calls: list[RemoteCall]) -> list[RemoteCall]:
        """A listing's calls less those known over."""
        return [c for c in calls if c.id not in self._ended]

    def update(self, calls: list[RemoteCall]) -> None:
        """A new listing (:meth:`live`): report what changed since the last."""
        seen = {c.id: c for c in calls}
        for call in calls:
            before = self._known.get(call.id)
            if call.ended:
                continue
            if before is None and call.ringing_inbound:
                emit(self.events, EngineEvent(EngineEventKind.INCOMING, call.id, call.peer))
            elif call.active and (before is None or not before.active):
                emit(self.events, EngineEvent(EngineEventKind.ANSWERED, call.id, call.peer))
            elif (
                call.state == "ringing"
                and call.direction == "outbound"
                and (before is None or before.state != "ringing")
            ):
                emit(self.events, EngineEvent(EngineEventKind.RINGING, call.id, call.peer))
        now = time.monotonic()
        for call_id in list(self._known):
            listed = seen.get(call_id)
            if listed is None and now - self._unlisted_since.get(call_id, 0.0) < LIST_GRACE:
                seen[call_id] = self._known[call_id]  # just dialled: not listed yet
            elif listed is None or listed.ended:
                self.forget(call_id)
            else:
                self._unlisted_since.pop(call_id, None)
        self._known = {k: v for k, v in seen.items() if not v.ended}

    def track(self, call_id: str, peer: str, state: str, direction: str) -> None:
        """Remember a call we created, so its disappearance is noticed."""
        self._known[call_id] = RemoteCall(call_id, peer, state, direction)
        self._unlisted_since[call_id] = time.monotonic()

    def hung_up(self, call_id: str) -> None:
        """We ended the call ourselves: stop tracking it, report nothing."""
        self._known.pop(call_id, None)
        self._unlisted_since.pop(call_id, None)
        self._ended.add(call_id)

    def offer_again(self, call_id: str) -> None:
        """The next listing that shows the call ringing reports it ``INCOMING`` again."""
        known = self._known.get(call_id)
        if known is not None and known.ringing_inbound:
            del self._known[call_id]

    def forget(self, call_id: str, reason: str = "") -> None:
        """The call is gone from the engine: report it ended (once)."""
        self._known.pop(call_id, None)
        self._unlisted_since.pop(call_id, None)
        if call_id in self._ended:
            return
        self._ended.add(call_id)
        emit(self.events, EngineEvent(EngineEventKind.ENDED, call_id, reason=reason))
