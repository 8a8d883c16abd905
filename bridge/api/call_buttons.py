"""``POST /numbers/{numberID}/call-button``: send a WhatsApp user the number's "Call on
WhatsApp" button (Meta's ``voice_call`` interactive message) inside the user's 24 h service
window (409 ``outside_service_window`` outside it, as for permission requests; refused before
Meta when the bridge saw the window close: ``CallPermissions.send_call_button``); the button's
``payload`` comes back on the call the user starts from it (``metadata.whatsapp.ctaPayload``).
The user is ``to`` (digits) or, for a user who shows no phone, ``recipient`` (their BSUID).
A number whose provider has no such button is 404 ``call_button_not_supported``."""

from __future__ import annotations

from aiohttp import web

from ..engines import CallButtonEngine
from ..errors import NotFound
from .keys import SWITCHBOARD
from .numbers import _number_for as number_for  # the same 404 rules
from .schema import read_body
from .users import user_of

routes = web.RouteTableDef()


@routes.post("/numbers/{numberID}/call-button")
async def send_call_button(request: web.Request) -> web.Response:
    number = number_for(request)
    engine = request.app[SWITCHBOARD].engines.get(number.number_id)
    if not isinstance(engine, CallButtonEngine):
        raise NotFound(
            f"number {number.number_id} cannot send a call button (only a Cloud API number can)",
            code="call_button_not_supported",
        )
    body = await read_body(request, "CallButtonRequest")
    user = user_of(body, "to")  # or the BSUID of a user who shows no phone
    button = {k: body[k] for k in ("text", "buttonText", "ttlMinutes", "payload") if k in body}
    message_id = await engine.send_call_button(user, button)
    named = {"to": user} if user.isdigit() else {"recipient": user}
    return web.json_response(
        {"numberID": number.number_id, **named, "messageID": message_id}, status=202
    )
