"""The process's one outgoing HTTP client (aiohttp recommends one ``ClientSession`` per app),
and the one reader of the URLs it is given (:func:`url_parts`), and of how they are shown
(:func:`display_url`: never a secret they carry), of which hosts an allow-list lets them point
at (:class:`HostAllow`), and of how long an answer asks to wait (:func:`retry_after`).

Engines, media forks, playback URLs and TURN credential services all use it, each request
with its own timeout. Redirects are refused everywhere: a followed redirect could take a
fork or a playback fetch to a host that the allow-lists never approved.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import aiohttp


class RedirectRefused(aiohttp.ClientError):
    """A URL answered with a redirect; the bridge does not follow them."""


async def _refuse_redirect(session: Any, ctx: Any, params: Any) -> None:
    raise RedirectRefused(f"redirect to {params.response.headers.get('Location', '?')[:100]}")


def url_parts(url: str) -> SplitResult | None:
    """``url`` split, or ``None`` when it cannot be: ``urlsplit`` raises on a broken IPv6 host
    (``http://[::1``), ``port`` on one that is no number or out of range. Every URL a request
    gives the bridge to go out to is read through here, so none of them is a 500."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return None
    return parts


def display_url(url: str) -> str:
    """``url`` as logs, events and snapshots show it: no credentials, no query (tokens and
    ``key=`` live there), no fragment."""
    parts = url_parts(url)
    if parts is None:
        return "(an unreadable URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_ENTRY = re.compile(
    r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d{1,5}))?|(?P<host>[A-Za-z0-9_.\-]+)(?::(?P<port>\d{1,5}))?"
)


def _host_key(host: str) -> str:
    """A host as allow-lists compare it: an IP address in its one written form (``0::1`` is
    ``::1``), a name in lower case."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


class HostAllow:
    """An allow-list of the hosts a URL given in a request may point at. An entry is a host
    name or an IP address, alone (any port) or with a port (that port only: ``host:8443``,
    ``[::1]:8443``); an IPv6 address is written in brackets, or bare without a port (``::1``).
    A URL without a port has its scheme's. Entries of another form are refused when the list
    is made (``ValueError`` naming the entry): ``host:port`` and ``[::1]`` were once kept as
    they were written, and no URL's host ever equalled them."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._entries = {self.entry(text) for text in entries}

    @staticmethod
    def entry(text: str) -> tuple[str, int | None]:
        """``text`` read as an entry: (host, port or ``None``)."""
        text = text.strip()
        bare_v6 = text.count(":") > 1 and not text.startswith("[")
        found = _ENTRY.fullmatch(f"[{text}]" if bare_v6 else text)
        v6 = found and found["v6"]
        if v6:
            try:
                ipaddress.IPv6Address(v6)
            except ValueError:
                found = None
        port = found and (found["v6port"] or found["port"])
        if not found or (port and not 0 < int(port) < 65536):
            raise ValueError(
                f"{text[:100]!r} is not a host name, an IP address or either with :port "
                "(an IPv6 address in brackets: [::1] or [::1]:8443)"
            )
        return _host_key(v6 or found["host"]), int(port) if port else None

    def allows(self, parts: SplitResult) -> bool:
        """Whether the URL ``parts`` (read by :func:`url_parts`) is on a host and port listed."""
        host = _host_key(parts.hostname or "")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        return (host, None) in self._entries or (host, port) in self._entries


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` asks to wait, given as seconds or as an HTTP date (RFC
    9110 §10.2.3 allows both; a date is read against the wall clock ``now``, one past is 0);
    ``None`` when absent or unreadable. The caller bounds it by its own longest wait."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # the obsolete asctime form has no zone: GMT (RFC 9110 §5.6.7)
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def connect_failure(exc: BaseException, timeout: float) -> str:
    """Why a connection to a URL (a fork's WebSocket) did not open, ``timeout`` the wait it
    was given: for an answer and a log, so never the exception's text where that holds the
    URL (its query may carry a token)."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the server answered {exc.status}, not a WebSocket upgrade"
    if isinstance(exc, RedirectRefused):
        return "the server answered with a redirect, which the bridge does not follow"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or 'refused'})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def create_http_session() -> aiohttp.ClientSession:
    """The app-scoped client session (closed by the app's cleanup).

    Its pool has no cap: it carries long-lived WebSockets (a ZuckZapGo or WADial call's media
    socket, media forks, model agents), each holding a connection while it lives, beside the
    short requests (the engine's REST calls, Meta's Graph API, webhooks, playback fetches).
    aiohttp's default cap of 100 let a busy worker's sockets hold every connection, and the
    requests waited for one until they timed out. Each user bounds its own connections
    (``BRIDGE_MAX_CALLS``, forks and playbacks per call, webhook workers per URL)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=5),
        trace_configs=[trace],
    )


def create_internal_session() -> aiohttp.ClientSession:
    """The session for requests between bridge instances (forwards, WebSocket relays): its
    own connection pool with no cap, and its own short connect timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, connect=2),
    )
