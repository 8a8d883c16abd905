"""Routes the WhatsApp engine calls: its webhook. What a webhook means is the engine's to say
(a ``WebhookEngine``); these handlers only hand it the raw body and the engine's answer back."""

from __future__ import annotations

from aiohttp import web

from ..engines import SignedWebhookEngine, WebhookEngine
from ..engines.base import WEBHOOK_LIMIT
from ..errors import BadRequest, NotFound
from .errors import read_raw_json
from .keys import ENGINE

routes = web.RouteTableDef()

WEBHOOK_PATH = "/engine/webhook"


def authenticates_itself(request: web.Request) -> bool:
    """A request to the webhook of an engine whose webhooks carry their own authentication
    (Meta's signature): it needs no API token."""
    app = request.app
    return (
        request.path == WEBHOOK_PATH
        and ENGINE in app
        and isinstance(app[ENGINE], SignedWebhookEngine)
    )


@routes.get(WEBHOOK_PATH)
async def engine_webhook_verify(request: web.Request) -> web.Response:
    """The webhook sender's verification request (Meta's subscription check), answered by
    the engine."""
    engine = request.app[ENGINE]
    if not isinstance(engine, SignedWebhookEngine):
        raise NotFound(f"the {engine.name} engine has no webhook verification")
    return web.Response(text=engine.verify_subscription(request.query), content_type="text/plain")


@routes.post(WEBHOOK_PATH)
async def engine_webhook(request: web.Request) -> web.Response:
    """Call events pushed by the engine: ZuckZapGo ``v1.call.*`` (so ringing shows at once),
    or Meta's signed Cloud API webhooks (verified on the raw body, worked on after the 200)."""
    engine = request.app[ENGINE]
    if not isinstance(engine, WebhookEngine):
        raise BadRequest(
            f"the {engine.name} engine takes no webhooks", code="webhook_not_supported"
        )
    # The raw body, as sent (read once: the router may have read it to find the calls).
    raw = await read_raw_json(request, WEBHOOK_LIMIT)
    accepted = engine.receive_webhook(raw, request.headers)
    return web.json_response({"accepted": accepted})
