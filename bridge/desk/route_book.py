"""``RouteBook``: the desk's child keeping the routes in the desk's store — written within a
tenant's cap, listed and deleted for the API, and read for each inbound call as it starts to
ring.

A read for a ringing call that the store cannot answer (its Redis away: at once while the
directory's lease knows so, ``redis_store.py``) leaves the call without its route: it rings
for the app, as a call with no route does. The route is not run from an older read: its rings
need the store as much (the agents' presence, the one claim per round and the messages to
their sockets live there), and what this worker read last may be any age (a route changed on
another worker meanwhile). Said once at WARNING while it lasts, its end at INFO.
"""

from __future__ import annotations

import logging

from ..calls import Call
from ..errors import Conflict
from ..logs import Repeats
from .routes import Route, pick, route_from_stored, stored
from .store import DeskStore

log = logging.getLogger(__name__)


class RouteBook:
    """See the module docstring."""

    def __init__(self, store: DeskStore) -> None:
        self.store = store
        self._unread = Repeats(size=1)
        """Ringing calls whose route the store could not say, while it lasts."""

    async def add(self, route: Route, cap: int) -> None:
        """Store a new route, its tenant's routes kept within ``cap`` as it is written (409
        ``too_many_routes``: ``BRIDGE_MAX_ROUTES``; every ringing call reads its tenant's
        routes, so a tenant's key must not grow them for ever)."""
        if not await self.store.put_route(route.route_id, stored(route), cap=cap):
            raise Conflict(
                f"the tenant has {cap} routes, as many as BRIDGE_MAX_ROUTES allows: "
                "delete one first",
                code="too_many_routes",
            )

    async def every(self) -> list[Route]:
        return [route_from_stored(r) for r in await self.store.routes()]

    async def delete(self, route_id: str) -> bool:
        return await self.store.delete_route(route_id)

    async def of(self, call: Call) -> Route | None:
        """The route of a call that starts to ring (``None``: it has none)."""
        route = pick(await self.every(), call.tenant_id or None, call.number_id)
        self.readable()
        return route

    def unreadable(self, call: Call, exc: Exception) -> None:
        """The store failed a read the call's route needs: the call rings for the app."""
        if self._unread.seen("store") == 1:
            log.warning(
                "call %s: its route not run: the desk's store cannot be read (%s); it rings "
                "for the app as a call with no route does (said once while it lasts)",
                call.id,
                str(exc) or type(exc).__name__,
            )

    def readable(self) -> None:
        unread = self._unread.ended("store")
        if unread:
            log.info("routes: the desk's store answers again (%d calls rang without one)", unread)
