"""Routes the WhatsApp engine calls: its webhook."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest
from .keys import ENGINE
from .schema import read_body

routes = web.RouteTableDef()


@routes.post("/engine/webhook")
async def engine_webhook(request: web.Request) -> web.Response:
    """Call events pushed by the engine (ZuckZapGo ``v1.call.*``), so ringing shows at once."""
    body = await read_body(request, "EngineEvent")
    handler = getattr(request.app[ENGINE], "handle_webhook", None)
    if handler is None:
        raise BadRequest(
            f"the {request.app[ENGINE].name} engine takes no webhooks", code="webhook_not_supported"
        )
    accepted = handler(body)
    return web.json_response({"accepted": bool(accepted)})
