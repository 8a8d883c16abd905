"""The desk's routes: agent tokens, presence and the agent socket (``/agents``), and routes
(``/routes``). A tenant's key sees its own agents and routes only (another's is ``404``)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from ..desk import (
    AgentClaims,
    AgentSession,
    AgentTokens,
    Desk,
    MemoryDeskStore,
    Route,
    key_for,
    parse_route,
    wire,
)
from ..desk.lending import Lending
from ..desk.tokens import check_agent_id, check_groups, check_ttl, looks_like_agent_token
from ..errors import BadRequest, Forbidden, NotFound
from .auth import request_token
from .internal import relay_opener
from .keys import (
    AGENTS,
    CATALOG,
    DESK,
    DIRECTORY,
    INTERNAL_HTTP,
    MANAGER,
    PLAYBACK,
    RECORDINGS,
    SETTINGS,
)
from .schema import read_body
from .tenancy import principal_of

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CONNECT = "/agents/connect"


def authenticates_itself(request: web.Request) -> bool:
    """The agent socket checks its own token (an agent token, not an API key), and so does
    ``POST /call/make`` when an agent's app places a call with its own token."""
    if request.path == CONNECT:
        return True
    return request.path == "/call/make" and looks_like_agent_token(request_token(request))


@routes.post("/agents/tokens")
async def issue_token(request: web.Request) -> web.Response:
    if looks_like_agent_token(request_token(request)):
        raise Forbidden("an agent token cannot issue tokens", code="agent_token")
    body = await read_body(request, "AgentTokenRequest")
    ttl = check_ttl(body.get("ttl"))
    claims = AgentClaims(
        tenant_id=principal_of(request).tenant_id,
        agent_id=check_agent_id(body.get("agentID")),
        groups=check_groups(body.get("groups")),
        expires_at=time.time() + ttl,
    )
    token = request.app[DESK].tokens.issue(claims)
    return web.json_response(
        {
            "token": token,
            "agentID": claims.agent_id,
            "groups": list(claims.groups),
            "tenantID": claims.tenant_id,
            "expiresAt": int(claims.expires_at),
        },
        status=201,
    )


@routes.get("/agents")
async def list_agents(request: web.Request) -> web.Response:
    principal = principal_of(request)
    agents = await request.app[DESK].agents(principal.tenant_id, every=principal.admin)
    return web.json_response({"agents": [a.view() for a in agents]})


@routes.get(CONNECT)
async def connect(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    claims = desk.tokens.verify(request.query.get("token"))  # 401 before the upgrade
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=wire.MAX_MESSAGE)
    await ws.prepare(request)
    session = AgentSession(claims, ws.send_str, ws.close)
    try:  # taken in as connect begins: let go however this ends (connect failing too)
        await desk.connect(session)  # which says hello first
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                if msg.type is WSMsgType.BINARY:
                    session.send(wire.error("bad_message", "messages are JSON text frames"))
                continue
            try:
                message = wire.parse(msg.data)
            except wire.BadMessage as exc:
                session.send(wire.error(exc.code, str(exc)))
                continue
            await desk.handle(session, message)
    finally:
        await desk.disconnect(session)
    return ws


def _route_of(request: web.Request, routes_: list[Route]) -> Route:
    route_id = request.match_info["routeID"]
    principal = principal_of(request)
    for route in routes_:
        if route.route_id == route_id and (
            principal.admin or route.tenant_id == principal.tenant_id
        ):
            return route
    raise NotFound(f"no route {route_id[:64]!r}")


@routes.post("/routes")
async def create_route(request: web.Request) -> web.Response:
    body = await read_body(request, "RouteRequest")
    principal = principal_of(request)
    route = parse_route(body, principal.tenant_id)
    catalog = request.app[CATALOG]
    for number_id in route.numbers or ():
        number = catalog.number(number_id)
        if number is None or not (principal.admin or number.tenant_id == principal.tenant_id):
            raise BadRequest(f"field 'numbers': no number {number_id[:64]!r}", code="bad_number")
    await _check_hand_offs(request, route)
    await request.app[DESK].routes.add(route, request.app[SETTINGS].calls.max_routes)
    return web.json_response(route.view(), status=201)


async def _check_hand_offs(request: web.Request, route: Route) -> None:
    """A ``sip`` step's trunk is the route's tenant's, an ``agent`` step is one a call's agent
    would take (``AgentService.check``: its URL's scheme, no credentials in it, a host
    ``BRIDGE_FORK_URL_ALLOW`` allows, its session), a ``play`` or a voicemail's greeting is an
    audio asset that exists and the tenant may play (its own or the service's, as ``POST
    /call/play``; the service's token, any): told at once rather than when a call comes (an
    asset of another tenant's would be played to its callers, a missing one fails the step)."""
    trunks = request.app[CATALOG].trunks
    agents = request.app[AGENTS]
    assets = request.app[PLAYBACK].assets
    tenant_id = principal_of(request).tenant_id
    for step in (*route.steps, *route.closed):
        asset = step.body.get("assetId", step.body.get("greeting"))
        if asset is not None:
            try:
                await assets.find(asset, tenant_id)
            except NotFound:
                raise BadRequest(
                    f"field 'steps.{step.kind}': no audio asset {asset[:80]!r}",
                    code="unknown_asset",
                ) from None
        trunk_id = step.body.get("trunkID") if step.kind == "sip" else None
        if trunk_id is not None:
            trunk = trunks.get(trunk_id)
            if trunk is None or trunk.tenant_id != (route.tenant_id or ""):
                raise BadRequest(
                    f"field 'steps.sip.trunkID': no trunk {trunk_id[:64]!r}", code="unknown_trunk"
                )
        if step.kind == "agent":
            agents.check(step.body, "steps.agent.")


@routes.get("/routes")
async def list_routes(request: web.Request) -> web.Response:
    principal = principal_of(request)
    every = await request.app[DESK].routes.every()
    mine = [r for r in every if principal.admin or r.tenant_id == principal.tenant_id]
    return web.json_response({"routes": [r.view() for r in mine]})


@routes.get("/routes/{routeID}")
async def get_route(request: web.Request) -> web.Response:
    route = _route_of(request, await request.app[DESK].routes.every())
    return web.json_response(route.view())


@routes.delete("/routes/{routeID}")
async def delete_route(request: web.Request) -> web.Response:
    book = request.app[DESK].routes
    route = _route_of(request, await book.every())
    await book.delete(route.route_id)
    return web.json_response({"routeID": route.route_id, "deleted": True})


async def desk_resources(app: web.Application) -> AsyncIterator[None]:
    """Reads ``SETTINGS``, ``MANAGER``, ``RECORDINGS``, ``PLAYBACK``, ``AGENTS`` (the model agents
    of routes' ``agent`` steps), ``DIRECTORY`` (whether Redis is known away, before each of
    the store's commands; whether a call is live on another worker; legs lent across
    workers, with ``INTERNAL_HTTP``); makes ``DESK`` (after the calls, so it
    closes before them: agents are told nothing more once calls end)."""
    settings = app[SETTINGS]
    cluster, directory = settings.cluster, app[DIRECTORY]
    if cluster.shared:
        from ..desk.redis_store import RedisDeskStore  # redis is imported only when used

        # Its commands fail at once while the directory's lease knows Redis away; a failed
        # one tells the lease so.
        store: object = RedisDeskStore(cluster.directory, directory.check)
    else:
        store = MemoryDeskStore()
    manager = app[MANAGER]
    desk = app[DESK] = Desk(
        store,  # type: ignore[arg-type]
        AgentTokens(key_for(cluster.internal_secret, settings.storage.data_dir)),
        manager,
        app[RECORDINGS],
        app[PLAYBACK],
        worker_id=manager.owner,
    )
    desk.models = app[AGENTS]

    async def live_elsewhere(call_id: str) -> bool:
        record = await directory.record(call_id)
        return record is not None and record.live

    desk.presence.elsewhere = live_elsewhere  # a reconnect keeps busy only on a live call
    url = getattr(directory, "url", None)
    if cluster.shared and isinstance(url, str):  # legs lent to calls on other workers
        opener = relay_opener(app[INTERNAL_HTTP], cluster.internal_secret)
        desk.lending = Lending(desk, opener, url)
    await desk.start()
    try:
        yield
    finally:
        await desk.close()
