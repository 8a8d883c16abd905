"""``NumberStanding``: what Meta thinks of one business number, and the rules it enforces
that the bridge can enforce first (docs/engines/cloudapi.md, *Penalties and limits*).

- ``account_update`` (:mod:`.account_wire`): an ``ACCOUNT_VIOLATION`` is a ``number.warning``;
  a ``RESTRICTED_BUSINESS_INITIATED_CALLING`` restriction pauses business-initiated calling
  until it expires (``number.paused``), and ``/call/make`` is refused here with ``403
  calling_paused`` and ``Retry-After`` meanwhile. Meta's own 138014 pauses it too.
- ``account_settings_update`` → ``number.settings_changed``.
- One business call per user at a time: refused with ``409 call_in_progress`` before Meta is
  asked (Meta refuses it anyway).

These go out as ``NUMBER`` engine events, the event's ``type`` and fields in ``data``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ...errors import CallInProgress, MetaForbidden
from ...timefmt import iso_utc
from ..base import EngineEvent, EngineEventKind, emit
from .account_wire import (
    CALLING_RESTRICTION,
    AccountNotice,
    account_notices,
    settings_restrictions,
)
from .settings_wire import scrubbed

log = logging.getLogger(__name__)

UNKNOWN_PAUSE_S = 3600
"""How long a pause Meta reported only through a 138014 refusal is assumed to last (its
``account_update`` says until when; until it comes, the bridge asks Meta again hourly)."""


class NumberStanding:
    """One number's standing at Meta (see the module docstring)."""

    def __init__(
        self,
        events: asyncio.Queue[EngineEvent],
        meta_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events = events
        self.meta_id = meta_id
        self.clock = clock
        self.paused_until: float | None = None
        self.pause_reason = ""
        self.pause_known = False
        """Whether Meta said until when (its ``account_update``), not just that (138014)."""
        self.warnings = 0
        self._dialling: set[str] = set()

    # -- Meta's notices
    def heard(self, body: Mapping[str, Any]) -> int:
        """A webhook body's number notices; how many items were malformed."""
        notices, bad = account_notices(body)
        for notice in notices:
            if notice.meta_id and notice.meta_id != self.meta_id:
                continue  # another number's settings (the front door routes by it)
            self._notice(notice)
        return bad

    def _notice(self, notice: AccountNotice) -> None:
        if notice.kind == "warning":
            self.warnings += 1
            log.warning(
                "Meta warns number %s: %s (a pause of business-initiated calling may follow)",
                self.meta_id,
                notice.violation,
            )
            self._announce("number.warning", violation=notice.violation)
        elif notice.kind == "restriction" and notice.restriction == CALLING_RESTRICTION:
            self.pause(notice.restriction, notice.until)
        elif notice.kind == "restriction":
            log.warning("Meta restricts number %s: %s", self.meta_id, notice.restriction)
        elif notice.kind == "settings":
            log.info("number %s: Meta's calling settings changed", self.meta_id)
            self._announce("number.settings_changed", calling=scrubbed(notice.calling))

    def settings_read(self, calling: Mapping[str, Any]) -> None:
        """Meta's calling settings as just read: a calling restriction listed there (its
        ``restrictions``) pauses business-initiated calling as its ``account_update`` does,
        once for each new expiration (the settings are read again with every health check)."""
        for notice in settings_restrictions(calling):
            if notice.restriction != CALLING_RESTRICTION or notice.until is None:
                continue
            if notice.until <= self.clock():
                continue  # expired
            self.pause(notice.restriction, notice.until)

    def pause(self, reason: str, until: float | None) -> None:
        """Business-initiated calling is paused (``until``: Unix seconds, when known)."""
        known = until is not None
        end = until if until is not None else self.clock() + UNKNOWN_PAUSE_S
        if self.pause_view() is not None and not known:
            return  # a 138014 while paused already
        if known and self.pause_known and self.paused_until == end:
            return  # said again (the webhook, then the settings, or a webhook sent twice)
        self.paused_until, self.pause_reason, self.pause_known = end, reason, known
        log.warning(
            "Meta paused business-initiated calling on number %s (%s) until %s: /call/make "
            "from it is refused until then; user-initiated calls still work",
            self.meta_id,
            reason,
            iso_utc(end) if known else "unknown",
        )
        self._announce("number.paused", reason=reason, until=iso_utc(end) if known else None)

    def _announce(self, type_: str, **fields: Any) -> None:
        emit(self.events, EngineEvent(EngineEventKind.NUMBER, "", data={"type": type_, **fields}))

    # -- what it refuses
    def pause_view(self) -> dict[str, Any] | None:
        """``{reason, until, retryAfter}`` while calling is paused, else ``None`` (``until``
        and ``retryAfter`` are ``None`` when Meta did not say)."""
        if self.paused_until is None:
            return None
        left = self.paused_until - self.clock()
        if left <= 0:
            self.paused_until, self.pause_reason = None, ""
            return None
        known = self.pause_known
        return {
            "reason": self.pause_reason,
            "until": iso_utc(self.paused_until) if known else None,
            "retryAfter": int(left) + 1 if known else None,
        }

    @contextmanager
    def dialling(self, phone: str, calls: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Around a dial to ``phone`` (``calls``: the number's live calls as ``(user,
        state)``): refused while paused or while the user has a call with the number."""
        pause = self.pause_view()
        if pause is not None:
            raise MetaForbidden(
                f"Meta paused business-initiated calling on this number until "
                f"{pause['until'] or 'a time it did not give'} ({pause['reason']}): "
                "user-initiated calls still work",
                code="calling_paused",
                retry_after=pause["retryAfter"],
                details=pause,
            )
        busy = phone in self._dialling or any(
            user == phone and state != "ended" for user, state in calls
        )
        if busy:
            raise CallInProgress(
                f"the business already has a call with {phone}: WhatsApp allows one at a time"
            )
        self._dialling.add(phone)
        try:
            yield
        finally:
            self._dialling.discard(phone)

    def refused(self, exc: MetaForbidden) -> None:
        """Meta refused a dial with 138014: the number is paused (until when Meta's
        ``Retry-After`` or its ``account_update`` says; the refusal then says it too)."""
        if exc.code != "calling_paused":
            return
        until = self.clock() + exc.retry_after if exc.retry_after else None
        self.pause(CALLING_RESTRICTION, until)
        pause = self.pause_view()
        if pause is not None:
            exc.details["pause"] = pause
            exc.retry_after = exc.retry_after or pause["retryAfter"]
