"""TURN credentials: a ``TurnProvider`` protocol, its implementations, and a factory.

Selected by ``BRIDGE_TURN_PROVIDER`` (docs/configuration.md): ``none``; ``static``
(``BRIDGE_TURN_USERNAME``/``PASSWORD``); ``rest-secret``, the TURN REST API as coturn's
``use-auth-secret`` has it (username ``"<expiry>:<user>"``, credential
``base64(HMAC-SHA1(secret, username))``); ``http``, ready-made ``iceServers`` from a credential
service, cached until half their TTL; or ``package.module:Class``, your own. Empty picks
``rest-secret`` when a secret is set, ``static`` when a username is, ``http`` when a service
URL is, else ``none``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp

from ..config import ConfigError, IceSettings
from ..errors import EngineUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnGrant:
    """TURN servers for one client (``iceServers`` entries) and how long they are valid."""

    servers: tuple[dict[str, Any], ...]
    status: str  # disabled | static | ephemeral
    ttl: int | None = None


DISABLED = TurnGrant((), "disabled")


class TurnProvider(Protocol):
    """Mints TURN credentials for a client (``user`` names who asks, e.g. a call id)."""

    async def grant(self, user: str) -> TurnGrant: ...

    async def close(self) -> None: ...


def rest_credential(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """TURN REST API credential (coturn ``use-auth-secret``): ``(username, password)``."""
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class NoTurn:
    """No TURN; also the base of the providers that hold nothing to close."""

    async def grant(self, user: str) -> TurnGrant:
        return DISABLED

    async def close(self) -> None:
        pass


class StaticTurn(NoTurn):
    """The same long-term credentials for everyone."""

    def __init__(self, settings: IceSettings) -> None:
        self.entry = {
            "urls": list(settings.turn_urls),
            "username": settings.turn_username,
            "credential": settings.turn_password,
        }

    async def grant(self, user: str) -> TurnGrant:
        return TurnGrant((dict(self.entry),), "static")


class RestSecretTurn(NoTurn):
    """Short-lived credentials derived from a secret shared with coturn."""

    def __init__(self, settings: IceSettings, clock: Any = time.time) -> None:
        self._secret = settings.turn_secret
        self.urls = list(settings.turn_urls)
        self.ttl = settings.turn_ttl
        self._clock = clock

    async def grant(self, user: str) -> TurnGrant:
        expiry = int(self._clock()) + self.ttl
        username, credential = rest_credential(self._secret, user or "bridge", expiry)
        entry = {"urls": self.urls, "username": username, "credential": credential}
        return TurnGrant((entry,), "ephemeral", self.ttl)


def parse_ice_servers(body: Any) -> tuple[tuple[dict[str, Any], ...], int | None]:
    """``iceServers`` from a credential service: Cloudflare (``{"iceServers": {...}}``),
    Twilio (``{"ice_servers": [{"url"|"urls", ...}], "ttl": "86400"}``) or a plain list."""
    ttl: int | None = None
    if isinstance(body, dict):
        raw_ttl = body.get("ttl")
        if isinstance(raw_ttl, int | str) and str(raw_ttl).isdigit():
            ttl = int(raw_ttl)
        body = body.get("iceServers", body.get("ice_servers", []))
    if isinstance(body, dict):
        body = [body]
    servers = []
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict):
            continue
        urls = item.get("urls", item.get("url"))
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            continue
        entry: dict[str, Any] = {"urls": [u for u in urls if isinstance(u, str)]}
        for key in ("username", "credential"):
            if item.get(key):
                entry[key] = str(item[key])
        servers.append(entry)
    if not servers:
        raise ValueError("no iceServers in the credential service's answer")
    return tuple(servers), ttl


RETRY_FAILED = 10.0
"""Seconds a failed credential service is left alone while its cached credentials serve."""


class HttpTurn:
    """ICE servers fetched from an external credential service, cached until half their TTL
    (each served with the TTL that remains, not the one they were given).

    While the service fails, the cached credentials serve until they expire (their full TTL),
    the service asked again every :data:`RETRY_FAILED` seconds, not at every request (each
    would wait for its timeout); its failure is said once, at WARNING, and its return at INFO.
    Expired credentials are never served: TURN would refuse them."""

    def __init__(self, settings: IceSettings) -> None:
        self.url = settings.turn_http_url
        self.headers = (
            {"Authorization": f"Bearer {settings.turn_http_token}"}
            if settings.turn_http_token
            else {}
        )
        self.default_ttl = settings.turn_ttl
        self._cached: TurnGrant | None = None
        self._fresh_until = 0.0
        self._expires_at = 0.0
        self._failing = False
        self._retry_at = 0.0
        """While the service fails with nothing valid cached: when to ask it again."""
        self._failure = ""
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    async def grant(self, user: str) -> TurnGrant:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now < self._fresh_until:
                return self._served(now)
            if self._cached is None and now < self._retry_at:
                raise EngineUnavailable(
                    f"the TURN credential service is unavailable: {self._failure}",
                    code="turn_unavailable",
                )
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
            method = "POST" if self.headers else "GET"
            try:
                async with self._http.request(
                    method,
                    self.url,
                    headers=self.headers,
                    json={"ttl": self.default_ttl} if method == "POST" else None,
                ) as resp:
                    resp.raise_for_status()
                    servers, ttl = parse_ice_servers(await resp.json(content_type=None))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                now = time.monotonic()
                if not self._failing:
                    self._failing = True
                    log.warning("TURN credential service failed (%s)", exc)
                if self._cached is not None and now < self._expires_at:
                    self._fresh_until = min(self._expires_at, now + RETRY_FAILED)
                    return self._served(now)  # still valid: served meanwhile
                self._cached = None
                self._retry_at, self._failure = now + RETRY_FAILED, str(exc)
                raise EngineUnavailable(
                    f"the TURN credential service is unavailable: {exc}",
                    code="turn_unavailable",
                ) from exc
            if self._failing:
                self._failing = False
                log.info("TURN credential service answers again")
            ttl = ttl or self.default_ttl
            now = time.monotonic()
            self._cached = TurnGrant(servers, "ephemeral", ttl)
            self._fresh_until = now + ttl / 2
            self._expires_at = now + ttl
            return self._cached

    def _served(self, now: float) -> TurnGrant:
        """The cached credentials, their ``ttl`` what remains of it (to the nearest second): a
        client that renews by it asks again before TURN refuses them."""
        assert self._cached is not None
        return replace(self._cached, ttl=max(0, round(self._expires_at - now)))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def create_turn_provider(settings: IceSettings) -> TurnProvider:
    """The provider ``BRIDGE_TURN_PROVIDER`` selects (see the module docstring)."""
    kind = settings.turn_provider
    if not kind:
        if settings.turn_urls and settings.turn_secret:
            kind = "rest-secret"
        elif settings.turn_urls and settings.turn_username:
            kind = "static"
        elif settings.turn_http_url:
            kind = "http"
        else:
            kind = "none"
    if kind == "none":
        return NoTurn()
    if kind == "static":
        return StaticTurn(settings)
    if kind == "rest-secret":
        return RestSecretTurn(settings)
    if kind == "http":
        return HttpTurn(settings)
    module_name, _, class_name = kind.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"BRIDGE_TURN_PROVIDER={kind!r}: cannot import it ({exc})") from None
    provider: TurnProvider = cls(settings)
    return provider


def pick_server_turn_url(urls: list[str]) -> str | None:
    """The one TURN URL the bridge gathers with (aiortc uses a single TURN server).

    Preference: plain ``turn:`` over UDP (lowest latency), then ``turn:`` over TCP, then
    ``turns:`` over TCP (aiortc supports nothing else). A URL without ``?transport=`` is
    ``turn:`` over UDP, ``turns:`` over TCP (RFC 7065 §3, as aiortc reads it).
    """

    def rank(url: str) -> int:
        _, _, transport = url.partition("?transport=")
        if url.startswith("turns:"):
            return 2 if transport in ("", "tcp") else 9
        return {"": 0, "udp": 0, "tcp": 1}.get(transport, 9)

    candidates = sorted((u for u in urls if rank(u) < 9), key=rank)
    return candidates[0] if candidates else None
