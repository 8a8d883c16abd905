"""The start of a route's run on a call, its store reads in its first turn: a call that starts
to ring (``Desk`` hands it each inbound call that does, :func:`start_route`), and a call moved
here by a drain or a crash's adoption (``handoffs.resume_route``). The run is attached to the
call first and reads in its first turn (:func:`read_first`): a move of the call during the
reads (the store's, a read or two) waits for them and saves only what the run decided
(``RouteRun.stand_still``): the next owner rings, this worker does not. No route and nobody
connected, a read the store cannot answer (``route_book.py``), a call the app answered
meanwhile: the run leaves the call, which rings for the app (or is the app's: a transfer it asked
meanwhile carries on with the run)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
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


class Attaches(Protocol):
    """What a run's start uses of the desk: the runs it attaches."""

    def new_run(self, runtime: CallRuntime, route: Route | None) -> RouteRun: ...


class Starts(Attaches, Protocol):
    """What a route's start uses of the desk (``Desk`` is one): the calls, the routes, the
    agents connected, whether another part takes the call, and the runs it attaches."""

    manager: CallManager
    routes: RouteBook
    answered_elsewhere: Callable[[Call], bool]

    async def candidates(
        self, tenant_id: str | None, ring: dict[str, Any]
    ) -> list[AgentRecord]: ...


async def read_first(
    desk: Attaches, runtime: CallRuntime, read: Callable[[RouteRun], Awaitable[bool]]
) -> RouteRun | None:
    """A run attached to the call, its first turn ``read`` (the store's reads into the run:
    whether it runs), as its ``reading``: a move of the call meanwhile waits for the read and
    saves the run only if it runs. The run, or ``None`` when it runs nothing (detached, unless a
    transfer the app asked meanwhile took it up: then the transfer's); what
    else the run holds, its caller sets before it awaits anything (``RouteRun.resume``,
    ``handoffs.carry_on``), so a move saves that too."""
    run = desk.new_run(runtime, None)
    run.reading = True
    runs = False
    try:
        async with run.turns.turn():
            runs = await read(run)
            if not runs and run.handing_off:
                # A transfer the app asked meanwhile (it answered the call) took the run up:
                # its own, as the run a transfer makes on a call with no route.
                run.route = None
            run.reading = not runs and not run.handing_off
    finally:
        if run.reading:  # nothing to run (or the read failed): the call rings for the app
            runtime.detach(run)
    return run if runs else None


async def start_route(desk: Starts, call: Call) -> None:
    """Run the route of ``call``, which starts to ring (see the module docstring)."""
    runtime = desk.manager.find_runtime(call.id)
    if runtime is None or runtime.closed or not call.live or desk.answered_elsewhere(call):
        return  # ended already, or the number's calls go straight to a PBX (a trunk's)
    run = await read_first(desk, runtime, partial(_read_route, desk))
    if run is not None:
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
