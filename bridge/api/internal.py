"""Routes between instances only: a live call moved here from another worker
(``POST /call/handover``), and the client side that sends one."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ..calls.handover import MovedCall
from ..cluster import WorkerInfo
from ..cluster.handover import Send
from ..errors import NotFound
from .auth import FORWARDED, INTERNAL_HEADER, OWNER_HEADER
from .keys import HANDOVER
from .schema import read_body

routes = web.RouteTableDef()

HANDOVER_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=2)
"""The new owner answers once the engine took its media socket (a few seconds at most)."""


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
