"""What a media fork's app sends that the fork cannot take: said once at WARNING, and an end
the bridge caused is never reported as the app's own (``disconnected``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from aiohttp import web

from ..support.calls import wait_state
from ..support.raw_ws import switching_protocols
from ..support.waits import until


async def active_call(client) -> dict:
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    return call


async def test_an_apps_binary_and_oversized_messages_are_said_and_end_the_fork_as_error(
    make_client, aiohttp_server, caplog
) -> None:
    """A two-way fork's app sends raw PCM as binary messages (its audio goes in JSON ``media``
    events): said once at WARNING, its later JSON still heard. Then a message over the 1 MiB
    the fork takes: aiohttp closes the socket (1009) and the fork ends ``stream.stopped``
    with reason ``error``, the cause said at WARNING. Before, both went unsaid, and the
    oversized message ended the fork as ``disconnected``, as if the app had closed it."""
    from bridge.resources import CALL_EVENTS

    acknowledged = asyncio.Event()
    closed: list[int | None] = []

    async def app_side(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            body = json.loads(msg.data)
            if body["event"] == "start":
                for _ in range(50):  # a second of raw PCM, one message a frame
                    await ws.send_bytes(bytes(640))
                await ws.send_str(json.dumps({"event": "mark", "mark": {"name": "after"}}))
            elif body["event"] == "mark" and body["mark"]["name"] == "after":
                acknowledged.set()
                payload = base64.b64encode(bytes(800_000)).decode()  # over 1 MiB in base64
                await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
        closed.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/ws", app_side)
    server = await aiohttp_server(app)
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    seen: list = []
    client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event))
    call = await active_call(client)
    caplog.set_level(logging.INFO, logger="bridge")
    resp = await client.post(
        f"/call/{call['callID']}/streams",
        json={"url": f"ws://127.0.0.1:{server.port}/ws", "channel": "inbound", "type": "twoway"},
    )
    assert resp.status == 201, await resp.text()
    stream_id = (await resp.json())["streamId"]
    await asyncio.wait_for(acknowledged.wait(), 5)
    stopped = await until(
        lambda: [e for e in seen if e.type in ("stream.stopped", "stream.dropped")], 5, "its end"
    )
    assert [(e.data["streamId"], e.data["reason"]) for e in stopped] == [(stream_id, "error")]
    await until(lambda: closed, 5, "the app's socket closed")
    assert closed == [1009]  # message too big
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    binary = [w for w in warnings if "binary message" in w]
    too_big = [w for w in warnings if "exceeds limit" in w]
    assert len(binary) == 1 and len(too_big) == 1, warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert (await wait_state(client, call["callID"], "active"))["state"] == "active"


async def silent_app() -> tuple[asyncio.AbstractServer, int, list[asyncio.StreamWriter]]:
    """A fork's app that completes the WebSocket handshake, then neither reads nor answers
    anything (the bridge's close frame included)."""
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(switching_protocols(head))
        await writer.drain()
        held.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], held


async def test_a_fork_stopping_as_its_call_ends_is_over_before_the_calls_end(make_client) -> None:
    """A fork is being stopped (``DELETE``: its ``stop`` sent, its close waiting for an app
    that does not answer) when the call hangs up: the call's end waits for that one teardown,
    so the fork's ``stream.stopped`` comes before ``call.ended``. The runtime's close of the
    fork returned at once (the fork was already stopping), and its ``stream.stopped`` came
    after the call had ended, from a close nobody owned any more."""
    from bridge.resources import CALL_EVENTS

    server, port, held = await silent_app()
    try:
        client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
        seen: list[str] = []
        client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event.type))
        call = await active_call(client)
        cid = call["callID"]
        resp = await client.post(f"/call/{cid}/streams", json={"url": f"ws://127.0.0.1:{port}/"})
        assert resp.status == 201, await resp.text()
        stream_id = (await resp.json())["streamId"]
        stopping = asyncio.ensure_future(client.delete(f"/call/{cid}/streams/{stream_id}"))
        await asyncio.sleep(0.2)  # its stop sent; its close waits for the app's answer
        assert not stopping.done()
        assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
        assert "call.ended" in seen
        assert (await asyncio.wait_for(stopping, 5)).status == 200
        ends = [t for t in seen if t in ("stream.stopped", "call.ended")]
        assert ends == ["stream.stopped", "call.ended"], seen
    finally:
        for writer in held:
            writer.close()
        server.close()
