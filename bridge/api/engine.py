"""Routes the WhatsApp engine calls: its webhook."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest
from .errors import read_json
from .keys import ENGINE

routes = web.RouteTableDef()


@routes.post("/engine/webhook")
async def engine_webhook(request: web.Request) -> web.Response:
    """Call events pushed by the engine (ZuckZapGo ``v1.call.*``), so ringing shows at once."""
    body = await read_json(request)
    handler = getattr(request.app[ENGINE], "handle_webhook", None)
    if handler is None:
        raise BadRequest(
            f"the {request.app[ENGINE].name} engine takes no webhooks", code="webhook_not_supported"
        )
    accepted = handler(body)
    return web.json_response({"accepted": bool(accepted)})
