"""Call permissions (Meta's Cloud API): ``POST /call/permissions`` asks a WhatsApp user for
permission to call them, ``GET /call/permissions/{phone}`` reads it; the user's answers
arrive as ``call.permission`` events. A user who shows no phone number is named by their BSUID
(``recipient`` in the body; in the path in place of the phone). ``from`` (body) or ``?from=``
names the number asked about when the caller has several. 404 on an engine without call
permissions."""

from __future__ import annotations

from aiohttp import web

from ..calls.model import normalize_user
from ..engines import Engine, PermissionEngine
from ..errors import NotFound
from .keys import CATALOG, SWITCHBOARD
from .schema import read_body
from .tenancy import principal_of
from .users import user_of

routes = web.RouteTableDef()


def _engine(request: web.Request, number: object) -> PermissionEngine:
    """The engine of the number asked about (``from``: its phone or numberID; needed when the
    caller has several numbers)."""
    found = request.app[CATALOG].resolve_from(number, principal_of(request).tenant_id)
    engine: Engine = request.app[SWITCHBOARD].engine(found.number_id)
    if not isinstance(engine, PermissionEngine):
        raise NotFound(
            f"the {engine.name} engine has no call permissions (Meta's Cloud API over Graph "
            "has: BRIDGE_ENGINE=cloudapi)"
        )
    return engine


@routes.post("/call/permissions")
async def request_permission(request: web.Request) -> web.Response:
    """Send the user a call-permission request: ``202 {"messageID"}`` (Meta's message id)."""
    body = await read_body(request, "PermissionRequest")
    engine = _engine(request, body.get("from"))
    phone = user_of(body)  # or the BSUID of a user who shows no phone
    template = body.get("template")
    message_id = await engine.request_permission(phone, template, body.get("text", ""))
    return web.json_response({"messageID": message_id}, status=202)


@routes.get("/call/permissions/{phone}")
async def read_permission(request: web.Request) -> web.Response:
    """The user's call permission: ``status``, ``expiresAt``, ``canCall``, ``limits``…"""
    engine = _engine(request, request.query.get("from"))
    phone = normalize_user(request.match_info["phone"])
    return web.json_response(await engine.read_permission(phone))
