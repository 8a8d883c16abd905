"""Cloud API webhooks: signature, verification handshake, and the envelope's call events.

Meta signs every POST with ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the app
secret), checked in constant time before anything is parsed. :func:`call_events` flattens the
envelope's entries and changes, skipping (and counting) what lacks the documented shape;
:func:`webhook_calls` reads the same for a cluster's router.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import AtCapacity, BadRequest, Forbidden, Unauthorized, json_object
from ..base import EngineStats
from ..webhooks import WebhookCalls

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
ARTIFACT_EVENTS = {
    "call_recording_available": "recording",
    "call_transcription_available": "transcript",
}
"""The ``calls`` items that announce Meta's recording or transcript (``artifacts_wire.py``)."""
CREATED_EVENT = "call_created"
"""The ``calls`` item Meta's ``sip.webhook_delivery`` sends as a SIP number's call starts (no
SDP): the INVITE is the call, so it adds nothing here, as a ``connect`` there does."""
WEBHOOK_QUEUE = 256
"""Webhook bodies accepted but not yet worked through; a full queue answers 503 (Meta
retries)."""


def sign(secret: str, body: bytes) -> str:
    """The header value Meta sends for ``body`` (tests sign their webhooks with it)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not secret:
        return False
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "surrogateescape"))


def verify(query: Mapping[str, str], verify_token: str) -> str:
    """``GET /engine/webhook?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`` (Meta's
    webhook verification request): the challenge when the verify token matches, else 403."""
    mode = query.get("hub.mode", "")
    token = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge", "")
    expected = verify_token.encode()
    ok = hmac.compare_digest(expected, token.encode("utf-8", "surrogateescape"))
    if mode != "subscribe" or not ok or not expected:
        raise Forbidden("webhook verification refused: hub.verify_token does not match")
    return challenge


def check(
    secrets: tuple[str, ...], raw: bytes, headers: Mapping[str, str], stats: EngineStats
) -> dict[str, Any]:
    """A webhook POST as Meta sends it, parsed, or an error: 401 for a signature missing or
    made with none of ``secrets`` (nothing is looked at), 400 for a body that is not a JSON
    object with an ``entry`` list (counted in ``stats.bad_messages``)."""
    header = headers.get(SIGNATURE_HEADER)
    if not any(signature_ok(secret, raw, header) for secret in secrets):
        raise Unauthorized(
            "missing or invalid X-Hub-Signature-256 (HMAC-SHA256 of the body, app secret)"
        )
    try:
        body = json_object(raw)
    except BadRequest:
        stats.bad_messages += 1
        raise
    if not isinstance(body.get("entry"), list):
        stats.bad_messages += 1
        raise BadRequest("webhook body must be an object with an 'entry' list")
    return body


class WebhookInbox:
    """Meta's webhook POSTs, checked (:func:`check`), queued and answered at once, then worked
    through one at a time by :meth:`run` (Meta wants a quick 200 and does the work after)."""

    def __init__(self, secret: str, stats: EngineStats, size: int = WEBHOOK_QUEUE) -> None:
        self.secret = secret
        self.also: Callable[[], str] = str
        """Another app secret signatures are checked with: a retired engine's number's now
        (``also_signed_with``; rotated since the engine was built, Meta signs with it)."""
        self.stats = stats
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.accepted = 0

    def receive(self, raw: bytes, headers: Mapping[str, str]) -> None:
        """Take one POST (401/400 as :func:`check` says; 503 when the queue is full: Meta
        delivers again later)."""
        body = check((self.secret, self.also()), raw, headers, self.stats)
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:
            raise AtCapacity("too many webhooks waiting; deliver again later") from None
        self.accepted += 1

    async def run(self, handle: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Hand each queued body to ``handle`` (the engine's owned task)."""
        while True:
            body = await self.queue.get()
            try:
                await handle(body)
            except Exception:  # one bad body must not stop the webhooks
                log.exception("handling a Cloud API webhook")


LATEST_TIME = 253_402_300_799
"""9999-12-31T23:59:59Z in Unix seconds: the latest time a date holds."""


def unix_time(value: Any) -> int | None:
    """A time field of Meta's JSON in Unix seconds (:func:`whole_number`); ``None`` for none,
    or for one no date holds (milliseconds, say: stored as given, it failed every later use
    of it, each dial from a paused number a 500)."""
    seconds = whole_number(value)
    return seconds if seconds is not None and 0 < seconds <= LATEST_TIME else None


def text(value: Any) -> str:
    """A string field of Meta's JSON (an id sent as a number read as its digits); else ``""``."""
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else ""


def whole_number(value: Any) -> int | None:
    """A whole-number field of Meta's JSON (a number with no fraction, or digits in a string);
    else ``None`` (a fraction, NaN or infinity is no code or count)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


@dataclass(frozen=True)
class CallWebhook:
    """One item of ``value.calls`` (connect or terminate) or ``value.statuses``."""

    kind: str  # "connect", "terminate" or "status"
    wacid: str
    direction: str = ""
    peer: str = ""  # the user's wa_id
    sdp_type: str = ""
    sdp: str = ""
    status: str = ""
    opaque: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    duration: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    """What Meta says of the user's context (``{"whatsapp": {ctaPayload, deeplinkPayload,
    userId, parentUserId, username}}``, the names the SIP road uses; empty when none)."""

    @property
    def new_call(self) -> bool:
        """A user's new call: a ``connect`` carrying the user's SDP offer."""
        offered = self.sdp_type == "offer"
        return self.kind == "connect" and self.direction == "USER_INITIATED" and offered


def changes(body: Mapping[str, Any], *fields: str) -> Iterator[tuple[str, Any]]:
    """``(field, value)`` of every change of a webhook body's entries whose ``field`` is one of
    ``fields`` (Meta's envelope: ``{"entry": [{"changes": [{"field", "value"}]}]}``)."""
    entries = body.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        found = entry.get("changes") if isinstance(entry, dict) else None
        for change in found if isinstance(found, list) else []:
            if isinstance(change, dict) and change.get("field") in fields:
                yield str(change["field"]), change.get("value")


def about_number(change: Any) -> str:
    """The Meta number (``phone_number_id``) a change of a webhook body is about: its
    ``metadata``'s, or an ``account_settings_update``'s ``phone_number_settings``'; ``""``
    when it names none (an ``account_update`` names the number's phone)."""
    value = change.get("value") if isinstance(change, dict) else None
    for holder in ("metadata", "phone_number_settings"):
        named = value.get(holder) if isinstance(value, dict) else None
        if isinstance(named, dict) and named.get("phone_number_id"):
            return text(named["phone_number_id"])
    return ""


def for_number(body: dict[str, Any], meta_id: str) -> dict[str, Any]:
    """``body`` with only the changes about number ``meta_id`` and those naming none: one POST
    may carry changes of several numbers of the app, each naming its own (Meta Cloud API
    Calling: webhooks), and each number's engine takes its own (``meta_id`` empty: all)."""
    entries = body.get("entry")
    if not meta_id or not isinstance(entries, list):
        return body
    kept = []
    for entry in entries:
        found = entry.get("changes") if isinstance(entry, dict) else None
        if isinstance(found, list):
            entry = {**entry, "changes": [c for c in found if about_number(c) in ("", meta_id)]}
        kept.append(entry)
    return {**body, "entry": kept}


def call_events(body: dict[str, Any]) -> tuple[list[CallWebhook], int]:
    """Every call event of a webhook body, in order, and how many items were malformed."""
    out: list[CallWebhook] = []
    bad = 0
    for _, value in changes(body, "calls"):
        if not isinstance(value, dict):
            bad += 1
            continue
        calls = value.get("calls")
        for item in calls if isinstance(calls, list) else []:
            if isinstance(item, dict) and text(item.get("event")) in ARTIFACT_EVENTS:
                continue  # Meta's recording or transcript: ``artifacts_wire``'s
            if isinstance(item, dict) and text(item.get("event")) == CREATED_EVENT:
                continue  # known, and nothing to do
            event = _call_item(item, value)
            if event is None:
                bad += 1
            else:
                out.append(event)
        statuses = value.get("statuses")
        for item in statuses if isinstance(statuses, list) else []:
            if (
                not isinstance(item, dict)
                or not text(item.get("id"))
                or not text(item.get("status"))
            ):
                bad += 1
                continue
            out.append(
                CallWebhook(
                    kind="status",
                    wacid=text(item.get("id")),
                    status=text(item.get("status")).upper(),
                    peer=text(item.get("recipient_id")) or text(item.get("recipient_user_id")),
                    opaque=text(item.get("biz_opaque_callback_data")),
                )
            )
    return out, bad


def webhook_calls(raw: bytes) -> WebhookCalls:
    """The calls a raw webhook body names (connects, terminates and statuses name the call by
    the same id), and whether it offers a new call; nothing for a malformed body."""
    try:
        body = json_object(raw)
    except BadRequest:
        return WebhookCalls()
    events, _bad = call_events(body)
    return WebhookCalls(
        engine_call_ids=tuple(ev.wacid for ev in events),
        new_call=any(ev.new_call for ev in events),
    )


CONTEXT_FIELDS = {
    "cta_payload": "ctaPayload",
    "deeplink_payload": "deeplinkPayload",
    "from_user_id": "userId",
    "from_parent_user_id": "parentUserId",
}
"""A connect item's fields copied into the call's metadata (as the SIP road's ``x-wa-meta-*``
headers): the button or link the user pressed, and the user's business-scoped user id."""
CONTACT_FIELDS = {"user_id": "userId", "parent_user_id": "parentUserId"}
CONTEXT_LIMIT = 1024


def _context(item: dict[str, Any], value: dict[str, Any], user: str) -> dict[str, Any]:
    """The caller's context (Meta Cloud API Calling: user-initiated calls; Business-scoped
    user IDs: ``user_id`` and ``profile.username`` in ``contacts``)."""
    found = {ours: text(item.get(theirs)) for theirs, ours in CONTEXT_FIELDS.items()}
    contacts = value.get("contacts")
    for contact in contacts if isinstance(contacts, list) else []:
        if not isinstance(contact, dict) or user not in (
            text(contact.get("wa_id")),
            text(contact.get("user_id")),
        ):
            continue
        for theirs, ours in CONTACT_FIELDS.items():
            found[ours] = found.get(ours) or text(contact.get(theirs))
        profile = contact.get("profile")
        if isinstance(profile, dict):
            found["username"] = text(profile.get("username"))
    kept = {k: v[:CONTEXT_LIMIT] for k, v in found.items() if v}
    return {"whatsapp": kept} if kept else {}


def _duration(item: dict[str, Any]) -> int | None:
    """A terminate's connected seconds: its ``duration`` (a number, or its digits in a string
    as Meta's times are), else ``end_time`` less ``start_time`` when Meta gave both (each is
    optional); the pulses a business-initiated call is billed are counted from it."""
    duration = whole_number(item.get("duration"))
    if duration is None:
        start, end = unix_time(item.get("start_time")), unix_time(item.get("end_time"))
        duration = end - start if start is not None and end is not None else None
    return duration if duration is not None and duration >= 0 else None


def _call_item(item: Any, value: dict[str, Any]) -> CallWebhook | None:
    if not isinstance(item, dict):
        return None
    wacid = text(item.get("id"))
    kind = text(item.get("event"))
    if not wacid or kind not in ("connect", "terminate"):
        return None
    session = item.get("session") if isinstance(item.get("session"), dict) else {}
    assert isinstance(session, dict)
    raw_errors = item.get("errors") or value.get("errors")
    errors = [e for e in raw_errors if isinstance(e, dict)] if isinstance(raw_errors, list) else []
    direction = text(item.get("direction")).upper()
    if direction == "USER_INITIATED":  # a user who shows no phone is named by BSUID alone
        peer = text(item.get("from")) or text(item.get("from_user_id"))
    else:
        peer = text(item.get("to")) or text(item.get("to_user_id"))
    new = kind == "connect" and direction == "USER_INITIATED"
    return CallWebhook(
        kind=kind,
        wacid=wacid,
        direction=direction,
        peer=peer,
        sdp_type=text(session.get("sdp_type")),
        sdp=text(session.get("sdp")),
        status=text(item.get("status")).upper(),
        opaque=text(item.get("biz_opaque_callback_data")),
        errors=errors[:10],
        duration=_duration(item),
        metadata=_context(item, value, peer) if new else {},
    )
