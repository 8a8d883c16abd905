"""The WebRTC routes: ICE config, offer/answer, close (WaGo-compatible)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from ..errors import BadRequest
from .errors import require_call_id
from .keys import MANAGER, SETTINGS, TURN
from .schema import read_body

routes = web.RouteTableDef()


async def ice_config(request: web.Request) -> dict[str, Any]:
    """STUN URLs plus freshly minted TURN credentials (never the shared secret)."""
    settings = request.app[SETTINGS]
    servers: list[dict[str, Any]] = []
    if settings.ice.stun_urls:
        servers.append({"urls": list(settings.ice.stun_urls)})
    grant = await request.app[TURN].grant(f"web-{secrets.token_hex(6)}")
    servers.extend(grant.servers)
    return {
        "iceServers": servers,
        "iceTransportPolicy": str(settings.ice.ice_policy),
        "turn": {"enabled": grant.status != "disabled", "status": grant.status, "ttl": grant.ttl},
    }


@routes.get("/call/webrtc/config")
async def webrtc_config(request: web.Request) -> web.Response:
    return web.json_response(await ice_config(request), headers={"Cache-Control": "no-store"})


@routes.post("/call/webrtc/offer")
async def webrtc_offer(request: web.Request) -> web.Response:
    body = await read_body(request, "OfferRequest")
    call_id = require_call_id(body)
    kind = body.get("type", "offer")
    if kind != "offer":
        raise BadRequest("field 'type' must be \"offer\"")
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadRequest("field 'sdp' is required and must be the offer's SDP text")
    answer = await request.app[MANAGER].webrtc_offer(call_id, sdp)
    return web.json_response({"callID": call_id, "type": "answer", "sdp": answer})


@routes.post("/call/webrtc/close")
async def webrtc_close(request: web.Request) -> web.Response:
    body = await read_body(request, "CallIdRequest")
    call = await request.app[MANAGER].webrtc_close(require_call_id(body))
    return web.json_response({"callID": call.id, "closed": True})
