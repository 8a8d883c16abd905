"""Where a model's socket is: the dialect's URL, or the one a request before the socket
answers with (:class:`~.capabilities.Prepared`: ElevenLabs' signed URL, Ultravox's created call's
``joinUrl``). The request goes with redirects refused and the key only in its headers; a bad
answer is a ``ConnectionError`` that names its status, never its body (which may echo the
key)."""

from __future__ import annotations

import aiohttp

from .capabilities import Prepared
from .wire import FINAL_STATUSES, ModelDialect, ProtocolError, Refused, Tool

CONNECT_TIMEOUT = 10.0
"""Seconds to open the model's socket and have its session configured; and, before it, for
the request that says where it is."""


async def where_to_connect(
    dialect: ModelDialect,
    url: str,
    key: str | None,
    tools: list[Tool],
    resume: str | None,
    http: aiohttp.ClientSession,
) -> tuple[str, dict[str, str]]:
    """The socket's URL and headers: the dialect's, or those the answer to its preflight
    gives (a signed URL, a created call's ``joinUrl``) on every opening, reconnections
    included (a signed URL may be single-use; a renewed Ultravox call is a new call)."""
    ask = dialect.preflight(url, key, tools, resume) if isinstance(dialect, Prepared) else None
    if ask is None:
        return dialect.connect(url, key)
    assert isinstance(dialect, Prepared)
    async with http.request(
        ask.method,
        ask.url,
        headers=ask.headers,
        json=ask.body,
        allow_redirects=False,
        timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT),
    ) as resp:
        if resp.status != ask.expect:
            # The status only: the answer may echo the request (its key).
            raise Refused(f"http_{resp.status}", final=resp.status in FINAL_STATUSES)
        try:
            answer = await resp.json(content_type=None)
            if not isinstance(answer, dict):
                raise ProtocolError("not an object")
            return dialect.joined(answer)
        except (ValueError, ProtocolError) as exc:
            raise ConnectionError(f"the provider's answer is unusable ({exc})") from None
