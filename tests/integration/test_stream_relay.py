"""A call's PCM WebSocket opened on a worker that does not own the call, relayed to its owner:
two workers (in-process apps) on one real Redis, each the other's peer at its own address."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType

from bridge.api.keys import MANAGER
from bridge.app import create_app
from bridge.attachments import pcm_outbox
from bridge.config.loader import settings_for_tests

from ..support.ports import free_port
from ..support.waits import until
from .test_streams import active_call, let_go, unreading_client

SECRET = "s" * 32


async def worker(aiohttp_client: Any, redis: Any, monkeypatch: Any, name: str) -> Any:
    """A worker of the cluster: its internal address is its own test server's."""
    port = free_port()
    monkeypatch.setenv("BRIDGE_WORKER_ID", name)
    settings = settings_for_tests(
        directory=redis.url, internal_secret=SECRET, internal_url=f"http://127.0.0.1:{port}"
    )
    return await aiohttp_client(create_app(settings), server_kwargs={"port": port})


async def test_a_relayed_client_that_stops_reading_is_bounded_and_its_close_is_too(
    aiohttp_client, redis, monkeypatch, caplog
) -> None:
    """The call on A, its stream opened on B by a client that stops reading: B's relay drops
    the oldest audio within its bound (said once at WARNING), as A's own socket would, and at
    the call's end the relay lets go of the client. Before, the relay kept aiohttp's defaults
    at both ends (megabytes of buffers: minutes of audio ever later, nothing dropped), and its
    close drained without end: the relay's request stayed open as long as the client did."""
    monkeypatch.setattr(pcm_outbox, "OUTGOING_FRAMES", 10)  # the queue's 2 s made 0.2 s
    monkeypatch.setattr(pcm_outbox, "CLOSE_TIMEOUT", 0.5)  # its answer waited for 0.5 s, not 2
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a")
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b")
    call = await active_call(a)
    assert call["owner"] == "worker-a"
    path = f"/call/{call['callID']}/stream?role=listen&format=f32le"
    writer = await unreading_client(b.port, path)
    try:
        runtime = a.app[MANAGER].runtime(call["callID"])
        await until(lambda: runtime.attached("socket"), 5, "the relay attached on A")

        def said() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "reads too slowly" in r.getMessage()]

        await until(said, 5, "the relay's oldest audio dropped")
        assert [r.levelno for r in said()] == [logging.WARNING], caplog.text
        owners = runtime.attached("socket")
        assert owners[0].dropped == 0  # the relay reads the owner's socket as it sends
        hangup = a.post("/call/hangup", json={"callID": call["callID"]})
        assert (await asyncio.wait_for(hangup, 5)).status == 200
        await until(lambda: runtime.final_stats is not None, 5, "the call's teardown done")
        await until(lambda: let_go(writer), 5, "the relay let go of the client")
    finally:
        writer.close()


async def test_a_relayed_clients_message_over_the_limit_is_said_where_it_was_refused(
    aiohttp_client, redis, monkeypatch, caplog
) -> None:
    """The call on A, its stream opened on B by a client that sends 1.5 MiB in one message:
    B closes the client's socket (1009) and says why once at WARNING, naming the call, as A
    says it of its own sockets; the call goes on. B's relay ended with nothing said."""
    caplog.set_level(logging.INFO, logger="bridge")
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a")
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b")
    call = await active_call(a)
    cid = call["callID"]
    ws = await b.ws_connect(f"/call/{cid}/stream")
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    await ws.send_bytes(bytes(1_500_000))
    while (await asyncio.wait_for(ws.receive(), 5)).type not in (
        WSMsgType.CLOSE,
        WSMsgType.CLOSED,
    ):
        pass
    said = await until(
        lambda: [r for r in caplog.records if "exceeds limit" in r.getMessage()], 5, "said"
    )
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert cid in said[0].getMessage() and "relayed" in said[0].getMessage()
    assert (await (await a.get(f"/call/{cid}")).json())["state"] == "active"
