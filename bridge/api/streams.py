"""``GET /call/{callID}/stream``: the call's PCM over a WebSocket (ZuckZapGo-compatible by
default), and the media-fork routes ``/call/{callID}/streams``."""

from __future__ import annotations

from aiohttp import web

from ..attachments import ForkService, PcmSocket
from ..attachments.pcm_outbox import pcm_response
from ..errors import BadRequest, CallStateError
from .keys import FORKS, MANAGER
from .schema import read_body

routes = web.RouteTableDef()


@routes.get("/call/{callID}/stream")
async def call_stream(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER]
    call = manager.get(request.match_info["callID"])
    if not call.live:
        raise CallStateError(f"call {call.id} has ended")
    encoding = request.query.get("format", "s16le")
    if encoding not in ("s16le", "f32le"):
        raise BadRequest("format must be s16le or f32le")
    try:
        frame_ms = int(request.query.get("frame_ms", "20"))
    except ValueError:
        frame_ms = 0
    if frame_ms not in (20, 60):
        raise BadRequest("frame_ms must be 20 or 60")
    role = request.query.get("role", "talk")
    if role not in ("talk", "listen"):
        raise BadRequest("role must be talk or listen")
    runtime = manager.runtime(call.id)
    ws = pcm_response()
    if not ws.can_prepare(request).ok:  # aiohttp's own refusal said only "Bad Request"
        raise BadRequest("GET /call/{callID}/stream is a WebSocket: send an upgrade request")
    await ws.prepare(request)
    await PcmSocket(
        ws,
        request.transport,
        runtime,
        state=str(call.state),
        encoding=encoding,
        frame_ms=frame_ms,
        listen_only=role == "listen",
    ).run()
    return ws


@routes.post("/call/{callID}/streams")
async def start_fork(request: web.Request) -> web.Response:
    body = await read_body(request, "ForkRequest")
    runtime = request.app[MANAGER].runtime(request.match_info["callID"])
    fork = await request.app[FORKS].start(runtime, body)
    return web.json_response({"streamId": fork.id, "callID": runtime.call_id}, status=201)


@routes.delete("/call/{callID}/streams/{streamId}")
async def stop_fork(request: web.Request) -> web.Response:
    runtime = request.app[MANAGER].runtime(request.match_info["callID"])
    await ForkService.stop(runtime, request.match_info["streamId"])
    return web.json_response({"streamId": request.match_info["streamId"], "stopped": True})
