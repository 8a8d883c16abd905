"""The WebRTC routes: ICE config, offer/answer, close (WaGo-compatible)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from ..attachments import Playback
from ..calls.offers import answer_offer
from ..desk import handoffs
from ..errors import BadRequest
from ..media import Role
from .errors import require_call_id
from .keys import DESK, MANAGER, PLAYBACK, SETTINGS, TURN
from .media import check_asset
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
    sdp: str = body["sdp"]  # the schema: type "offer", sdp with a non-blank character
    participant_id = participant_of(body)
    role = role_of(body) if "role" in body else None  # None: the participant's own, else agent
    answer = await answer_offer(request.app[MANAGER], call_id, sdp, participant_id, role)
    return web.json_response(
        {"callID": call_id, "type": "answer", "sdp": answer, "participantID": participant_id}
    )


@routes.post("/call/webrtc/close")
async def webrtc_close(request: web.Request) -> web.Response:
    body = await read_body(request, "ParticipantRequest")
    manager = request.app[MANAGER]
    call = manager.get(require_call_id(body))
    runtime = manager.find_runtime(call.id)  # an ended call has none: nothing to close
    if runtime is not None:
        await runtime.participants.leave(participant_of(body))
    return web.json_response({"callID": call.id, "closed": True})


def participant_of(body: dict[str, Any], field: str = "participantID") -> str:
    """A participant id the schema has checked (``ParticipantId``); ``"agent"`` when absent."""
    value: str = body.get(field, "agent")
    return value


def role_of(body: dict[str, Any], default: Role = Role.AGENT) -> Role:
    """The ``role`` the schema has checked (a participant's ``Role``: never ``whatsapp``),
    ``default`` when absent."""
    return Role(body.get("role", default))


@routes.post("/call/participants/role")
async def participant_role(request: web.Request) -> web.Response:
    """Change a participant's role live (a supervisor barging in, a whisperer taking over)."""
    body = await read_body(request, "RoleRequest")
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    runtime.participants.roles.set(participant_of(body), role_of(body))
    return web.json_response(runtime.call.snapshot())


@routes.post("/call/transfer")
async def transfer(request: web.Request) -> web.Response:
    """Cold hand-off: participant ``to`` becomes the agent; the old agent is disconnected.
    Or ``group``: the desk rings the group's available agents while the caller hears
    ``music`` (an audio asset), and the first to accept takes the call (``202``)."""
    body = await read_body(request, "TransferRequest")
    if ("to" in body) == ("group" in body):
        raise BadRequest("give either 'to' (a participant) or 'group' (agents to ring)")
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    if "group" in body:
        music = body.get("music")
        await check_asset(request, music)
        playbacks = request.app[PLAYBACK]

        async def start_music() -> Playback:
            return await playbacks.start(runtime, {"assetId": music, "loop": True})

        await handoffs.transfer(
            request.app[DESK],
            runtime,
            body["group"],
            float(body.get("timeoutS", 30)),
            start_music if music else None,
        )
        ringing = {**runtime.call.snapshot(), "ringingGroup": body["group"]}
        return web.json_response(ringing, status=202)
    await runtime.participants.roles.transfer(participant_of(body, "to"))
    return web.json_response(runtime.call.snapshot())
