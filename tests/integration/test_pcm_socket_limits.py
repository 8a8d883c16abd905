"""A PCM socket's client that sends more in one message than the socket takes (1 MiB)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import WSMsgType

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
