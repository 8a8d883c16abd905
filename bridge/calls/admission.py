"""``Admission``: whether one more call fits — the bridge's ``BRIDGE_MAX_CALLS`` (per worker), a
tenant's ``maxCalls`` (on every worker: its calls elsewhere as the shared directory lists them)
— counting the dials still in flight, which hold a place until Meta (or the engine) answers, and
the simulated inbound calls on their way in, whose place their ring takes over."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager

from ..errors import AtCapacity, ShuttingDown
from ..numbers.tenants import Tenant
from ..tasks import wait_event
from .model import Call


class Admission:
    """Capacity checks and the dials in flight (one per manager)."""

    def __init__(self, max_calls: int, live: Callable[[], list[Call]]) -> None:
        self.max_calls = max_calls
        self._live = live
        self.shutting_down = False
        self._dialling = 0
        self._dialling_for: dict[str, int] = {}
        """Dials in flight by tenant (a tenant's ``maxCalls`` counts them too)."""
        self._places: dict[str, str] = {}
        """Engine keys of inbound calls on their way in, each holding a place: their tenant."""
        self._dials_idle = asyncio.Event()  # set while no dial is in flight
        self._dials_idle.set()
        self.tenant_calls: Callable[[str, bool], Awaitable[set[str]]] | None = None
        """``tenant_calls(tenant id, verify)``: a tenant's live calls on every worker (the
        shared directory's; ``verify``: each checked against its record); ``None``: this
        process's are all there are."""

    async def admit(self, tenant: Tenant | None) -> None:
        """:meth:`check`, a tenant with a ``maxCalls`` counted on every worker (the listing
        checked call by call only when it would refuse: a stale id costs no call)."""
        if tenant is None or not tenant.max_calls or self.tenant_calls is None:
            self.check(tenant)
            return
        elsewhere = await self.tenant_calls(tenant.tenant_id, False)
        try:
            self.check(tenant, elsewhere)
        except AtCapacity:
            if not elsewhere:
                raise
            self.check(tenant, await self.tenant_calls(tenant.tenant_id, True))

    def check(self, tenant: Tenant | None = None, elsewhere: Collection[str] = ()) -> None:
        """Room for one more call (``AtCapacity``), unless shutting down (``ShuttingDown``);
        ``elsewhere``: ids of the tenant's calls the shared directory lists (ours among them)."""
        if self.shutting_down:
            raise ShuttingDown("the bridge is shutting down")
        live = self._live()
        if len(live) + self._dialling >= self.max_calls:
            raise AtCapacity(f"the bridge carries its maximum of {self.max_calls} calls")
        if tenant is not None and tenant.max_calls:
            ids = {c.id for c in live if c.tenant_id == tenant.tenant_id} | set(elsewhere)
            mine = len(ids) + self._dialling_for.get(tenant.tenant_id, 0)
            if mine >= tenant.max_calls:
                raise AtCapacity(
                    f"tenant {tenant.tenant_id} carries its maximum of {tenant.max_calls} calls"
                )

    @contextmanager
    def dialling(self, tenant_id: str = "", key: str = "") -> Iterator[None]:
        """A call on its way in holds a place until it returns: a dial in flight (for
        ``tenant_id``'s number) or, with ``key`` (its engine key), an inbound call the bridge
        had its engine ring it with (``/call/sim/incoming``), whose ring takes the place over
        (:meth:`take_place`): the check and the place are one, with nothing awaited between
        them, so two requests at once never both pass the last place."""
        self._dialling += 1
        self._dialling_for[tenant_id] = self._dialling_for.get(tenant_id, 0) + 1
        self._dials_idle.clear()
        if key:
            self._places[key] = tenant_id
        try:
            yield
        finally:
            if not key or self._places.pop(key, None) is not None:
                self._free(tenant_id)

    def take_place(self, key: str) -> bool:
        """The inbound call of engine key ``key`` rings now in the place held for it
        (:meth:`dialling`), with no check of its own; ``False``: none is held for it."""
        if key not in self._places:
            return False
        self._free(self._places.pop(key))
        return True

    def _free(self, tenant_id: str) -> None:
        self._dialling -= 1
        if self._dialling_for[tenant_id] > 1:
            self._dialling_for[tenant_id] -= 1
        else:
            del self._dialling_for[tenant_id]
        if not self._dialling:
            self._dials_idle.set()

    async def dials_settled(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until no dial is in flight: a call being dialled may be
        in the engine's listing before it is in the registry."""
        await wait_event(self._dials_idle, timeout)
