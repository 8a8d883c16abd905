"""The WebRTC routes: ICE config, offer/answer, close (WaGo-compatible)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiohttp import web

from ..errors import BadRequest
from ..media import Role
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
    participant_id = participant_of(body)
    role = role_of(body, default=Role.AGENT)
    answer = await request.app[MANAGER].webrtc_offer(call_id, sdp, participant_id, role)
    return web.json_response(
        {"callID": call_id, "type": "answer", "sdp": answer, "participantID": participant_id}
    )


@routes.post("/call/webrtc/close")
async def webrtc_close(request: web.Request) -> web.Response:
    body = await read_body(request, "CallIdRequest")
    manager = request.app[MANAGER]
    call = manager.get(require_call_id(body))
    runtime = manager.find_runtime(call.id)  # an ended call has none: nothing to close
    if runtime is not None:
        await runtime.close_session(participant_of(body))
    return web.json_response({"callID": call.id, "closed": True})


def participant_of(body: dict[str, Any], field: str = "participantID") -> str:
    """A participant id: ``[A-Za-z0-9_-]{1,64}``, ``"agent"`` when absent."""
    value = body.get(field, "agent")
    if not isinstance(value, str) or not _PARTICIPANT.match(value):
        raise BadRequest(f"field {field!r} must be 1-64 letters, digits, '_' or '-'")
    return value


def role_of(body: dict[str, Any], default: Role | None = None) -> Role:
    value = body.get("role", default)
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return Role(value)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise BadRequest(f"field 'role' must be one of {roles}") from None


_PARTICIPANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@routes.post("/call/participants/role")
async def participant_role(request: web.Request) -> web.Response:
    """Change a participant's role live (a supervisor barging in, a whisperer taking over)."""
    body = await read_body(request, "RoleRequest")
    if "participantID" not in body or "role" not in body:
        raise BadRequest("fields 'participantID' and 'role' are required")
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    runtime.set_role(participant_of(body), role_of(body))
    return web.json_response(runtime.call.snapshot())


@routes.post("/call/transfer")
async def transfer(request: web.Request) -> web.Response:
    """Cold hand-off: participant ``to`` becomes the agent; the old agent is disconnected."""
    body = await read_body(request, "TransferRequest")
    if "to" not in body:
        raise BadRequest("field 'to' (a participantID on the call) is required")
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    await runtime.transfer(participant_of(body, "to"))
    return web.json_response(runtime.call.snapshot())
