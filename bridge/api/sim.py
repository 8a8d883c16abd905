"""Routes of the simulated engine (``BRIDGE_ENGINE=sim``; 404 with any other engine)."""

from __future__ import annotations

from aiohttp import web

from ..calls import normalize_phone
from ..engines import SimulatedNetwork
from ..errors import EngineError, NotFound
from .calls import wait_for_engine_call
from .keys import ENGINE, MANAGER
from .schema import read_body

routes = web.RouteTableDef()


@routes.post("/call/sim/incoming")
async def sim_incoming(request: web.Request) -> web.Response:
    """Make the simulated network ring us from ``phone``; returns the ringing call."""
    engine = request.app[ENGINE]
    if not isinstance(engine, SimulatedNetwork):
        raise NotFound(f"the {engine.name} engine is not the simulated network")
    body = await read_body(request, "SimIncomingRequest")  # the schema requires the phone
    phone = normalize_phone(body["phone"])
    request.app[MANAGER].check_capacity()
    engine_id = engine.incoming(phone)
    call = await wait_for_engine_call(request, engine_id)
    if call is None:
        raise EngineError("the simulated inbound call was not registered")
    return web.json_response(call.snapshot(), status=201)
