"""Call permissions on the wire (Meta's "user call permissions" documentation): the request
message, the permission Meta reads back, and the user's ``call_permission_reply``.

- Ask: ``POST /{PHONE_NUMBER_ID}/messages``: inside the 24 h service window an ``interactive``
  ``call_permission_request``, outside it an approved template with a call-permission request.
- Read: ``GET /{PHONE_NUMBER_ID}/call_permissions?user_wa_id=…`` → ``permission`` {``status``,
  ``expiration_time``} and ``actions[]`` with their ``limits[]``.
- Hear: a ``messages`` webhook whose message is an ``interactive`` ``call_permission_reply``
  (``response``, ``is_permanent``, ``expiration_timestamp``, ``response_source``). Any message
  from a user also opens or refreshes that user's service window.
- A user without a phone number is addressed by their BSUID (``recipient`` for ``to``,
  ``?recipient=`` for ``?user_wa_id=``, ``from_user_id`` for ``from``); a ``system`` message
  ``user_changed_user_id`` gives their new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ...timefmt import iso_utc
from .graph import addressed
from .webhook import changes, unix_time, whole_number

START_CALL = "start_call"
SEND_REQUEST = "send_call_permission_request"


def _message(user: str, kind: str, content: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/messages`` body of type ``kind`` to ``user``."""
    base = {"messaging_product": "whatsapp", "recipient_type": "individual", **addressed(user)}
    return {**base, "type": kind, kind: content}


def request_message(
    phone: str, template: Mapping[str, str] | None, text: str = ""
) -> dict[str, Any]:
    """The ``/messages`` body: the named template when given, else the interactive request,
    with ``text`` as its body when given (Meta takes an optional ``body``, no header or
    footer)."""
    if template is not None:
        language = {"code": template["language"]}
        return _message(phone, "template", {"name": template["name"], "language": language})
    interactive: dict[str, Any] = {
        "type": "call_permission_request",
        "action": {"name": "call_permission_request"},
    }
    if text:
        interactive["body"] = {"text": text}
    return _message(phone, "interactive", interactive)


def call_button_message(phone: str, button: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/messages`` body of Meta's "Call on WhatsApp" button (an ``interactive``
    ``voice_call``: ``body.text``, ``parameters`` ``display_text``, ``ttl_minutes``,
    ``payload``, which Meta gives back as the call's ``cta_payload``) from the API's
    ``{text, buttonText, ttlMinutes, payload}``."""
    names = {"buttonText": "display_text", "ttlMinutes": "ttl_minutes", "payload": "payload"}
    parameters = {theirs: button[ours] for ours, theirs in names.items() if ours in button}
    interactive = {
        "type": "voice_call",
        "body": {"text": button["text"]},
        "action": {"name": "voice_call", "parameters": parameters},
    }
    return _message(phone, "interactive", interactive)


def message_id(answer: Mapping[str, Any]) -> str:
    """``messages[0].id`` of Meta's answer to ``/messages`` (``""`` when absent)."""
    messages = answer.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        return str(messages[0].get("id") or "")
    return ""


def _iso(value: Any) -> str | None:
    seconds = unix_time(value)
    return iso_utc(seconds) if seconds else None


def permission_view(phone: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """Meta's ``call_permissions`` answer as the API shows it: ``status``, ``expiresAt``,
    ``canCall``, ``canRequest`` and every action's ``limits`` (with when each resets)."""
    permission = answer.get("permission")
    permission = permission if isinstance(permission, Mapping) else {}
    can: dict[str, bool] = {}
    limits: list[dict[str, Any]] = []
    actions = answer.get("actions")
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, Mapping):
            continue
        name = str(action.get("action_name") or "")
        can[name] = action.get("can_perform_action") is True
        raw = action.get("limits")
        for limit in raw if isinstance(raw, list) else []:
            if isinstance(limit, Mapping):
                limits.append(
                    {
                        "action": name,
                        "timePeriod": str(limit.get("time_period") or ""),
                        "maxAllowed": whole_number(limit.get("max_allowed")),
                        "currentUsage": whole_number(limit.get("current_usage")),
                        "resetsAt": _iso(limit.get("limit_expiration_time")),
                    }
                )
    return {
        "phone": phone,
        "status": str(permission.get("status") or "no_permission"),
        "expiresAt": _iso(permission.get("expiration_time")),
        "canCall": can.get(START_CALL, False),
        "canRequest": can.get(SEND_REQUEST, False),
        "limits": limits,
    }


def next_allowed(view: Mapping[str, Any], action: str) -> str | None:
    """When ``action`` is allowed again: the latest reset among its used-up limits (ISO)."""
    times = [
        limit["resetsAt"]
        for limit in view.get("limits", [])
        if limit["action"] == action
        and limit["resetsAt"]
        and limit["maxAllowed"] is not None
        and (limit["currentUsage"] or 0) >= limit["maxAllowed"]
    ]
    return max(times) if times else None


@dataclass(frozen=True)
class PermissionReply:
    """A user's answer to a call-permission request (the ``call.permission`` event)."""

    phone: str  # "" when Meta gave no phone (a user with a username)
    response: str  # accept | reject
    permanent: bool
    expires_at: str | None
    source: str  # user_action | automatic
    user_id: str = ""  # the user's BSUID, when Meta gave it

    @property
    def user(self) -> str:
        """Who the bridge keeps the answer under: the phone, else the BSUID."""
        return self.phone or self.user_id

    def event(self) -> dict[str, Any]:
        return {
            "phone": self.phone or None,  # a user who shows no phone: named by userId
            **({"userId": self.user_id} if self.user_id else {}),
            "response": self.response,
            "permanent": self.permanent,
            "expiresAt": self.expires_at,
            "source": self.source,
        }


class UserMoved(NamedTuple):
    """``user_changed_user_id``: the user once known as ``old`` (a BSUID) is ``new`` now."""

    old: str
    new: str


class MessagesHeard(NamedTuple):
    """What a webhook body's ``messages`` changes say (see :func:`messages_events`)."""

    replies: list[PermissionReply]
    senders: list[tuple[str, int | None]]
    """Each user heard from, and when they wrote (the message's ``timestamp``, Unix s)."""
    moves: list[UserMoved]
    bad: int


def _sender(message: Mapping[str, Any]) -> tuple[str, str]:
    """A message's user: their phone (``from``, digits) and their BSUID (``from_user_id``);
    either may be missing, not both."""
    phone, user_id = message.get("from"), message.get("from_user_id")
    phone = phone if isinstance(phone, str) and phone.isdigit() else ""
    user_id = user_id if isinstance(user_id, str) and 0 < len(user_id) <= 200 else ""
    return phone, user_id


def _moved(message: Mapping[str, Any]) -> UserMoved | None:
    """A ``user_changed_user_id`` system message's move (``None`` for any other message)."""
    system = message.get("system")
    if message.get("type") != "system" or not isinstance(system, dict):
        return None
    if system.get("type") != "user_changed_user_id":
        return None
    old, new = message.get("from_user_id"), system.get("user_id")
    if isinstance(old, str) and isinstance(new, str) and old and new and old != new:
        return UserMoved(old, new)
    return None


def messages_events(body: Mapping[str, Any]) -> MessagesHeard:
    """From a webhook body's ``messages`` changes: the permission replies, the users heard
    from (their service window opens: the phone, else the BSUID) with when they wrote (a
    webhook Meta delivers again, or late, is about a message written then), the users whose
    BSUID changed, and how many items were malformed."""
    replies: list[PermissionReply] = []
    senders: list[tuple[str, int | None]] = []
    moves: list[UserMoved] = []
    bad = 0
    for _, value in changes(body, "messages"):
        messages = value.get("messages") if isinstance(value, dict) else None
        for message in messages if isinstance(messages, list) else []:
            if not isinstance(message, dict):
                bad += 1
                continue
            if (move := _moved(message)) is not None:
                moves.append(move)  # not the user writing: no window opens
                continue
            phone, user_id = _sender(message)
            if not phone and not user_id:
                bad += 1
                continue
            senders.append((phone or user_id, unix_time(message.get("timestamp"))))
            interactive = message.get("interactive")
            if not isinstance(interactive, dict):
                continue
            if interactive.get("type") != "call_permission_reply":
                continue
            reply = _reply(phone, user_id, interactive.get("call_permission_reply"))
            if reply is None:
                bad += 1
            else:
                replies.append(reply)
    return MessagesHeard(replies, senders, moves, bad)


def _reply(phone: str, user_id: str, raw: Any) -> PermissionReply | None:
    if not isinstance(raw, dict) or raw.get("response") not in ("accept", "reject"):
        return None
    source = raw.get("response_source")
    return PermissionReply(
        phone=phone,
        user_id=user_id,
        response=str(raw["response"]),
        permanent=raw.get("is_permanent") is True,
        expires_at=_iso(raw.get("expiration_timestamp")),
        source=source if source in ("user_action", "automatic") else "user_action",
    )
