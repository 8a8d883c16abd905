"""The Graph API requests of Cloud API Calling: ``POST /{PHONE_NUMBER_ID}/calls`` with an
action, and (for call permissions) ``POST /{PHONE_NUMBER_ID}/messages`` and ``GET
/{PHONE_NUMBER_ID}/call_permissions``.

Meta's errors (``{"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}``)
become the bridge's by their code (``_graph_error``: 138006 → :class:`NoCallPermission`,
Meta's limits → :class:`MetaLimit`, a pause → :class:`MetaForbidden`, other known codes →
:class:`MetaRefused`, the rest :class:`GraphApiError`), each with Meta's code, subcode and
message; no answer at all is :class:`EngineUnavailable` (503).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from typing import Any

import aiohttp

from ...errors import (
    EngineError,
    EngineUnavailable,
    GraphApiError,
    MetaForbidden,
    MetaLimit,
    MetaRefused,
    NoCallPermission,
)
from ...http import retry_after
from ..base import EngineStats
from ..http import http_json
from .codes import META_CODES

log = logging.getLogger(__name__)

NO_CALL_PERMISSION = 138006
TIMEOUT = aiohttp.ClientTimeout(total=10, connect=3)
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=3)
MEDIA_MAX_BYTES = 64 * 1024 * 1024
"""The largest recording or transcript fetched from Meta."""
LONGEST_WAIT = 7 * 86400
"""Seconds: the longest ``Retry-After`` of Meta's taken as it is (a longer one is this)."""


class GraphClient:
    """Posts call actions for one business number."""

    def __init__(self, base: str, token: str, phone_number_id: str, stats: EngineStats) -> None:
        self.phone_number_id = phone_number_id
        self.base = base
        self._headers = {"Authorization": f"Bearer {token}"}
        self.stats = stats
        self.http: aiohttp.ClientSession | None = None
        self.reachable: bool | None = None
        self.detail = "no request yet"

    async def call_action(self, action: str, **fields: Any) -> dict[str, Any]:
        """One call action; returns Meta's JSON object answer."""
        body = {"messaging_product": "whatsapp", "action": action, **fields}
        return await self.request("POST", "calls", action, body)

    async def request(
        self,
        method: str,
        edge: str,
        what: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``method /{PHONE_NUMBER_ID}/{edge}``; Meta's JSON object answer, or the errors the
        module docstring lists (``what`` names the request in them)."""
        assert self.http is not None, "engine not started"
        resp, text, answer = await http_json(
            self.http,
            self.stats,
            method,
            f"{self.base.rstrip('/')}/{self.phone_number_id}/{edge}",
            where=f"the Graph API at {self.base}",
            down=self._down,
            json=body,
            params=params,
            headers=self._headers,
            timeout=TIMEOUT,
        )
        self.reachable, self.detail = True, "reachable"
        answer = {} if answer is None else answer
        if resp.status >= 400 or not isinstance(answer, dict):
            self.stats.request_errors += 1
            wait = retry_after(resp.headers.get("Retry-After"))  # seconds or an HTTP date
            waited = None if wait is None else max(1, min(math.ceil(wait), LONGEST_WAIT))
            raise _graph_error(what, resp.status, answer, text, waited)
        return answer

    def _down(self, detail: str) -> None:
        self.reachable, self.detail = False, detail

    async def fetch_media(self, media_id: str, url: str, sha256: str = "") -> tuple[bytes, str]:
        """A media asset's bytes and type: from the short-lived ``url`` Meta's webhook gave
        (an authenticated GET), else from the URL ``GET /{media_id}`` names (Meta's Media
        API); checked against Meta's base64 SHA-256 when it gave one. ``EngineError`` when
        it cannot be had (yet)."""
        assert self.http is not None, "engine not started"
        if not url:
            node = f"{self.base.rstrip('/')}/{media_id}"
            try:
                async with self.http.get(node, headers=self._headers, timeout=TIMEOUT) as resp:
                    answer = await resp.json(content_type=None) if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                raise EngineUnavailable(f"media {media_id}: {type(exc).__name__}") from exc
            url = str(answer.get("url") or "") if isinstance(answer, dict) else ""
            if not url:
                raise EngineError(f"Meta names no URL for media {media_id}")
        try:
            async with self.http.get(url, headers=self._headers, timeout=MEDIA_TIMEOUT) as resp:
                if resp.status != 200:
                    raise EngineError(f"Meta's media URL answered HTTP {resp.status}")
                content = await resp.content.read(MEDIA_MAX_BYTES + 1)
                mime = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise EngineUnavailable(f"Meta's media URL: {type(exc).__name__}") from exc
        if len(content) > MEDIA_MAX_BYTES:
            raise EngineError(f"Meta's media is larger than {MEDIA_MAX_BYTES} bytes")
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        if sha256 and sha256 != digest:
            raise EngineError("Meta's media does not match its sha256")
        return content, mime


def strip(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the empty ones (Meta refuses an empty optional parameter)."""
    return {k: v for k, v in fields.items() if v not in ("", None)}


def addressed(user: str, phone_key: str = "to") -> dict[str, str]:
    """Who a request is about: ``phone_key`` with a phone's digits (``to`` of a ``connect`` or
    a message, ``user_wa_id`` of ``call_permissions``), else ``recipient`` with a business-scoped
    user id or its parent (Meta Cloud API Calling: Business-scoped user IDs; a user may show no
    phone)."""
    return {phone_key: user} if user.isdigit() else {"recipient": user}


def connected_call_id(answer: dict[str, Any]) -> str:
    """The ``wacid`` in Meta's answer to ``connect`` (``calls[0].id``)."""
    calls = answer.get("calls")
    if isinstance(calls, list) and calls and isinstance(calls[0], dict) and calls[0].get("id"):
        return str(calls[0]["id"])
    raise EngineError(f"the Graph API's connect answer has no call id: {answer!r:.200}")


def _graph_error(
    action: str, status: int, answer: Any, text: str, retry_after: int | None = None
) -> Exception:
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return GraphApiError(
            f"the Graph API answered {action} with HTTP {status}: {text[:200]}",
            details={"status": status},
        )
    code = error.get("code")
    subcode = error.get("error_subcode")
    message = str(error.get("message") or "")
    details: dict[str, object] = {
        "status": status,
        "metaCode": code,
        "metaSubcode": subcode,
        "metaMessage": message,
        "fbtraceId": error.get("fbtrace_id"),
    }
    log.warning("Graph API %s: HTTP %s, error %s/%s: %s", action, status, code, subcode, message)
    if code == NO_CALL_PERMISSION:
        return NoCallPermission(
            f"WhatsApp does not permit this business to call the user: {message}",
            details=details,
        )
    known = META_CODES.get(code) if isinstance(code, int) else None
    if known is not None:
        text = f"Meta refused {action}: {code} {known.meaning}: {message}. {known.hint}"
        details["reason"] = known.reason
        if known.status == 429:
            wait = retry_after or 60
            return MetaLimit(text, code=known.reason, retry_after=wait, details=details)
        if known.status == 403:
            return MetaForbidden(text, code=known.reason, retry_after=retry_after, details=details)
        return MetaRefused(text, code=known.reason, details=details)
    sub = f"/{subcode}" if subcode is not None else ""
    return GraphApiError(
        f"the Graph API refused {action}: error {code}{sub}: {message}", details=details
    )
