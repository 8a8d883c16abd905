"""A PCM socket's client that asks or sends what the socket does not take."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType

from bridge.api.keys import MANAGER
from bridge.audio import tone

from ..support.calls import wait_state
from ..support.waits import until


async def test_a_message_over_the_limit_closes_the_socket_1009_said_at_warning(
    make_client, caplog
) -> None:
    """A client sends 1.5 MiB of audio in one message: its socket is closed (1009, message too
    big), the reason said once at WARNING with the call, and the call goes on. Nothing in the
    log said why a bot's socket went."""
    caplog.set_level(logging.INFO, logger="bridge")
    client = await make_client(sim_peer="silence")
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    ws = await client.ws_connect(f"/call/{cid}/stream")
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    await ws.send_bytes(bytes(1_500_000))
    while (await asyncio.wait_for(ws.receive(), 5)).type not in (
        WSMsgType.CLOSE,
        WSMsgType.CLOSED,
    ):
        pass
    # The bridge closes it 1009; a client still sending the rest may see the reset (1006).
    said = await until(
        lambda: [r for r in caplog.records if "exceeds limit" in r.getMessage()], 5, "said"
    )
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert cid in said[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert (await wait_state(client, cid, "active"))["state"] == "active"


async def test_audio_sent_too_far_ahead_loses_its_oldest_said_once(make_client, caplog) -> None:
    """A bot sends 12 s of speech at once (a TTS clip whole), more than the 10 s a socket's
    client may have queued: the oldest 2 s go — counted in the call's stats — and that is said
    once at WARNING, naming the call and the socket, and the amount at the socket's close. It
    was only counted: nothing in the log said why the start of a bot's sentence was never
    heard."""
    caplog.set_level(logging.INFO, logger="bridge")
    client = await make_client(sim_peer="silence")
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    ws = await client.ws_connect(f"/call/{cid}/stream")
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    second = (tone(500.0, 16_000, 16_000, 0.2)).astype("<i2").tobytes()
    for _ in range(12):
        await ws.send_bytes(second)
    stats = await until(
        lambda: client.app[MANAGER].runtime(cid).bus.stats.source_frames_dropped, 5, "drops"
    )
    await asyncio.sleep(0.2)
    assert client.app[MANAGER].runtime(cid).bus.stats.source_frames_dropped == stats
    assert 95 <= stats <= 100  # 2 s, less what played while the seconds came in
    said = [r for r in caplog.records if "ahead of the call" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert cid in said[0].getMessage() and "PCM socket" in said[0].getMessage()
    await ws.close()
    await until(lambda: [r for r in caplog.records if "too far ahead" in r.getMessage()], 5, "")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_plain_get_of_the_stream_is_a_400_saying_it_is_a_websocket(make_client) -> None:
    """``GET /call/{callID}/stream`` without the upgrade (curl, a browser tab): a 400 whose
    message says the route is a WebSocket, as a relayed one says; it said "Bad Request"."""
    client = await make_client(sim_peer="silence")
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    resp = await client.get(f"/call/{call['callID']}/stream")
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_request", body
    assert "WebSocket" in body["error"]["message"], body
