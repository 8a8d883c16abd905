"""Request limits at the edge: per-client rate limiting and a strict CORS allow-list."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import RateLimited
from .auth import FORWARDED, request_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LIMITED_ROUTES = {("POST", "/call/make"): "make", ("POST", "/call/webrtc/offer"): "offer"}


class TokenBuckets:
    """One token bucket per (client, route); at most ``max_clients`` remembered (LRU)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def take(self, key: tuple[str, str], now: float | None = None) -> float:
        """Spend one token; returns 0 if allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def client_key(request: web.Request, by_token: bool) -> str:
    """Who is asking: the (already authenticated) token, else the peer address. Without
    configured tokens a presented one proves nothing, so the address is used."""
    token = request_token(request) if by_token else None
    if token:
        return "t:" + token
    return "a:" + (request.remote or "?")


def rate_limit_middleware(rate: float, burst: int, by_token: bool) -> Middleware:
    buckets = TokenBuckets(rate, burst)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = LIMITED_ROUTES.get((request.method, request.path))
        # A forwarded request was counted where the client sent it.
        if route is not None and not request.get(FORWARDED):
            wait = buckets.take((client_key(request, by_token), route))
            if wait > 0:
                raise RateLimited(
                    f"too many {route} requests: at most {rate:g}/s (burst {burst})",
                    retry_after=max(1, int(wait + 0.999)),
                )
        return await handler(request)

    return middleware


ALLOW_HEADERS = "Authorization, Content-Type, token"
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """Answer preflights for listed origins only; nothing is open by default."""
    allowed = frozenset(origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if origin not in allowed:
                return web.json_response(
                    {
                        "error": {
                            "code": "cors_forbidden",
                            "message": f"origin {str(origin)[:100]!r} is not allowed; "
                            "add it to BRIDGE_CORS_ORIGINS",
                        }
                    },
                    status=403,
                )
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin or "",
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        return await handler(request)

    return middleware


def cors_on_prepare(
    origins: tuple[str, ...],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Add the CORS headers as a response is prepared, so streamed ones (SSE) carry them."""
    allowed = frozenset(origins)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin in allowed and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin or ""
            response.headers["Vary"] = "Origin"

    return on_prepare
