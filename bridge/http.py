"""The process's one outgoing HTTP client (aiohttp recommends one ``ClientSession`` per app).

Engines, media forks, playback URLs and TURN credential services all use it, each request
with its own timeout. Redirects are refused everywhere: a followed redirect could take a
fork or a playback fetch to a host that the allow-lists never approved.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class RedirectRefused(aiohttp.ClientError):
    """A URL answered with a redirect; the bridge does not follow them."""


async def _refuse_redirect(session: Any, ctx: Any, params: Any) -> None:
    raise RedirectRefused(f"redirect to {params.response.headers.get('Location', '?')[:100]}")


def create_http_session() -> aiohttp.ClientSession:
    """The app-scoped client session (closed by the app's cleanup)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=5), trace_configs=[trace]
    )


def create_internal_session() -> aiohttp.ClientSession:
    """The session for requests between bridge instances (forwards, WebSocket relays): its
    own connection pool with no cap, so long-lived relays never starve the engine's,
    forks' and webhooks' requests of the main session's connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=2),
    )
