"""A peer that accepts a connection and never answers must not hang the bridge: every outbound
handshake is bounded, and its end is the error its caller already handles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.api import internal, routing, stream_relay
from bridge.api.errors import error_middleware
from bridge.api.keys import INTERNAL_HTTP, METRICS
from bridge.http import create_internal_session
from bridge.metrics import Metrics


@pytest.fixture
async def silent_peer() -> AsyncIterator[str]:
    """A TCP server on loopback that accepts and reads, and never says a word back."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_silent_worker_cannot_hang_a_lent_stream(silent_peer, monkeypatch) -> None:
    """The desk's lending and a handover open the call's stream on its worker: a worker that
    accepts and never upgrades is a ConnectionError (what both callers handle), not a wait
    without end."""
    monkeypatch.setattr(internal, "RELAY_HANDSHAKE_TIMEOUT", 0.2)
    async with create_internal_session() as http:
        open_relay = internal.relay_opener(http, "secret")
        with pytest.raises(ConnectionError, match="did not answer"):
            await asyncio.wait_for(open_relay(silent_peer, "w2", "c1"), 5.0)


async def test_a_silent_owner_cannot_hang_a_relayed_stream(
    silent_peer, monkeypatch, aiohttp_client
) -> None:
    """A bot's ``/call/{callID}/stream`` relayed to the call's owner, which accepts and never
    upgrades: 503 ``owner_unreachable`` with the JSON error body, not a hung request."""
    monkeypatch.setattr(stream_relay, "STREAM_HANDSHAKE_TIMEOUT", 0.2)
    app = web.Application(middlewares=[error_middleware()])

    async def stream(request: web.Request) -> web.StreamResponse:
        return await routing.forward(request, silent_peer, "secret", owner="w2")

    app.router.add_get("/call/{callID}/stream", stream)

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[METRICS] = Metrics()
        async with create_internal_session() as http:
            app[INTERNAL_HTTP] = http
            yield

    app.cleanup_ctx.append(session)
    client = await aiohttp_client(app)
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    resp = await asyncio.wait_for(client.get("/call/c1/stream", headers=upgrade), 5.0)
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "owner_unreachable"
