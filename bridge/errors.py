"""Flat domain exceptions. Core code raises these; ``api/`` alone maps them to HTTP.

:func:`json_object` is the one reader of a JSON object body or text message (the API's requests,
every engine's webhooks, the PCM socket's, a fork's and the agent socket's messages): it answers
:class:`BadRequest` (``invalid_json``), which the API turns into a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any


class BridgeError(Exception):
    """Base of every domain error. ``code`` is the snake_case error code clients see."""

    code = "bridge_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(BridgeError):
    """The request is malformed (bad JSON, missing or invalid field)."""

    code = "bad_request"


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: half of a UTF-16 pair, or a lone one."""


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def json_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object from a body or a WebSocket text message, or :class:`BadRequest`
    (``invalid_json``) saying why not: not JSON, nested too deeply, ``NaN`` or ``Infinity``
    (Python's extension: a receiver of the events it would reach cannot parse them), or a
    string holding a lone UTF-16 surrogate (no UTF-8 encodes it: a path, a header or an SDP
    made of it failed deep inside a handler)."""
    if not raw.strip():
        raise BadRequest("a JSON object body is required", code="invalid_json")
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    if _SURROGATE_ESCAPE.search(text):  # rare: only then is the whole body encoded again
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadRequest(
                "body is not valid JSON: a string holds a lone UTF-16 surrogate",
                code="invalid_json",
            ) from None
    return body


class UnreadableBody(BadRequest):
    """The request body cannot be read as sent (a ``Content-Encoding`` it is not in, a
    broken chunk): its framing is lost, so the connection closes after the answer."""

    code = "bad_encoding"


class BodyTimeout(BridgeError):
    """The client did not send its whole request body in time (``BRIDGE_BODY_TIMEOUT``)."""

    code = "body_timeout"


class Unauthorized(BridgeError):
    code = "unauthorized"


class CallNotFound(BridgeError):
    code = "call_not_found"


class NotFound(BridgeError):
    """Something other than a call (an asset, a recording, a playback) does not exist."""

    code = "not_found"


class Forbidden(BridgeError):
    """The request is understood but not allowed (e.g. a URL outside the allow-list)."""

    code = "forbidden"


class RecordingForbidden(Forbidden):
    """The call's number or tenant says ``"recording": "forbidden"``: no recording of any
    kind (the bridge's, ``BRIDGE_RECORD_ALL``, Meta's) is made."""

    code = "recording_forbidden"


class CallStateError(BridgeError):
    """The call is not in a state that allows the operation (an illegal transition)."""

    code = "invalid_call_state"


class Conflict(BridgeError):
    """The request clashes with what exists (a phone or Meta number id already taken)."""

    code = "conflict"


class NotOwner(Conflict):
    """A worker lost the compare-and-set on a call's ownership in the directory: the call is
    another worker's (a handover whose old worker gave up on this one first, an inbound call
    whose placing worker rang it itself). The loser lets go without a word to the engine."""

    code = "not_owner"


class BadOffer(BridgeError):
    """The SDP offer cannot be parsed or answered."""

    code = "bad_offer"


class TooLarge(BridgeError):
    code = "too_large"


class AtCapacity(BridgeError):
    code = "at_capacity"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(BridgeError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineError(BridgeError):
    """The WhatsApp engine refused or failed an operation."""

    code = "engine_error"


class EngineUnavailable(EngineError):
    """The engine cannot be reached (or is not enabled)."""

    code = "engine_unavailable"


class PeerUnreachable(EngineError):
    """The engine could not reach the WhatsApp peer."""

    code = "peer_unreachable"


class EngineCallNotFound(EngineError):
    """The engine does not know the call."""

    code = "call_not_found"


class GraphApiError(EngineError):
    """Meta's Graph API refused a call action; ``details`` carries Meta's code, subcode and
    message (they go into the JSON error body)."""

    code = "engine_error"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class NoCallPermission(Forbidden):
    """Meta's 138006: the business may not call this WhatsApp user (no call permission)."""

    code = "no_call_permission"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class MetaLimit(RateLimited):
    """Meta refused because of one of its limits (138009 permission requests, 138012 calls
    with one user, 138002 the number's concurrent calls): 429 with ``Retry-After``; ``code``
    names the limit, ``details`` carry Meta's code and message and, when known, ``retryAt``
    (when the next request is allowed)."""

    code = "meta_limit"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retry_after: int = 60,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code
        self.details = details or {}


class MetaRefused(GraphApiError):
    """Meta refused a call action with a code the bridge maps (``code`` names it:
    ``setup_failed``, ``wrong_signalling``…): 502, Meta's code and message in ``details``."""

    def __init__(
        self, message: str, *, code: str, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.code = code


class MetaForbidden(Forbidden):
    """Meta will not take the request from this number for now (138014 business-initiated
    calling paused after a quality penalty, 138015 messaging limit too low for calling): 403,
    ``code`` naming why, Meta's code and message in ``details``, ``Retry-After`` when the end
    of the pause is known (``retry_after`` seconds)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        retry_after: int | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.details = details or {}


class MetaSettingsRefused(BadRequest):
    """Meta refused a number's settings: 400, Meta's code and message in ``details``."""

    code = "settings_refused"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class CallInProgress(CallStateError):
    """The business already has a call with this user (Meta allows one at a time): 409."""

    code = "call_in_progress"


class ShuttingDown(BridgeError):
    code = "shutting_down"


class DirectoryUnavailable(BridgeError):
    """The shared call directory (Redis) cannot be reached: no new calls until it is back.
    ``sent``: a command went out and its answer was lost or refused: what it asked may have
    been done (one refused before it went, the directory known away, was not)."""

    code = "directory_unavailable"

    def __init__(self, message: str, *, code: str | None = None, sent: bool = False) -> None:
        super().__init__(message, code=code)
        self.sent = sent


class Undecided(DirectoryUnavailable):
    """Who carries a moved call cannot be told: its new owner's take-over may have landed,
    and the directory did not answer its give-back either (``calls/takeover.py``)."""


class ReplayUnavailable(BridgeError):
    """The events a client resuming with ``Last-Event-ID`` missed cannot be read: the events
    log (Redis) is away and this worker's ring of events does not reach back to the id. The
    event stream says so (``replay.unavailable``) and ends; never an HTTP status."""

    code = "replay_unavailable"


class OwnerUnreachable(BridgeError):
    """The worker that owns a call did not answer a forwarded request. ``sent``: the request
    reached it (a connection made, then no answer in time or a connection lost): what it
    asked may have been done there."""

    code = "owner_unreachable"

    def __init__(self, message: str, *, code: str | None = None, sent: bool = False) -> None:
        super().__init__(message, code=code)
        self.sent = sent


class StorageFailed(BridgeError):
    """The bridge's own disk failed a file a request needs (full, read-only): ``503``."""

    code = "storage_failed"


class NotImplementedYet(BridgeError):
    """A documented feature whose pieces are not in this build yet (``501``)."""

    code = "not_implemented"
