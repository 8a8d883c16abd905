"""Routes of the simulated engine (a sim number: ``BRIDGE_ENGINE=sim``'s default number or one
made with ``POST /numbers``; 404 with any other engine)."""

from __future__ import annotations

from aiohttp import web

from ..calls import normalize_phone
from ..engines import SimulatedNetwork
from ..errors import EngineError, NotFound
from ..numbers.model import engine_key
from .calls import wait_for_engine_call
from .keys import CATALOG, MANAGER, SWITCHBOARD
from .schema import read_body
from .tenancy import principal_of

routes = web.RouteTableDef()


@routes.post("/call/sim/incoming")
async def sim_incoming(request: web.Request) -> web.Response:
    """Make the simulated network ring us from ``phone``; returns the ringing call."""
    body = await read_body(request, "SimIncomingRequest")  # the schema requires the phone
    # "to": the sim number to ring (its phone or numberID); the default number without it.
    to = body.get("to")
    number = request.app[CATALOG].resolve_from(to, principal_of(request).tenant_id, field="to")
    engine = request.app[SWITCHBOARD].engine(number.number_id)
    if not isinstance(engine, SimulatedNetwork):
        raise NotFound(f"the {engine.name} engine is not the simulated network")
    phone = normalize_phone(body["phone"])
    # The number's tenant at its maxCalls: refused now, as /call/make is (the inbound policy
    # would turn the call away busy, and nothing would come to answer with). The place is
    # held from the check on, nothing awaited between: the call's ring takes it over.
    manager = request.app[MANAGER]
    await manager.admit(request.app[CATALOG].tenants.get(number.tenant_id))
    key = engine_key(number.number_id, engine.incoming(phone))
    with manager.admission.dialling(number.tenant_id, key):
        call = await wait_for_engine_call(request, key)
    if call is None:
        raise EngineError("the simulated inbound call was not registered")
    return web.json_response(call.snapshot(), status=201)
