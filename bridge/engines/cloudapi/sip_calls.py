"""What the SIP engine keeps per call, and what it reads from Meta's SIP messages: its
``x-wa-meta-*`` headers (Meta's SIP documentation; docs/engines/cloudapi.md, *What the bridge
does on the SIP road*), and a final response to our INVITE as an end reason
(:func:`bic_failure`), unless a ``Reason`` header (RFC 3326) names one of Meta's calling error
codes, which decides it as on Graph (:mod:`.codes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...countries import BSUID
from ...sip import Address, Dialog, InviteClient, InviteServer, Request, Response, SipParseError
from .codes import MetaCode, code_in_text
from .state import MetaCall

METADATA_HEADERS = {
    "x-wa-meta-cta-payload": "ctaPayload",
    "x-wa-meta-deeplink-payload": "deeplinkPayload",
    "x-wa-meta-user-id": "userId",
    "x-wa-meta-parent-user-id": "parentUserId",
    "x-wa-meta-username": "username",
}
"""Meta's INVITE headers copied into the call's metadata (under ``whatsapp``), by our name."""
WACID = re.compile(r"[A-Za-z0-9._:=+/\-]+")
META_CALL_ID_PREFIX = "outgoing:"
"""What the Call-ID of Meta's INVITE has before the call's wacid (Meta's SIP documentation)."""
METADATA_LIMIT = 1024
"""Longest header value copied into metadata."""


@dataclass
class SipCall(MetaCall):
    """The SIP road's view of one call (keyed by the engine call id)."""

    tx: InviteServer | None = None
    """Inbound: Meta's INVITE, answered on /call/answer."""
    uac: InviteClient | None = None
    """Outbound: our INVITE."""
    dialog: Dialog | None = None
    meta_wacid: str = ""
    """Outbound: Meta's wacid for the call, once a response to our INVITE named it (Meta's
    ``calls`` webhooks name the call by it; we key it by our own Call-ID)."""
    confirmed_at: float | None = None
    """When the dialog was confirmed (the ACK to our 200, or our ACK to Meta's)."""


def peer_number(req: Request) -> str:
    """The caller: their number (digits) from Meta's From (``sip:+<number>@wa.meta.vc``), else,
    for a user who shows no phone, their business-scoped user id (``x-wa-meta-user-id``, or
    the From's user when it is one); ``""`` when neither. A From whose user is not a number
    is never read as one (its digits are not the user's phone)."""
    try:
        user = Address.parse(req.get("From")).uri.user.split(";")[0]
    except SipParseError:
        user = ""
    digits = re.sub(r"[-.()]", "", user.removeprefix("+"))  # RFC 3966 visual separators
    if re.fullmatch(r"[0-9]+", digits):  # ASCII (str.isdigit also takes ² and ١)
        return digits[:20]
    named = (req.get("x-wa-meta-user-id").strip(), user.removeprefix("+"))
    return next((user_id for user_id in named if BSUID.match(user_id)), "")


def engine_call_id(req: Request) -> str:
    """``x-wa-meta-wacid`` (Meta's call id), else the wacid Meta's Call-ID carries
    (``outgoing:wacid.…``), else the Call-ID: the key the number's ``calls`` webhooks
    (``sip.webhook_delivery``) name the same call by."""
    wacid = meta_wacid(req)
    if wacid:
        return wacid
    inside = req.call_id.removeprefix(META_CALL_ID_PREFIX)
    if inside != req.call_id and inside.startswith("wacid.") and WACID.fullmatch(inside[:200]):
        return inside[:200]
    return req.call_id[:200]


def meta_wacid(msg: Request | Response) -> str:
    """Meta's call id in the message's ``x-wa-meta-wacid`` header; ``""`` when none (or not
    one: too long, or characters a wacid never has)."""
    wacid = msg.get("x-wa-meta-wacid").strip()
    return wacid if len(wacid) <= 200 and WACID.fullmatch(wacid) else ""


def invite_metadata(req: Request) -> dict[str, Any]:
    """Meta's headers worth an app's routing (``{"whatsapp": {...}}``; empty when none)."""
    found = {
        ours: req.get(header)[:METADATA_LIMIT]
        for header, ours in METADATA_HEADERS.items()
        if req.get(header)
    }
    return {"whatsapp": found} if found else {}


def call_duration(req: Request) -> int | None:
    raw = req.get("x-wa-meta-call-duration").strip()
    return int(raw) if re.fullmatch(r"[0-9]{1,8}", raw) else None  # ASCII: int refuses ²


def meta_code(msg: Request | Response) -> tuple[MetaCode | None, str]:
    """Meta's error code in the message's ``Reason`` header (RFC 3326), and the ``endDetail``
    to show for it (``"<code>: <header>"``)."""
    header = msg.get("Reason").strip()[:300]
    known = code_in_text(header) if header else None
    return known, (f"{known.code}: {header}" if known is not None else "")


def bic_failure(
    resp: Response, hostname: str, number: str, auth_failure: str = ""
) -> tuple[str, str]:
    """The end reason and log message for a final failure to our INVITE (``auth_failure``:
    why the digest round failed, as the UAC saw it, for a final ``407``)."""
    status = resp.status
    known, detail = meta_code(resp)
    if known is not None:
        return known.reason, f"Meta: {status} {resp.reason}, {detail} — {known.hint}"
    if status == 480 or status == 408:
        return "no_answer", f"Meta: {status} {resp.reason} (unreachable or not answered)"
    if status in (486, 600, 603):
        return "rejected", f"Meta: {status} {resp.reason} (the user rejected the call)"
    if status == 403:
        return "failed", (
            f"Meta refused our INVITE: 403 {resp.reason}. Our From is "
            f"sip:+{number}@{hostname}: BRIDGE_SIP_HOSTNAME must be the SIP server configured "
            "for the number at Meta (POST /{PHONE_NUMBER_ID}/settings, calling.sip.servers) "
            "and BRIDGE_SIP_NUMBER the number itself"
        )
    if status == 407:
        return "failed", auth_failure or "Meta: 407 and no digest round was possible"
    return "failed", f"Meta: {status} {resp.reason}"
