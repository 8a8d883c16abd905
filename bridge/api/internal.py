"""Routes between instances only: a live call moved here from another worker
(``POST /call/handover``), and the client side that sends one."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..audio import FRAME_SAMPLES
from ..calls.handover import MovedCall
from ..calls.letting_go import OpenRelay
from ..cluster import WorkerInfo
from ..cluster.handover import Send
from ..engines import EngineStats, MediaChannel, PcmStreamMedia
from ..errors import NotFound
from .auth import FORWARDED, INTERNAL_HEADER, OWNER_HEADER
from .keys import HANDOVER
from .schema import read_body

routes = web.RouteTableDef()

HANDOVER_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=2)
"""The new owner answers once the engine took its media socket (a few seconds at most)."""
RELAY_HANDSHAKE_TIMEOUT = 5.0
"""Seconds the call's worker has to upgrade its stream: the session bounds only the connect,
and a worker that accepts and never answers held the desk's lending of a leg for ever."""


@routes.post("/call/handover")
async def handover_call(request: web.Request) -> web.Response:
    """Between instances only: carry on a live call another worker hands over (it drains) —
    claimed in the directory and its engine media open before the answer. 404 without the
    internal secret."""
    if not request.get(FORWARDED) or HANDOVER not in request.app:
        raise NotFound(f"no route {request.method} {request.path}")
    body = await read_body(request, "HandoverRequest", limit=256 * 1024)
    call = await request.app[HANDOVER].adopt(MovedCall.from_json(body))
    return web.json_response(call.snapshot(), status=201)


def relay_opener(http: aiohttp.ClientSession, secret: str) -> OpenRelay:
    """``open(url, worker, call id)``: the call's PCM stream on the worker that carries it on
    now (``GET /call/{callID}/stream``, s16le), as a media channel of the old worker."""

    async def open_relay(url: str, worker: str, call_id: str) -> MediaChannel:
        try:
            async with asyncio.timeout(RELAY_HANDSHAKE_TIMEOUT):
                ws = await http.ws_connect(
                    url.replace("http://", "ws://", 1) + f"/call/{quote(call_id)}/stream",
                    headers={INTERNAL_HEADER: secret, OWNER_HEADER: worker},
                    timeout=aiohttp.ClientWSTimeout(ws_close=2),
                    heartbeat=10,
                )
        except aiohttp.ClientError as exc:
            raise ConnectionError(str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise ConnectionError(
                f"worker {worker} did not answer the stream's upgrade within "
                f"{RELAY_HANDSHAKE_TIMEOUT:g} s"
            ) from None
        # 60 ms batches, as before (the stream takes any whole number of samples).
        return PcmStreamMedia(ws, call_id, EngineStats(), batch_samples=3 * FRAME_SAMPLES)

    return open_relay


def handover_sender(http: aiohttp.ClientSession, secret: str) -> Send:
    """``send(worker, moved)``: ``POST /call/handover`` on ``worker``; its status and body."""

    async def send(worker: WorkerInfo, moved: MovedCall) -> tuple[int, str]:
        try:
            async with http.post(
                worker.url + "/call/handover",
                json=moved.to_json(),
                headers={INTERNAL_HEADER: secret, OWNER_HEADER: worker.id},
                timeout=HANDOVER_TIMEOUT,
                allow_redirects=False,
            ) as resp:
                return resp.status, await resp.text()
        except aiohttp.ClientError as exc:
            return 0, str(exc) or type(exc).__name__

    return send
