"""Call permissions (Meta's Cloud API): ``POST /call/permissions`` asks a WhatsApp user for
permission to call them, ``GET /call/permissions/{phone}`` reads it; the user's answers
arrive as ``call.permission`` events. 404 on an engine without call permissions."""

from __future__ import annotations

from aiohttp import web

from ..calls import normalize_phone
from ..engines import Engine, PermissionEngine
from ..errors import NotFound
from .keys import ENGINE
from .schema import read_body

routes = web.RouteTableDef()


def _engine(request: web.Request) -> PermissionEngine:
    engine: Engine = request.app[ENGINE]
    if not isinstance(engine, PermissionEngine):
        raise NotFound(
            f"the {engine.name} engine has no call permissions (Meta's Cloud API over Graph "
            "has: BRIDGE_ENGINE=cloudapi)"
        )
    return engine


@routes.post("/call/permissions")
async def request_permission(request: web.Request) -> web.Response:
    """Send the user a call-permission request: ``202 {"messageID"}`` (Meta's message id)."""
    engine = _engine(request)
    body = await read_body(request, "PermissionRequest")
    phone = normalize_phone(body.get("phone"))
    template = body.get("template")
    message_id = await engine.request_permission(phone, template)
    return web.json_response({"messageID": message_id}, status=202)


@routes.get("/call/permissions/{phone}")
async def read_permission(request: web.Request) -> web.Response:
    """The user's call permission: ``status``, ``expiresAt``, ``canCall``, ``limits``…"""
    engine = _engine(request)
    phone = normalize_phone(request.match_info["phone"])
    return web.json_response(await engine.read_permission(phone))
