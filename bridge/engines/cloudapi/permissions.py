"""``CallPermissions``: asking WhatsApp users for call permission, reading it, hearing the
answers (the wire is :mod:`.permission_wire`; the rules, docs/engines/cloudapi.md *Call
permissions*).

- **Ask** (:meth:`CallPermissions.request`): the interactive request while the user's 24 h
  service window is open, else the named template; Meta's 131047 (outside the window) becomes
  409 ``outside_service_window``, its 138009 429 ``permission_request_limit`` with ``retryAt``.
- **Call button** (:meth:`CallPermissions.send_call_button`): only inside the window; refused
  here, without asking Meta, once 24 h have passed since the bridge heard from the user.
- **Read** (:meth:`CallPermissions.read`): Meta's view, cached :data:`CACHE_SECONDS` per user
  (dropped when the user answers, after a request, and after a call to the user).
- **Hear** (:meth:`CallPermissions.heard`): replies become ``PERMISSION`` engine events; a
  ``user_changed_user_id`` moves what is kept for the user to the new BSUID.
- **Explain** (:meth:`CallPermissions.call_forbidden`): why Meta's 138006 refuses a call back
  to a user who called lately from a companion device (which grants no callback permission).

A user is kept under their phone number, else (a user who shows none) their BSUID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import (
    BadRequest,
    CallStateError,
    EngineError,
    GraphApiError,
    MetaLimit,
    NoCallPermission,
)
from ...timefmt import iso_utc, parse_iso_utc
from ..base import EngineEvent, EngineEventKind, Remembered, emit
from .graph import GraphClient, addressed
from .permission_wire import (
    SEND_REQUEST,
    START_CALL,
    call_button_message,
    message_id,
    messages_events,
    next_allowed,
    permission_view,
    request_message,
)

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
"""How long a permission read from Meta is served again without asking."""
REMEMBERED_USERS = 4096
"""Users whose service window or permission the bridge keeps (the oldest forgotten first)."""
SERVICE_WINDOW_S = 24 * 3600
CALLBACK_S = 7 * 24 * 3600
"""How long the callback permission a user's call grants lasts (Meta: 7 days, temporary)."""
OUTSIDE_WINDOW = 131047
"""Meta: more than 24 hours since the user last wrote (a free-form message is refused)."""
NO_TEMPLATE = 132001
"""Meta: the template (name and language) does not exist."""
BUTTON = ": a call button can only be sent inside the service window"


class CallPermissions:
    """Call permissions of one business number (see the module docstring)."""

    def __init__(
        self,
        graph: GraphClient,
        events: asyncio.Queue[EngineEvent],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.graph = graph
        self.events = events
        self.clock = clock
        self._window = Remembered(REMEMBERED_USERS)  # user → last heard from (wall clock)
        self._cache = Remembered(REMEMBERED_USERS)  # user → (monotonic fetch time, view)
        self._called = Remembered(REMEMBERED_USERS)  # user → last called us (wall clock)

    def in_window(self, phone: str) -> bool:
        heard = self._window.get(phone)
        return heard is not None and self.clock() - heard < SERVICE_WINDOW_S

    def heard_from(self, phone: str, *, called: bool = False, at: float | None = None) -> None:
        """The user wrote or called (``called``), now or at ``at`` (Meta's timestamp of the
        message: a webhook delivered again, or late, opens no window it did not): their
        service window is open for 24 h from then (an earlier message never shortens it)."""
        now = self.clock()
        when = now if at is None else min(at, now)
        self._window.add(phone, max(when, self._window.get(phone) or when))
        if called:
            self._called.add(phone, now)

    def forget(self, phone: str) -> None:
        """Meta's view of the user changed (an answer, a request, a call): read it anew."""
        self._cache.pop(phone, None)

    def moved(self, old: str, new: str) -> None:
        """The user known as ``old`` is ``new`` now (``user_changed_user_id``): what is kept
        for them moves (the newer entry wins where both exist)."""
        for kept in (self._window, self._called):
            value = kept.pop(old, None)
            if value is not None and new not in kept:
                kept.add(new, value)
        cached = self._cache.pop(old, None)
        if cached is not None and new not in self._cache:  # the view names the user as now
            fetched, view = cached
            self._cache.add(new, (fetched, {**view, "phone": new}))
        log.info("WhatsApp user %s is %s now: their window and permission moved", old, new)

    def heard(self, body: Mapping[str, Any]) -> int:
        """A webhook body's ``messages`` changes; how many items were malformed."""
        replies, senders, moves, bad = messages_events(body)
        for move in moves:
            self.moved(move.old, move.new)
        for sender, wrote_at in senders:
            self.heard_from(sender, at=wrote_at)
        for reply in replies:
            self.forget(reply.phone)
            self.forget(reply.user_id)
            log.info(
                "call permission from %s: %s (%s, %s)",
                reply.user,
                reply.response,
                "permanent" if reply.permanent else f"until {reply.expires_at}",
                reply.source,
            )
            emit(self.events, EngineEvent(EngineEventKind.PERMISSION, "", data=reply.event()))
        return bad

    async def send_call_button(self, phone: str, button: Mapping[str, Any]) -> str:
        """Send ``phone`` the business's call button (only inside the user's service window:
        refused here when the bridge saw it close, else Meta's 131047 becomes 409
        ``outside_service_window``); Meta's message id."""
        heard = self._window.get(phone)  # None: not since the bridge started (or forgotten)
        if heard is not None and not self.in_window(phone):
            closed = iso_utc(heard + SERVICE_WINDOW_S)
            log.warning(
                "call button to %s not sent: the service window closed at %s (24 h after the "
                "user last wrote or called)",
                phone,
                closed,
            )
            raise _outside_window(phone, f"{BUTTON} (it closed at {closed}; not sent to Meta)")
        try:
            answer = await self.graph.request(
                "POST", "messages", "voice_call button", call_button_message(phone, button)
            )
        except GraphApiError as exc:
            if exc.details.get("metaCode") == OUTSIDE_WINDOW:
                meta = exc.details.get("metaMessage")
                raise _outside_window(phone, f"{BUTTON} (Meta: {meta})") from exc
            raise
        return message_id(answer)

    async def request(self, phone: str, template: Mapping[str, str] | None, text: str = "") -> str:
        """Ask ``phone`` for call permission (``text``: the interactive request's body, why
        the business asks; a template has its own); Meta's message id."""
        use = None if self.in_window(phone) else template
        self.forget(phone)
        try:
            answer = await self.graph.request(
                "POST", "messages", "call_permission_request", request_message(phone, use, text)
            )
        except MetaLimit as exc:
            await self._when_next(phone, SEND_REQUEST, exc)
            raise
        except GraphApiError as exc:
            code = exc.details.get("metaCode")
            meta = exc.details.get("metaMessage")
            if code == OUTSIDE_WINDOW:
                why = ", so only a template can ask: give template {name, language}"
                raise _outside_window(phone, f"{why} (Meta: {meta})") from exc
            if code == NO_TEMPLATE:
                raise BadRequest(
                    f"Meta has no approved template {template!r}: {meta}", code="unknown_template"
                ) from exc
            raise
        found = message_id(answer)
        if not found:
            raise EngineError(f"Meta's answer to the permission request has no id: {answer!r:.200}")
        log.info(
            "call permission requested from %s (%s)", phone, "template" if use else "interactive"
        )
        return found

    async def read(self, phone: str, *, fresh: bool = False) -> dict[str, Any]:
        """The user's permission as the API shows it (cached briefly unless ``fresh``)."""
        cached = self._cache.get(phone)
        if cached is not None and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
            return dict(cached[1])
        answer = await self.graph.request(
            "GET", "call_permissions", "call_permissions", params=addressed(phone, "user_wa_id")
        )
        view = permission_view(phone, answer)
        self._cache.add(phone, (time.monotonic(), view))
        return dict(view)

    def call_forbidden(self, phone: str, exc: NoCallPermission) -> None:
        """Meta's 138006 on a call to ``phone``: when the user called the business within the
        7 days a callback permission would last, say that their call granted none — a call
        from a companion device does not (``details.cause``: ``no_callback_from_companion``)."""
        called = self._called.get(phone)
        if called is None or self.clock() - called >= CALLBACK_S:
            return
        exc.details["cause"] = "no_callback_from_companion"
        exc.details["calledAt"] = iso_utc(called)
        exc.message = (
            f"{exc.message}. {phone} called the business at {iso_utc(called)}, but that call "
            "granted no callback permission: calls from a companion device (a second phone, "
            "WhatsApp Web or desktop, a tablet) do not (nor any call while the number's "
            "callback permission setting is off). Ask first: POST /call/permissions"
        )
        log.info("call to %s refused: %s", phone, exc.message)  # Graph's WARNING said 138006

    async def call_refused(self, phone: str, exc: MetaLimit | NoCallPermission) -> None:
        """A call to ``phone`` refused: over Meta's call limit, say when the next may start
        (not for the number's own limit, 138002: it is about no user); for want of a
        permission, why the user's own call granted none (:meth:`call_forbidden`)."""
        if isinstance(exc, NoCallPermission):
            self.call_forbidden(phone, exc)
        elif exc.code == "call_limit_reached":
            await self._when_next(phone, START_CALL, exc)

    async def _when_next(self, phone: str, action: str, exc: MetaLimit) -> None:
        """Add ``retryAt`` (and ``Retry-After``) to Meta's limit error, from Meta's limits."""
        try:
            view = await self.read(phone, fresh=True)
        except EngineError as again:
            log.info("permission of %s not readable after a limit: %s", phone, again)
            return
        when = next_allowed(view, action)
        if when is None:
            return
        exc.details["retryAt"] = when
        exc.details["limits"] = [lim for lim in view["limits"] if lim["action"] == action]
        exc.message = f"{exc.message} The next one is allowed at {when}."
        exc.retry_after = max(1, int(parse_iso_utc(when) - self.clock()))


def _outside_window(phone: str, then: str) -> CallStateError:
    """409 ``outside_service_window``: 24 h since ``phone`` last wrote or called, ``then``."""
    return CallStateError(
        f"{phone} has not written to the business in the last 24 h{then}",
        code="outside_service_window",
    )
