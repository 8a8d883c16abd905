"""SIP trunks at run time: ``/trunks`` (the service for any tenant, a tenant's key for its own).
Changes are written to the numbers' store and are live on every worker within its poll."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..errors import Forbidden, NotFound
from ..numbers.model import check_id
from ..numbers.rules import copy_of_trunk
from ..numbers.trunks import Trunk, apply_trunk_fields, parse_trunk
from ..trunks import TrunkService
from .errors import require_call_id
from .keys import CATALOG, DESK, MANAGER, METRICS, PLAYBACK, SETTINGS, TRUNKS
from .schema import read_body
from .tenancy import principal_of
from .webrtc import role_of

routes = web.RouteTableDef()


def _trunk_for(request: web.Request) -> Trunk:
    """The trunk of the path, if the caller may see it (404 otherwise: not leaked)."""
    trunk_id = check_id(request.match_info["trunkID"], "trunkID")
    trunk = request.app[CATALOG].trunks.get(trunk_id)
    principal = principal_of(request)
    if trunk is None or (not principal.admin and trunk.tenant_id != principal.tenant_id):
        raise NotFound(f"no trunk {trunk_id!r}")
    return trunk


async def _check_music(request: web.Request, trunk: Trunk) -> None:
    """The trunk's ``holdMusic`` is an audio asset its tenant may play (404 otherwise)."""
    if trunk.hold_music:
        await request.app[PLAYBACK].assets.find(trunk.hold_music, trunk.tenant_id or None)


def _view(request: web.Request, trunk: Trunk) -> dict[str, object]:
    service = request.app.get(TRUNKS)
    state = service.upkeep.state(trunk.trunk_id) if service is not None else {}
    return {**trunk.public(), **state}


@routes.post("/trunks")
async def create_trunk(request: web.Request) -> web.Response:
    body = await read_body(request, "TrunkRequest")
    principal = principal_of(request)
    tenant_id = body.pop("tenantID", None)
    if not principal.admin:
        if tenant_id not in (None, principal.tenant_id):
            raise Forbidden("a tenant's key creates trunks for its own tenant only")
        tenant_id = principal.tenant_id
    trunk = parse_trunk(body, tenant_id=tenant_id or "")
    await _check_music(request, trunk)
    cap = request.app[SETTINGS].sip.sip_max_trunks
    await request.app[CATALOG].save_trunk(trunk, cap=cap)  # 409 too_many_trunks at the cap
    return web.json_response(_view(request, trunk), status=201)


@routes.get("/trunks")
async def list_trunks(request: web.Request) -> web.Response:
    mine = request.app[CATALOG].trunks_of(principal_of(request).tenant_id)
    trunks = sorted(mine, key=lambda t: t.trunk_id)
    return web.json_response({"trunks": [_view(request, t) for t in trunks]})


@routes.get("/trunks/{trunkID}")
async def get_trunk(request: web.Request) -> web.Response:
    return web.json_response(_view(request, _trunk_for(request)))


@routes.patch("/trunks/{trunkID}")
async def change_trunk(request: web.Request) -> web.Response:
    _trunk_for(request)  # 404 before the body is read
    body = await read_body(request, "TrunkPatch")
    trunk = _trunk_for(request)  # as it is once the body is in (not brought back if deleted)
    # Its music checked before the write (its record read off the event loop), on the trunk
    # as the body makes it (a change of music meanwhile, on any worker, was checked there).
    checked = copy_of_trunk(request.app[CATALOG], trunk.trunk_id)
    apply_trunk_fields(checked, body)
    await _check_music(request, checked)

    def change(changed: Trunk) -> None:
        apply_trunk_fields(changed, body)

    # Changed as it is at the write (on any worker): a copy read before would undo a change
    # made meanwhile, or bring back a trunk deleted meanwhile.
    changed = await request.app[CATALOG].change_trunk(trunk.trunk_id, change)
    return web.json_response(_view(request, changed))


@routes.delete("/trunks/{trunkID}")
async def delete_trunk(request: web.Request) -> web.Response:
    """No new calls through the trunk from now on; its live calls end normally."""
    trunk = _trunk_for(request)
    await request.app[CATALOG].delete_trunk(trunk.trunk_id)
    return web.json_response({"trunkID": trunk.trunk_id, "deleted": True})


@routes.post("/call/participants")
async def add_sip_participant(request: web.Request) -> web.Response:
    """A SIP phone called into the call through a trunk; its progress comes as events."""
    body = await read_body(request, "SipParticipantRequest")
    call_id = require_call_id(body)
    pid = str(body.get("participantID") or "sip")
    leg = await request.app[TRUNKS].add_participant(call_id, pid, role_of(body), body["sip"])
    return web.json_response(
        {"callID": call_id, "participantID": pid, "state": leg.state}, status=202
    )


async def sip_trunks(app: web.Application) -> AsyncIterator[None]:
    """The app's ``cleanup_ctx`` entry (``resources.py``): reads ``SETTINGS``, ``CATALOG``,
    ``MANAGER``, ``METRICS`` (and tells ``DESK`` which calls a trunk answers, and hands it the
    trunks for routes' ``sip`` steps); makes ``TRUNKS`` (the trunk listener, SIP participants,
    registrations), closed before the calls end."""
    trunks = app[TRUNKS] = TrunkService(app[SETTINGS], app[CATALOG], app[METRICS].registry)
    trunks.manager = app[MANAGER]
    trunks.playback = app[PLAYBACK]  # a phone's hold plays its trunk's holdMusic
    if DESK in app:  # a number a trunk answers is the PBX's: no route, no agent rung
        app[DESK].answered_elsewhere = lambda call: trunks.answering(call) is not None
        app[DESK].trunks = trunks
    await trunks.start()
    yield
    if DESK in app:
        app[DESK].trunks = None
    await trunks.close()
