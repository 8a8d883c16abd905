"""Routes the WhatsApp engine calls: its webhook."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest, NotFound
from .errors import read_raw_json
from .keys import ENGINE
from .schema import read_body

routes = web.RouteTableDef()

SIGNED_WEBHOOK_LIMIT = 256 * 1024
"""Largest signed (Cloud API) webhook body: a few calls with their SDP."""


@routes.get("/engine/webhook")
async def engine_webhook_verify(request: web.Request) -> web.Response:
    """Meta's subscription check (cloudapi): echo ``hub.challenge`` when the token matches."""
    verify = getattr(request.app[ENGINE], "verify_subscription", None)
    if verify is None:
        raise NotFound(f"the {request.app[ENGINE].name} engine has no webhook verification")
    q = request.query
    challenge = verify(
        q.get("hub.mode", ""), q.get("hub.verify_token", ""), q.get("hub.challenge", "")
    )
    return web.Response(text=challenge, content_type="text/plain")


@routes.post("/engine/webhook")
async def engine_webhook(request: web.Request) -> web.Response:
    """Call events pushed by the engine: ZuckZapGo ``v1.call.*`` (so ringing shows at once),
    or Meta's signed Cloud API webhooks (verified on the raw body, worked on after the 200)."""
    engine = request.app[ENGINE]
    receive = getattr(engine, "receive_webhook", None)
    if receive is not None:
        # The raw body, as signed (read once: the router may have read it to find the call).
        raw = await read_raw_json(request, SIGNED_WEBHOOK_LIMIT)
        receive(raw, request.headers.get("X-Hub-Signature-256"))
        return web.json_response({"accepted": True})
    body = await read_body(request, "EngineEvent")
    handler = getattr(engine, "handle_webhook", None)
    if handler is None:
        raise BadRequest(
            f"the {engine.name} engine takes no webhooks", code="webhook_not_supported"
        )
    accepted = handler(body)
    return web.json_response({"accepted": bool(accepted)})
