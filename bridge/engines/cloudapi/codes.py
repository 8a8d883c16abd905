"""Meta's calling error codes and what the bridge makes of them.

Meta reports why a call failed with a code: in a ``terminate`` webhook's ``errors[]``, a Graph
API error, or a SIP ``Reason`` header (RFC 3326). Each code becomes an end reason a person can
act on, with Meta's code and message in the call's ``endDetail``; a refused request becomes a
4xx naming the reason. The codes are Meta's calling troubleshooting reference's; the hints are
ours, printed in docs/engines/cloudapi.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import MetaLimit, MetaRefused
from ..base import EngineEvent, EngineEventKind
from .webhook import whole_number

if TYPE_CHECKING:
    from .webhook import CallWebhook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaCode:
    """One of Meta's calling error codes."""

    code: int
    reason: str
    """The call's end reason (and the API error code when Meta refuses a request)."""
    meaning: str
    hint: str
    """What a person can do about it."""
    status: int = 502
    """The HTTP status of an API request Meta refused with this code (429: a limit, with
    ``Retry-After``; 403: Meta will not take it from this number for now)."""


META_CODES: dict[int, MetaCode] = {
    c.code: c
    for c in (
        MetaCode(
            138006,
            "no_call_permission",
            "no permission to call this user",
            "ask first: POST /call/permissions, then call once call.permission says accept",
            403,
        ),
        MetaCode(
            138009,
            "permission_request_limit",
            "permission-request limit reached (1 per 24 h, 2 per 7 days per user)",
            "wait until retryAt (GET /call/permissions/{phone} shows the limits); a call "
            "that connects with the user resets them",
            429,
        ),
        MetaCode(
            138012,
            "call_limit_reached",
            "connected business-initiated call limit with this user reached (per 24 h)",
            "wait until retryAt; the current limit is in GET /call/permissions/{phone}",
            429,
        ),
        MetaCode(
            138002,
            "number_at_capacity",
            "concurrent-call limit of the business number reached (1 000)",
            "spread calls over more numbers or wait for calls to end",
            429,
        ),
        MetaCode(
            138014,
            "calling_paused",
            "business-initiated calling paused for this number after a quality penalty",
            "user-initiated calls still work; wait for the pause to end (GET /numbers/{numberID} "
            "shows until when) and improve call quality: fewer unanswered or rejected calls",
            403,
        ),
        MetaCode(
            138015,
            "messaging_limit_too_low",
            "calling needs a messaging limit of at least 2 000 business-initiated "
            "conversations a day",
            "raise the number's messaging limit at Meta (quality and verified business), "
            "then call again",
            403,
        ),
        MetaCode(
            613,
            "meta_rate_limit",
            "too many Graph API requests (rate limit)",
            "slow down: retry after Retry-After seconds",
            429,
        ),
        MetaCode(
            138007,
            "setup_failed",
            "connect timeout: the SDP was not applied in time",
            "the bridge answered too late: check its load and its Graph API latency",
        ),
        MetaCode(
            138019,
            "setup_failed",
            "call set-up failed",
            "retry; if it repeats, check the number's calling settings at Meta",
        ),
        MetaCode(
            138020,
            "relay_failed",
            "relay connection failed",
            "Meta's media relay could not reach the bridge: open the UDP media ports "
            "(BRIDGE_RTP_PORTS) to the internet and check BRIDGE_ICE_ADDRESSES",
        ),
        MetaCode(
            138021,
            "media_timeout",
            "media receive timeout: Meta received no media from the business",
            "the bridge's packets did not reach Meta: check the UDP path and the firewall",
        ),
        MetaCode(
            138022,
            "media_timeout",
            "media transmit timeout",
            "Meta's packets did not reach the bridge: check the UDP path and the firewall",
        ),
        MetaCode(
            138023,
            "no_media",
            "the call was accepted but no media flowed",
            "ICE or DTLS did not complete after accept: check the media ports and any NAT",
        ),
        MetaCode(
            131055,
            "wrong_signalling",
            "Graph calling used on a number with SIP enabled",
            "the number is set to SIP at Meta: set BRIDGE_CLOUDAPI_SIGNALLING=sip, or "
            "disable SIP for the number",
        ),
    )
}
"""Every code the bridge maps, by number."""

# Meta's call statuses, as the table "Meta's call status → the bridge" of
# docs/engines/cloudapi.md says (tests/unit/test_call_status_table.py reads it). REJECTED is
# ``rejected``: in the bridge's words the peer did not take our call (``declined`` is the
# business declining a user's call).
TERMINATE_STATUS = {"COMPLETED": "remote_hangup", "REJECTED": "rejected", "FAILED": "failed"}
CALL_STATUS = {
    "RINGING": (EngineEventKind.RINGING, ""),
    "ACCEPTED": (EngineEventKind.ANSWERED, ""),
    "REJECTED": (EngineEventKind.ENDED, "rejected"),
}
"""A ``statuses`` item of a business-initiated call: the engine event it becomes and its end
reason (a status not here is not acted on)."""
_CODE_RE = re.compile(r"\b(13[18]\d{3})\b")


def first_known(errors: Iterable[Mapping[str, Any]]) -> tuple[MetaCode | None, str]:
    """The first of ``errors`` (Meta's ``{"code", "message", "error_data"}`` items) with a code
    the bridge maps, and the detail to show: ``"<code>: <message>"`` of that error, or of the
    first one when none is known (``""`` for none at all)."""
    detail = ""
    for error in errors:
        code = whole_number(error.get("code"))
        message = str(error.get("message") or error.get("title") or "")[:300]
        data = error.get("error_data")
        if isinstance(data, Mapping) and data.get("details"):
            more = str(data["details"])[:200]
            message = f"{message} ({more})" if message else more
        here = f"{code}: {message}" if code is not None else message
        if code in META_CODES:
            return META_CODES[code], here
        detail = detail or here
    return None, detail


def terminate_reason(
    status: str, errors: Iterable[Mapping[str, Any]], *, answered: bool, outbound: bool
) -> tuple[str, str]:
    """The end reason and ``endDetail`` of a ``terminate`` webhook. A known code wins; else
    ``COMPLETED`` is ``remote_hangup`` once answered, ``no_answer`` for our unanswered call and
    ``""`` (the manager's own reason: the caller gave up) for a user's; ``REJECTED`` is
    ``rejected``; ``FAILED`` without a known code stays ``failed``."""
    known, detail = first_known(errors)
    if known is not None:
        return known.reason, detail
    reason = TERMINATE_STATUS.get(status, "failed" if status else "")
    if reason == "remote_hangup" and not answered:
        reason = "no_answer" if outbound else ""
    return reason, detail


def code_in_text(text: str) -> MetaCode | None:
    """A mapped Meta code quoted in free text (a SIP ``Reason`` header's ``text=``)."""
    for match in _CODE_RE.finditer(text):
        known = META_CODES.get(int(match.group(1)))
        if known is not None:
            return known
    return None


def ended_by_meta(
    wacid: str, ev: CallWebhook, *, answered: bool, outbound: bool, said: bool = False
) -> EngineEvent:
    """The ``ENDED`` event of a ``terminate`` webhook: the reason and ``endDetail`` of
    :func:`terminate_reason`, Meta's status, errors and duration as the event's data; a failure
    is logged at WARNING with its hint (once: a redelivered terminate finds the call ended),
    unless the caller says it (``said``)."""
    # A duration says the call was connected, even when its ACCEPTED is still on its way
    # (Meta's webhooks come out of order).
    answered = answered or (ev.duration or 0) > 0
    reason, detail = terminate_reason(ev.status, ev.errors, answered=answered, outbound=outbound)
    known, _detail = first_known(ev.errors)
    data: dict[str, Any] = {"engineStatus": ev.status}
    if ev.errors:
        data["errors"] = ev.errors
    if ev.duration is not None:
        data["engineDurationS"] = ev.duration
    if (ev.status == "FAILED" or ev.errors) and not said:
        log.warning(
            "Cloud API call %s: Meta ended it %s (%s): %s%s",
            wacid,
            ev.status,
            reason or "unanswered",
            detail or "no error given",
            f" — {known.hint}" if known is not None else "",
        )
    return EngineEvent(EngineEventKind.ENDED, wacid, reason=reason, data=data, detail=detail)


def refused_event(wacid: str, exc: MetaLimit | MetaRefused) -> EngineEvent:
    """The ``ENDED`` event of a call Meta refused an action of (its reason and detail)."""
    detail = f"{exc.details.get('metaCode')}: {exc.details.get('metaMessage')}"
    return EngineEvent(EngineEventKind.ENDED, wacid, reason=exc.code, detail=detail)
