"""Who is asking, and what they may see: the service (an admin token of ``BRIDGE_API_TOKENS``)
sees everything; a tenant's API key sees its own numbers, calls, events and reports, and
nothing else.

The auth middleware (``auth.py``) names the caller (:data:`PRINCIPAL`). The middleware here
then keeps a tenant inside its own data for every route at once, so a new route cannot forget
it: a request about a call (the ``{callID}`` in its path or the ``callID`` of its body, found
the way the cluster's router finds it) is ``404`` unless the call is the tenant's — the
existence of another tenant's call is not leaked — and the routes that manage tenants are for
the service alone (``403``). Lists and streams filter with :func:`visible`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..errors import CallNotFound, DirectoryUnavailable, Forbidden
from .keys import DIRECTORY, MANAGER

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the service (``tenant_id`` ``None``) or one tenant."""

    tenant_id: str | None = None

    @property
    def admin(self) -> bool:
        return self.tenant_id is None


SERVICE = Principal()
PRINCIPAL = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    return request.get(PRINCIPAL, SERVICE)


def visible(principal: Principal, snapshot: dict[str, Any]) -> bool:
    """Whether a call (its snapshot) or an event about no call (its fields) is the caller's."""
    if principal.admin:
        return True
    call = snapshot.get("call")
    about = call if isinstance(call, dict) else snapshot
    return about.get("tenantID") == principal.tenant_id


def visible_event(principal: Principal, data: str) -> bool:
    """Whether an SSE event's JSON ``data`` is the caller's."""
    if principal.admin:
        return True
    try:
        body = json.loads(data)
    except ValueError:
        return False
    return isinstance(body, dict) and visible(principal, body)


def require_admin(request: web.Request) -> None:
    if not principal_of(request).admin:
        raise Forbidden("only the service's API tokens may do this", code="admin_only")


ADMIN_ONLY = ("/tenants",)
"""Route prefixes no tenant key may use."""


def tenancy_middleware(call_id_of: Callable[[web.Request], Awaitable[str | None]]) -> Middleware:
    """Keeps a tenant's key inside its own calls (see the module docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = principal_of(request)
        if principal.admin:
            return await handler(request)
        if request.path.startswith(ADMIN_ONLY):
            require_admin(request)
        call_id = await call_id_of(request)
        if call_id is not None and await tenant_of_call(request, call_id) != principal.tenant_id:
            raise CallNotFound(f"no call {call_id[:64]!r}")
        return await handler(request)

    return middleware


async def tenant_of_call(request: web.Request, call_id: str) -> str | None:
    call = request.app[MANAGER].registry.get(call_id)
    if call is not None:
        return call.tenant_id
    try:
        record = await request.app[DIRECTORY].record(call_id)
    except DirectoryUnavailable:
        return None
    if record is None:
        return None
    return str(record.snapshot.get("tenantID") or "") or None
