"""A held call's PCM sockets: one that talks (an agent's leg lent from another worker, a bot)
neither speaks to nor hears the held caller, as a browser's agent; one that listens hears on."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiohttp import WSMsgType

from bridge.audio import rms_dbfs, tone

from ..support.calls import peer_heard, sim_call, wait_state
from ..support.spectrum import band_energy
from ..support.waits import until_passes
from .test_streams import send_paced

PEER, SOCKET = 660.0, 700.0


async def heard_by(ws, seconds: float) -> np.ndarray:
    """What a socket's client is sent in the next ``seconds`` (s16, 16 kHz)."""
    got: list[np.ndarray] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        if msg.type is WSMsgType.BINARY:
            got.append(np.frombuffer(msg.data, dtype="<i2"))
    return np.concatenate(got).astype(np.float64)


async def test_a_talking_socket_neither_speaks_to_nor_hears_a_held_caller(make_client) -> None:
    """A socket's client talks (700 Hz) on a call whose caller says 660 Hz; the call is held
    (no music): WhatsApp hears silence, the talking socket is sent silence, a listening one
    still hears the caller; resumed, each hears the other again. The held caller heard the
    socket's client all along — an agent's lent leg talking to a colleague, a bot — and the
    client heard the held caller, where a browser's agent neither speaks nor hears."""
    client = await make_client(sim_peer="tone", sim_tone_hz=PEER)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    talk = await client.ws_connect(f"/call/{cid}/stream")
    listen = await client.ws_connect(f"/call/{cid}/stream?role=listen")
    sending = asyncio.ensure_future(send_paced(talk, tone(SOCKET, 16_000 * 4, 16_000, 0.3)))
    try:

        def whatsapp_hears_the_socket() -> None:
            assert len(sim_call(client, cid).heard) >= 20, "WhatsApp heard nothing yet"
            assert band_energy(peer_heard(client, cid, 20), 16_000, SOCKET) > 0.8

        await until_passes(whatsapp_hears_the_socket, timeout=3.0)
        assert (await client.post("/call/hold", json={"callID": cid, "held": True})).status == 200
        await asyncio.sleep(0.1)  # a tick's frames in flight
        heard, listened = await asyncio.gather(heard_by(talk, 0.5), heard_by(listen, 0.5))
        assert rms_dbfs(peer_heard(client, cid, 20) / 32768) < -60  # the socket is not heard
        # (what it was sent before the hold, still queued for it, read first)
        assert heard.size > 4000 and rms_dbfs(heard[-4000:] / 32768) < -60  # nor hears
        assert band_energy(listened[-4000:], 16_000, PEER) > 0.8  # a listener hears on
        assert (await client.post("/call/hold", json={"callID": cid, "held": False})).status
        await until_passes(whatsapp_hears_the_socket, timeout=3.0)
        await asyncio.sleep(0.1)
        assert band_energy((await heard_by(talk, 0.5))[-4000:], 16_000, PEER) > 0.8
    finally:
        sending.cancel()
        await talk.close()
        await listen.close()


async def test_a_twoway_forks_bot_neither_speaks_to_nor_hears_a_held_caller(
    make_client, aiohttp_server
) -> None:
    """A two-way fork's bot (a 1 kHz clip of 4 s) on a call whose caller says 660 Hz: held,
    WhatsApp hears none of the bot and the bot is sent silence (its chunks going on);
    resumed, each hears the other again, the clip having played on in time meanwhile."""
    import base64

    from .test_streams import fork_server

    clip = tone(1000, 16_000 * 4, 16_000, 0.4).astype("<i2").tobytes()
    reply = [
        {"event": "media", "stream_id": "x", "media": {"payload": base64.b64encode(part).decode()}}
        for part in (clip[i : i + 6400] for i in range(0, len(clip), 6400))
    ]
    client = await make_client(sim_peer="tone", sim_tone_hz=PEER, fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server, reply)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    body = {"url": url, "channel": "inbound", "type": "twoway"}
    assert (await client.post(f"/call/{cid}/streams", json=body)).status == 201

    def bot_heard(chunks: int) -> np.ndarray:
        media = fs.media("inbound")[-chunks:]
        raw = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)

    def whatsapp_hears_the_bot() -> None:
        assert len(sim_call(client, cid).heard) >= 20, "WhatsApp heard nothing yet"
        assert band_energy(peer_heard(client, cid, 20), 16_000, 1000) > 0.8

    await until_passes(whatsapp_hears_the_bot, timeout=3.0)
    assert band_energy(bot_heard(20), 16_000, PEER) > 0.8  # the bot hears the caller
    assert (await client.post("/call/hold", json={"callID": cid, "held": True})).status == 200
    sent = len(fs.media("inbound"))
    await asyncio.sleep(0.5)
    assert rms_dbfs(peer_heard(client, cid, 20) / 32768) < -60  # the bot is not heard
    assert len(fs.media("inbound")) - sent >= 15  # its chunks go on…
    assert rms_dbfs(bot_heard(15) / 32768) < -60  # …as silence
    assert (await client.post("/call/hold", json={"callID": cid, "held": False})).status == 200
    await until_passes(whatsapp_hears_the_bot, timeout=3.0)
    await asyncio.sleep(0.2)
    assert band_energy(bot_heard(10), 16_000, PEER) > 0.8
