"""The start of a ringing call's route (``Desk`` hands it each inbound call that starts to
ring): the route's run attached to the call first, the route read from the store in the run's
first turn, then run. A drain's move of the call during the read (the store's, a read or two)
waits for it and carries the run it decides on (``RouteRun.stand_still``): the new owner rings,
the old worker does not. No route and nobody connected, a read the store cannot answer
(``route_book.py``), a call the app answered meanwhile: the run leaves the call, which rings
for the app (or is the app's: a transfer it asked meanwhile carries on with the run)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..calls import Call, CallManager, CallRuntime
from ..calls.model import CallState
from .route_book import RouteBook
from .routes import Route
from .runner import RouteRun
from .store import AgentRecord

log = logging.getLogger(__name__)

ALL: dict[str, Any] = {"group": None, "strategy": "simultaneous"}
"""Who a call with no route rings: every available agent of its tenant."""


class Starts(Protocol):
    """What a route's start uses of the desk (``Desk`` is one): the calls, the routes, the
    agents connected, whether another part takes the call, and the runs it attaches."""

    manager: CallManager
    routes: RouteBook
    answered_elsewhere: Callable[[Call], bool]

    def new_run(self, runtime: CallRuntime, route: Route | None) -> RouteRun: ...

    async def candidates(
        self, tenant_id: str | None, ring: dict[str, Any]
    ) -> list[AgentRecord]: ...


async def start_route(desk: Starts, call: Call) -> None:
    """Run the route of ``call``, which starts to ring (see the module docstring)."""
    runtime = desk.manager.find_runtime(call.id)
    if runtime is None or runtime.closed or not call.live or desk.answered_elsewhere(call):
        return  # ended already, or the number's calls go straight to a PBX (a trunk's)
    run = desk.new_run(runtime, None)
    run.reading = True
    async with run.turns.turn():
        runs = await _read_route(desk, run)
        # A transfer the app asked meanwhile (it answered the call) took the run up: its own,
        # as the run the transfer makes when the call has none (no route).
        run.reading = not runs and not run.handing_off
        run.route = run.route if runs else None
    if run.reading:
        runtime.detach(run)
    elif runs:
        await run.run()


async def _read_route(desk: Starts, run: RouteRun) -> bool:
    """Read the route of the run's call into it (``None``: ring every agent): whether it runs
    one (``False``: the call rings for the app)."""
    call = run.call
    try:
        run.route = await desk.routes.of(call)
        if run.route is None and not await desk.candidates(call.tenant_id or None, ALL):
            return False  # no route and nobody connected: today's behaviour (the app answers)
    except Exception as exc:  # the store's own errors (Redis's are not OSError)
        desk.routes.unreadable(call, exc)
        return False  # the app answers, as with no route
    if call.state is not CallState.RINGING:
        # Answered by the app (or ended) while the store was read — slow, Redis stalled
        # and back: the route rings and answers a ringing call only.
        log.info(
            "call %s: its route not run: the call was %s as its route was read",
            call.id,
            call.state,
            extra={"call_id": call.id},
        )
        return False
    run.steps()  # its list, for the opening hours of now: the call's from here, wherever it goes
    return True
