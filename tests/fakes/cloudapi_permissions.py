"""Meta's user call permissions in the fake Meta, written from Meta's "user call permissions"
and business-initiated calling documentation, as strict as Meta:

* ``POST /v23.0/{PHONE_NUMBER_ID}/messages``: an ``interactive`` ``call_permission_request``
  (an optional ``body.text`` of 1 to 1024 characters, no header or footer; only inside the
  user's 24 h service window — opened by the user's
  message or call — else 131047) or an
  approved ``template`` (else 132001); unknown parameters and no ``to`` (digits) or
  ``recipient`` (a BSUID: :mod:`.cloudapi_users`) are 100; more
  than 1 request per 24 h or 2 per 7 days per user is 138009 (both reset when any call with
  the user connects, theirs or ours).
  Success: ``{"messaging_product", "contacts", "messages": [{"id"}]}``.
* ``GET /v23.0/{PHONE_NUMBER_ID}/call_permissions?user_wa_id=`` (or ``?recipient=``, a
  BSUID): ``permission`` {``status``,
  ``expiration_time``} and ``actions`` with their ``limits`` and current usage.
* ``connect`` refused with 138006 without a live permission (none, rejected, expired) and
  138012 once the user's connected calls per 24 h reach :attr:`MetaPermissions.call_limit`.
* An ``interactive`` ``voice_call`` message (Meta Cloud API Calling: the "Call on WhatsApp"
  button): ``body.text`` (at most 1024), ``action`` ``{name: voice_call, parameters:
  {display_text (at most 20), ttl_minutes (1-43200), payload (at most 512)}}``, no footer,
  only inside the service window (131047); the payload comes back as the ``cta_payload`` of
  the call the user starts from it (:attr:`MetaPermissions.buttons`).
* Replies as Meta delivers them: a ``messages`` webhook (field ``messages``) with an
  interactive ``call_permission_reply`` — the user's answer, a callback grant (automatic), or
  the revocation after four unanswered calls (automatic reject).

Time is :meth:`MetaPermissions.now` (wall clock plus :attr:`offset`), so a test moves it on
instead of waiting seven days.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .cloudapi_users import addressee, contact, named, user_id_changed

DAY = 24 * 3600
TEMPORARY_S = 7 * DAY
REQUEST_LIMITS = (("PT24H", DAY, 1), ("P7D", 7 * DAY, 2))
MESSAGE_KEYS = {
    "messaging_product",
    "recipient_type",
    "to",
    "recipient",
    "type",
    "interactive",
    "template",
    "context",
    "biz_opaque_callback_data",
}


@dataclass
class User:
    status: str = "no_permission"  # temporary | permanent | no_permission
    expires: float | None = None
    requests: list[float] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    last_inbound: float | None = None
    pending: str | None = None  # the wamid of the open request
    unanswered: int = 0
    answered: bool = False  # the user (or Meta for them) ever answered


def _error(code: int, message: str, status: int = 400) -> web.Response:
    from .cloudapi import meta_error

    return meta_error(status, code, f"(#{code}) {message}")


class MetaPermissions:
    """The permission state of every user of one business number."""

    def __init__(self, business: str = "15550009999") -> None:
        self.business = business
        self.users: dict[str, User] = {}
        self.offset = 0.0
        self.templates = {("call_me", "en_US")}
        """Approved templates (name, language) that carry a call-permission request."""
        self.call_limit = 5
        """Connected business-initiated calls per 24 h per user (Meta's value changes: the
        bridge must read it from ``limits``)."""
        self.strict = False
        """Users never seen have no permission (else they may be called, as before)."""
        self.sent: list[dict[str, Any]] = []
        self.buttons: dict[str, tuple[str, float]] = {}
        """user → the payload of the last call button sent them, and when it expires."""

    def now(self) -> float:
        return time.time() + self.offset

    def user(self, wa_id: str) -> User:
        return self.users.setdefault(wa_id, User())

    # -- state
    def permitted(self, wa_id: str) -> bool:
        user = self.users.get(wa_id)
        if user is None or (not user.answered and not self.strict):
            return not self.strict
        if user.status == "temporary" and user.expires is not None and user.expires <= self.now():
            user.status, user.expires = "no_permission", None
        return user.status in ("temporary", "permanent")

    def calls_today(self, wa_id: str) -> int:
        user = self.users.get(wa_id)
        return 0 if user is None else sum(1 for t in user.calls if t > self.now() - DAY)

    def connect_refusal(self, to: str) -> web.Response | None:
        """Meta's answer to ``connect`` for a user it will not let us call, else ``None``."""
        if not self.permitted(to):
            return _error(138006, "No approved call permission from the recipient")
        if self.calls_today(to) >= self.call_limit:
            return _error(138012, "Business initiated calls limit reached with this user")
        return None

    def call_connected(self, wa_id: str) -> None:
        """A business-initiated call with the user connected: it counts against the call
        limit, and as any call that connects (:meth:`any_call_connected`)."""
        self.user(wa_id).calls.append(self.now())
        self.any_call_connected(wa_id)

    def any_call_connected(self, wa_id: str) -> None:
        """A call between the business and the user connected, whoever placed it: the
        permission-request limits reset (Meta's limits: "both reset when any call between the
        two connects")."""
        user = self.user(wa_id)
        user.requests.clear()
        user.unanswered = 0

    def _request_usage(self, user: User) -> list[tuple[str, int, int, float | None]]:
        now = self.now()
        out = []
        for period, seconds, most in REQUEST_LIMITS:
            used = [t for t in user.requests if t > now - seconds]
            out.append((period, most, len(used), min(used) + seconds if used else None))
        return out

    # -- Graph endpoints
    async def messages_endpoint(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return _error(100, "The parameter messaging_product is required.")
        unknown = sorted(set(body) - MESSAGE_KEYS)
        if unknown:
            return _error(100, f"Param {unknown[0]} is not a valid parameter")
        if body.get("recipient_type", "individual") != "individual":
            return _error(100, "Invalid parameter recipient_type")
        to, problem = addressee(body)  # ``to`` (digits) or ``recipient`` (a BSUID)
        if problem:
            return _error(100, problem)
        user = self.user(to)
        kind = body.get("type")
        interactive = body.get("interactive")
        if kind == "interactive" and isinstance(interactive, dict):
            if interactive.get("type") == "voice_call":
                return self._voice_call_button(to, interactive, user)
        if kind == "interactive":
            refusal = self._check_interactive(body.get("interactive"), user)
        elif kind == "template":
            refusal = self._check_template(body.get("template"))
        else:
            refusal = _error(100, f"Invalid parameter type {kind!r}")
        if refusal is not None:
            return refusal
        if any(used >= most for _p, most, used, _r in self._request_usage(user)):
            return _error(138009, "Call permission request limit reached for this user")
        wamid = "wamid.HBgM" + uuid.uuid4().hex.upper()
        user.requests.append(self.now())
        user.pending = wamid
        self.sent.append(body)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, **named("wa_id", to)}],
                "messages": [{"id": wamid}],
            }
        )

    def _check_interactive(self, interactive: Any, user: User) -> web.Response | None:
        kind = interactive.get("type") if isinstance(interactive, dict) else None
        if not isinstance(interactive, dict) or kind != "call_permission_request":
            return _error(100, "Invalid parameter interactive.type")
        extra = sorted(set(interactive) - {"type", "action", "body"})
        if extra:  # header, footer…: not allowed on this message
            return _error(100, f"Param interactive.{extra[0]} is not allowed")
        if interactive.get("action") != {"name": "call_permission_request"}:
            return _error(100, "Invalid parameter interactive.action.name")
        body = interactive.get("body", {"text": "-"})
        text = body.get("text") if isinstance(body, dict) and set(body) == {"text"} else None
        if not isinstance(text, str) or not 0 < len(text) <= 1024:
            return _error(100, "Param interactive.body takes text (1 to 1024 characters)")
        heard = user.last_inbound
        if heard is None or self.now() - heard >= DAY:
            return _error(
                131047,
                "Re-engagement message: more than 24 hours have passed since the recipient "
                "last replied",
            )
        return None

    def _voice_call_button(self, to: str, interactive: dict, user: User) -> web.Response:
        extra = sorted(set(interactive) - {"type", "action", "body", "header"})
        if extra:
            return _error(100, f"Param interactive.{extra[0]} is not allowed")
        text = (interactive.get("body") or {}).get("text")
        if not isinstance(text, str) or not 0 < len(text) <= 1024:
            return _error(100, "Param interactive.body.text is required (at most 1024 characters)")
        action = interactive.get("action")
        if not isinstance(action, dict) or action.get("name") != "voice_call":
            return _error(100, "Invalid parameter interactive.action.name")
        params = action.get("parameters") or {}
        limits = {"display_text": 20, "payload": 512}
        for name, most in limits.items():
            if name in params and (not isinstance(params[name], str) or len(params[name]) > most):
                return _error(100, f"Param action.parameters.{name} is too long")
        ttl = params.get("ttl_minutes", 10080)
        if not isinstance(ttl, int) or not 1 <= ttl <= 43200:
            return _error(100, "Param action.parameters.ttl_minutes must be 1-43200")
        heard = user.last_inbound
        if heard is None or self.now() - heard >= DAY:
            return _error(131047, "Re-engagement message: more than 24 hours have passed")
        self.buttons[to] = (str(params.get("payload") or ""), self.now() + ttl * 60)
        wamid = "wamid.HBgM" + uuid.uuid4().hex.upper()
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, **named("wa_id", to)}],
                "messages": [{"id": wamid}],
            }
        )

    def pressed_button(self, wa_id: str) -> str | None:
        """The payload of the user's live call button (``None``: none, or expired)."""
        payload, until = self.buttons.get(wa_id, ("", 0.0))
        return payload if self.now() < until else None

    def _check_template(self, template: Any) -> web.Response | None:
        if not isinstance(template, dict) or not isinstance(template.get("language"), dict):
            return _error(100, "The parameter template.language is required.")
        key = (template.get("name"), template["language"].get("code"))
        if key not in self.templates:
            return _error(132001, "Template name does not exist in the translation")
        return None

    def read(self, wa_id: str) -> dict[str, Any]:
        """``GET /call_permissions`` answer for ``wa_id``."""
        user = self.user(wa_id)
        permitted = self.permitted(wa_id)
        permission: dict[str, Any] = {"status": user.status if permitted else "no_permission"}
        if permitted and user.status == "temporary":
            permission["expiration_time"] = int(user.expires or 0)
        requests = [
            {
                "time_period": period,
                "max_allowed": most,
                "current_usage": used,
                **({"limit_expiration_time": int(resets)} if resets else {}),
            }
            for period, most, used, resets in self._request_usage(user)
        ]
        calls = [t for t in user.calls if t > self.now() - DAY]
        call_limit: dict[str, Any] = {
            "time_period": "PT24H",
            "max_allowed": self.call_limit,
            "current_usage": len(calls),
        }
        if calls:
            call_limit["limit_expiration_time"] = int(min(calls) + DAY)
        return {
            "messaging_product": "whatsapp",
            "permission": permission,
            "actions": [
                {
                    "action_name": "send_call_permission_request",
                    "can_perform_action": all(
                        r["current_usage"] < r["max_allowed"] for r in requests
                    ),
                    "limits": requests,
                },
                {
                    "action_name": "start_call",
                    "can_perform_action": permitted and len(calls) < self.call_limit,
                    "limits": [call_limit],
                },
            ],
        }

    # -- what users do (each returns the ``messages`` webhook value Meta would send)
    def _message(self, wa_id: str, **message: Any) -> dict[str, Any]:
        self.user(wa_id).last_inbound = self.now()
        item = {
            **named("from", wa_id),  # a user who shows no phone: from_user_id
            "id": "wamid.HBgM" + uuid.uuid4().hex.upper(),
            "timestamp": str(int(self.now())),
            **message,
        }
        return {"contacts": [contact(wa_id)], "messages": [item]}

    def user_id_changes(self, old: str, new: str) -> dict[str, Any]:
        """The user's BSUID changes: their permission goes with them (the ``messages``
        webhook value Meta sends)."""
        if old in self.users:
            self.users[new] = self.users.pop(old)
        return user_id_changed(old, new)

    def user_called(self, wa_id: str) -> None:
        """The user called the business: like a message, the call opens or refreshes their
        24 h service window (Meta's pricing: any inbound call does)."""
        self.user(wa_id).last_inbound = self.now()

    def user_writes(self, wa_id: str, text: str = "hi") -> dict[str, Any]:
        """The user sends a text: their service window opens."""
        return self._message(wa_id, type="text", text={"body": text})

    def _reply(self, wa_id: str, response: str, permanent: bool, source: str) -> dict[str, Any]:
        user = self.user(wa_id)
        user.answered = True
        reply: dict[str, Any] = {
            "response": response,
            "is_permanent": permanent,
            "response_source": source,
        }
        if response == "accept":
            user.status = "permanent" if permanent else "temporary"
            user.expires = None if permanent else self.now() + TEMPORARY_S
            if not permanent:
                reply["expiration_timestamp"] = int(user.expires or 0)
        else:
            user.status, user.expires = "no_permission", None
        context = {"from": self.business, "id": user.pending} if user.pending else None
        user.pending = None
        interactive = {"type": "call_permission_reply", "call_permission_reply": reply}
        extra = {"context": context} if context else {}
        return self._message(wa_id, type="interactive", interactive=interactive, **extra)

    def user_answers(self, wa_id: str, response: str, *, permanent: bool = False) -> dict[str, Any]:
        """The user taps accept or reject on our request (there must be one open)."""
        user = self.user(wa_id)
        assert user.pending is not None, "no open permission request to answer"
        assert user.requests and self.now() - user.requests[-1] < TEMPORARY_S, "it expired"
        return self._reply(wa_id, response, permanent, "user_action")

    def callback_grant(self, wa_id: str) -> dict[str, Any]:
        """The user called the business with callback permission on: 7 days, automatic."""
        return self._reply(wa_id, "accept", False, "automatic")

    def unanswered_call(self, wa_id: str) -> dict[str, Any] | None:
        """One more of our calls went unanswered or was rejected: the fourth in a row revokes
        the permission (an automatic reject); before that, nothing is sent."""
        user = self.user(wa_id)
        user.unanswered += 1
        if user.unanswered < 4:
            return None
        user.unanswered = 0
        return self._reply(wa_id, "reject", False, "automatic")
