"""Routes the WhatsApp engines call: the one webhook front door of every number. Which number's
engine a webhook is for is the switchboard's to say; what it means is that engine's (a
``WebhookEngine``); these handlers only hand it the raw body and its answer back."""

from __future__ import annotations

from aiohttp import web

from ..engines import WebhookEngine
from ..engines.webhooks import WEBHOOK_LIMIT
from ..errors import NotFound, Unauthorized
from ..numbers.front_door import (
    also_for,
    body_may_tell,
    names_deleted,
    number_of,
    refused_signature,
    signed_door,
    verify_subscription,
    webhook_engine,
)
from .errors import read_raw_json
from .keys import SWITCHBOARD
from .tenancy import principal_of

routes = web.RouteTableDef()

WEBHOOK_PATH = "/engine/webhook"


async def authenticates_itself(request: web.Request) -> bool:
    """A request to the webhook whose sender signs its webhooks (Meta: the app secret's
    signature) needs no API token: every number's engine checks the signature itself. So does
    Meta's webhook about a call of a number deleted here (:func:`names_deleted`), on a worker
    left with no Cloud API number: the call's worker checks it. Its body is read for that (once,
    within the webhook's bound: the router and the handler take it from there), only where
    such a number is remembered. The ``GET`` (the sender's subscription check) needs none
    either: the verify token it carries is its credential, checked by the handler (403), and
    on a bridge whose engines have no such check it is 404 (it was 401 there, with API tokens
    set, against the OpenAPI document)."""
    app = request.app
    if request.path != WEBHOOK_PATH or SWITCHBOARD not in app:
        return False
    if request.method == "GET":
        return True
    switchboard = app[SWITCHBOARD]
    if signed_door(switchboard, request.query):
        return True
    if request.method != "POST" or not body_may_tell(switchboard, request.query):
        return False
    return names_deleted(switchboard, await read_raw_json(request, WEBHOOK_LIMIT))


@routes.get(WEBHOOK_PATH)
async def engine_webhook_verify(request: web.Request) -> web.Response:
    """The webhook sender's verification request (Meta's subscription check): answered with
    whichever number's verify token matches."""
    text = verify_subscription(request.app[SWITCHBOARD], request.query)
    return web.Response(text=text, content_type="text/plain")


@routes.post(WEBHOOK_PATH)
async def engine_webhook(request: web.Request) -> web.Response:
    """Call events pushed by an engine: ZuckZapGo ``v1.call.*`` (so ringing shows at once),
    or Meta's signed Cloud API webhooks (verified on the raw body with the app secret of the
    number they name, worked on after the 200). A webhook for a Meta number nobody here has is
    acknowledged (Meta retries otherwise) and logged once."""
    raw = await read_raw_json(request, WEBHOOK_LIMIT)  # as sent (the router may have read it)
    engine = webhook_engine(request.app[SWITCHBOARD], raw, request.query)
    if engine is None:
        return web.json_response({"accepted": False})
    _refuse_another_tenants(request, engine)
    try:
        accepted = engine.receive_webhook(raw, request.headers)
    except Unauthorized as exc:
        refused_signature(request.app[SWITCHBOARD], raw, exc.message)
        raise
    switchboard = request.app[SWITCHBOARD]
    for other in also_for(switchboard, raw, request.query, engine):
        # Another number's changes in the same body (Meta batches them): its engine takes
        # its own. A refusal of it is its own, said once (a full queue is the answer: Meta
        # delivers the body again, and the first engine's repeats change nothing).
        try:
            _refuse_another_tenants(request, other)
            other.receive_webhook(raw, request.headers)
        except (Unauthorized, NotFound) as exc:
            refused_signature(switchboard, raw, exc.message, number_of(switchboard, other))
    return web.json_response({"accepted": accepted})


def _refuse_another_tenants(request: web.Request, engine: WebhookEngine) -> None:
    """A tenant's key posts the webhooks of its own numbers only: another's is 404, as on
    every route (a webhook of its number rings calls on it and ends them)."""
    principal = principal_of(request)
    if principal.admin:
        return
    switchboard = request.app[SWITCHBOARD]
    number_id = number_of(switchboard, engine)
    number = switchboard.catalog.number(number_id) if switchboard.catalog is not None else None
    if number is None or number.tenant_id != principal.tenant_id:
        named = request.query.get("number")
        raise NotFound(
            f"no number {named[:64]!r} takes webhooks here"
            if named is not None
            else "no number of yours takes webhooks here: name one with ?number=<numberID>"
        )
