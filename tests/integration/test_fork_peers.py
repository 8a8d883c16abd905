"""What a media fork's app sends that the fork cannot take: said once at WARNING, and an end
the bridge caused is never reported as the app's own (``disconnected``)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

from aiohttp import web

from ..support.calls import wait_state
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
