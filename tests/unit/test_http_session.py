"""The process's one outgoing HTTP session carries long-lived WebSockets (a ZuckZapGo or
WADial call's media socket, media forks, model agents) beside short requests (the engine's
REST calls, Meta's Graph API, webhooks, playback fetches): however many sockets are open, a
request still goes out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.http import create_http_session, retry_after

SOCKETS = 120
"""More long-lived sockets than aiohttp's default pool holds (100): 20 calls with 5 forks
each and a few engine media sockets, well under ``BRIDGE_MAX_CALLS``."""


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    """An app on loopback: ``/ws`` a WebSocket held open, ``/hook`` a webhook receiver."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            pass
        return sock

    async def hook(request: web.Request) -> web.Response:
        return web.json_response({"received": len(await request.read())})

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_open_websockets_never_starve_the_sessions_requests(peer) -> None:
    """It was aiohttp's default pool of 100 connections: the 100 sockets of a busy worker held
    every connection, and the engine's requests, the webhooks and the 101st call's media
    socket waited for one until their timeouts (a call that could not be placed or hung up)."""
    async with create_http_session() as http:
        sockets = [await asyncio.wait_for(http.ws_connect(f"{peer}/ws"), 5) for _ in range(SOCKETS)]
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with http.post(f"{peer}/hook", data=b"{}", timeout=timeout) as resp:
                assert resp.status == 200
                assert await resp.json() == {"received": 2}
            assert all(not s.closed for s in sockets)
        finally:
            await asyncio.gather(*(s.close() for s in sockets))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 5.0),  # the preferred date form
        ("Sunday, 06-Nov-94 08:49:37 GMT", 5.0),  # RFC 850's, obsolete
        ("Sun Nov  6 08:49:37 1994", 5.0),  # asctime's, obsolete, no zone: GMT
        ("Sun, 06 Nov 1994 08:49:30 GMT", 0.0),  # past: now
        ("soon", None),
        ("-1", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float) -> None:
    """RFC 9110 §10.2.3: ``Retry-After`` is seconds or an HTTP date (in any of its three
    forms, read against the wall clock); anything else is no wait asked."""
    assert retry_after(value, now=784111777.0 - 5.0) == seconds
