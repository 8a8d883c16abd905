"""Token authentication middleware."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import Unauthorized
from .tenancy import PRINCIPAL, Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROTECTED_PREFIXES = (
    "/call/",
    "/engine/",
    "/numbers",
    "/tenants",
    "/agents",
    "/routes",
    "/trunks",
)

INTERNAL_HEADER = "X-Bridge-Internal"
"""Carries ``BRIDGE_INTERNAL_SECRET`` on requests one instance forwards to another."""
OWNER_HEADER = "X-Bridge-Owner"
"""On a forwarded request: the id of the worker it is meant for."""
TENANT_HEADER = "X-Bridge-Tenant"
"""On a forwarded request: the tenant the forwarding instance found the client's token to be
(empty: the service's token). Read only with the internal secret; a client's is replaced."""
FORWARDED = web.RequestKey("forwarded", bool)
"""Request key: set on a request another instance forwarded here (served locally, never
forwarded again)."""
"""Every route under these prefixes needs a token when tokens are configured."""


def _is_query_token_route(path: str) -> bool:
    # Browsers cannot set headers on EventSource and WebSocket: those routes take ?token=.
    # An engine's webhook sender may only be able to put the token in the URL.
    return path in ("/call/events", "/engine/webhook") or path.endswith("/stream")


def request_token(request: web.Request) -> str | None:
    """The token a request presents, if any."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    header = request.headers.get("token")
    if header:
        return header.strip()
    if _is_query_token_route(request.path):
        return request.query.get("token")
    return None


def token_matches(presented: str, tokens: Iterable[str]) -> bool:
    """Constant-time comparison against every configured token."""
    ok = False
    # Header values can carry any byte; surrogateescape keeps them comparable, never a crash.
    raw = presented.encode("utf-8", "surrogateescape")
    for token in tokens:
        ok |= hmac.compare_digest(raw, token.encode("utf-8", "surrogateescape"))
    return ok


async def _never(request: web.Request) -> bool:
    return False


def auth_middleware(
    tokens: tuple[str, ...],
    authenticates_itself: Callable[[web.Request], Awaitable[bool]] = _never,
    internal_secret: str = "",
    tenant_of_key: Callable[[web.Request, str], str | None] = lambda request, key: None,
) -> Middleware:
    """Require a token on the protected routes: one of ``tokens`` (the service's: it sees
    everything) or a tenant's API key (``tenant_of_key``: the request is that tenant's,
    :data:`~.tenancy.PRINCIPAL`). Without ``tokens`` the routes are open, and a tenant key
    presented still makes the request that tenant's.

    A request for which ``authenticates_itself`` is true needs no token: a route that checks
    its caller itself (a signed engine webhook, e.g. Meta's with the app secret; it may read
    the body to tell). A request
    forwarded by another instance authenticates with ``internal_secret`` instead, and is the
    principal that instance found (:data:`TENANT_HEADER`; from an instance without it, the
    client's token names the tenant)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        internal = request.headers.get(INTERNAL_HEADER)
        presented = request_token(request)
        if internal is not None:
            if not internal_secret or not token_matches(internal, (internal_secret,)):
                raise Unauthorized("invalid internal secret")
            request[FORWARDED] = True
            named = request.headers.get(TENANT_HEADER)
            if named:  # the forwarding instance checked the token: its word, not a re-check
                request[PRINCIPAL] = Principal(named)
            elif named is None and not _name_tenant(request, presented, tokens, tenant_of_key):
                # An older instance's forward: a token this one does not know (a tenant key
                # minted a moment ago) is not the service's.
                if tokens and presented is not None and not token_matches(presented, tokens):
                    raise Unauthorized("invalid API token")
            return await handler(request)
        if not request.path.startswith(PROTECTED_PREFIXES) or await authenticates_itself(request):
            return await handler(request)
        if tokens and presented is None:
            raise Unauthorized(
                "missing API token: send 'Authorization: Bearer <token>' or a 'token' header"
            )
        if not _name_tenant(request, presented, tokens, tenant_of_key) and tokens:
            if not token_matches(presented or "", tokens):
                raise Unauthorized("invalid API token")
        return await handler(request)

    return middleware


def _name_tenant(
    request: web.Request,
    presented: str | None,
    tokens: tuple[str, ...],
    tenant_of_key: Callable[[web.Request, str], str | None],
) -> bool:
    """Mark the request as a tenant's when its token is that tenant's key."""
    if presented is None or (tokens and token_matches(presented, tokens)):
        return False
    tenant_id = tenant_of_key(request, presented)
    if tenant_id is None:
        return False
    request[PRINCIPAL] = Principal(tenant_id)
    return True
