"""The call's PCM WebSocket and Wavix-style media forks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import time

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from bridge.api.keys import ENGINE, MANAGER
from bridge.attachments import pcm_outbox
from bridge.audio import rms_dbfs, tone
from bridge.audio.g711 import ulaw_decode

from ..support.calls import wait_state, webrtc_call
from ..support.loops import LoopLag
from ..support.raw_ws import switching_protocols
from ..support.spectrum import band_energy, dominant_frequency
from ..support.waits import until


async def active_call(client) -> dict:
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    return call


async def collect(ws, seconds: float) -> tuple[list[bytes], list[dict]]:
    audio, control = [], []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        if msg.type is WSMsgType.BINARY:
            audio.append(msg.data)
        elif msg.type is WSMsgType.TEXT:
            control.append(json.loads(msg.data))
        else:
            break
    return audio, control


async def send_paced(ws, pcm: np.ndarray, chunk: int = 500) -> None:
    """Send s16 audio in odd-sized (even-length) chunks, in real time."""
    start = time.monotonic()
    for i in range(0, pcm.size, chunk):
        await ws.send_bytes(pcm[i : i + chunk].astype("<i2").tobytes())
        wait = start + (i + chunk) / 16_000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


def sim_call(client):
    return next(iter(client.app[ENGINE].calls.values()))


async def test_socket_hears_peer_and_peer_hears_socket(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    ready = json.loads((await ws.receive()).data)
    assert ready == {
        "type": "ready",
        "callID": call["callID"],
        "encoding": "s16le",
        "sampleRate": 16000,
        "channels": 1,
        "frameMs": 20,
        "frameBytes": 640,
        "role": "talk",
        "state": "active",
    }
    sender = asyncio.ensure_future(send_paced(ws, tone(440, 16_000 * 2, 16_000, 0.5)))
    audio, _ = await collect(ws, 1.5)
    assert {len(a) for a in audio} == {640}
    pcm = np.frombuffer(b"".join(audio[-40:]), dtype="<i2")
    assert dominant_frequency(pcm, 16_000) == pytest.approx(660, abs=3)
    await sender
    heard = np.concatenate(list(sim_call(client).heard)[-40:])
    assert dominant_frequency(heard, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(heard) == pytest.approx(-9.0, abs=1.0)
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["transport"] == "websocket"
    await ws.close()
    await asyncio.sleep(0.1)
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["transport"] is None


async def test_f32le_60ms_and_errors_do_not_disconnect(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, api_tokens=("tok",))
    call = await (
        await client.post("/call/make", json={"phone": "5521999999999"}, headers={"token": "tok"})
    ).json()
    await wait_state(client, call["callID"], "active", headers={"token": "tok"})
    resp = await client.get(f"/call/{call['callID']}/stream")
    assert resp.status == 401
    ws = await client.ws_connect(
        f"/call/{call['callID']}/stream?token=tok&format=f32le&frame_ms=60"
    )
    ready = json.loads((await ws.receive()).data)
    assert (ready["encoding"], ready["frameMs"], ready["frameBytes"]) == ("f32le", 60, 3840)
    await ws.send_bytes(b"\x00\x00\x80")  # not a whole float32 sample
    await ws.send_str("{not json")
    await ws.send_str(json.dumps({"type": "dance"}))
    audio, control = await collect(ws, 1.0)
    errors = [c["code"] for c in control if c["type"] == "error"]
    assert errors == ["bad_frame", "bad_json", "unknown_type"]
    assert {len(a) for a in audio} == {3840}
    pcm = np.frombuffer(b"".join(audio), dtype="<f4")
    assert dominant_frequency(pcm, 16_000) == pytest.approx(660, abs=3)
    assert not ws.closed  # errors are reported, the socket stays
    await ws.close()
    for bad in ("format=mp3", "frame_ms=40", "role=boss"):
        resp = await client.get(f"/call/{call['callID']}/stream?token=tok&{bad}")
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_request"
    resp = await client.get("/call/nope/stream?token=tok")
    assert resp.status == 404


async def test_listen_role_is_receive_only(make_client) -> None:
    client = await make_client(sim_peer="tone")
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream?role=listen")
    assert json.loads((await ws.receive()).data)["role"] == "listen"
    await ws.send_bytes(tone(440, 320, 16_000).astype("<i2").tobytes())
    audio, control = await collect(ws, 0.6)
    assert audio and [c["code"] for c in control if c["type"] == "error"] == ["listen_only"]
    assert sim_call(client).frames_heard == 0  # nothing the listener sent reached the peer
    await ws.close()


async def unreading_client(port: int, path: str) -> asyncio.StreamWriter:
    """A WebSocket client of the bridge that upgrades, then never reads again (a bot that
    stalls), with a small receive buffer, as :func:`stalled_ws_server` for forks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(b"0123456789abcdef").decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "\r\n".encode()
    )
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return writer


def let_go(writer: asyncio.StreamWriter) -> bool:
    """The bridge has closed or dropped the :func:`unreading_client`'s connection (its TCP
    state no longer established: a FIN or a reset came)."""
    sock = writer.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1  # TCP_ESTABLISHED


async def test_a_client_that_stops_reading_loses_its_oldest_audio_and_holds_up_nothing(
    make_client, monkeypatch, caplog
) -> None:
    """A socket's client that stops reading (a bot that stalls) loses its oldest audio once
    its queue is full, said once at WARNING, counted in the call's stats and the metric of
    the bridge's drops, its count said at the close. The socket's kernel buffer grew to
    megabytes (minutes of audio, loopback's autotuning) and aiohttp's writer sent 256 KiB
    between two waits before anything was dropped: a bot came back to audio that old (or its
    heartbeat's pong, queued behind it, came too late and the socket was closed), and the
    drops were said nowhere; then, counted in the socket alone, read by nothing.

    The call then ends, the client still not reading: the hangup answers, the call's teardown
    finishes and the client's connection is dropped. The socket's close waited for the client
    to read its close frame (aiohttp's drain) without end: the hangup never answered and the
    call never finished ending (its engine leg, report, everything); then the connection
    stayed, its transport waiting to send what it held to a client that reads nothing."""
    from .test_metrics import scrape, value

    monkeypatch.setattr(pcm_outbox, "OUTGOING_FRAMES", 10)  # the queue's 2 s made 0.2 s
    monkeypatch.setattr(pcm_outbox, "CLOSE_TIMEOUT", 0.5)
    caplog.set_level(logging.INFO, pcm_outbox.__name__)
    client = await make_client()
    call = await active_call(client)
    path = f"/call/{call['callID']}/stream?role=listen&format=f32le&frame_ms=60"
    writer = await unreading_client(client.port, path)
    try:
        runtime = client.app[MANAGER].runtime(call["callID"])
        sockets = await until(lambda: runtime.attached("socket"), 5, "the socket attached")
        # A bound far below the megabytes the kernel held at 64 kB/s.
        await until(lambda: sockets[0].dropped > 0, 5, "the oldest audio dropped")
        said = [r for r in caplog.records if "reads too slowly" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], caplog.text
        hangup = client.post("/call/hangup", json={"callID": call["callID"]})
        assert (await asyncio.wait_for(hangup, 5)).status == 200
        await until(lambda: runtime.final_stats is not None, 5, "the call's teardown done")
        await until(lambda: let_go(writer), 5, "the client's connection dropped")
    finally:
        writer.close()  # (before the fix, this is what let the hung close go)
    dropped = sockets[0].dropped  # 60 ms messages
    stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
    assert stats["bus"]["socketFramesDropped"] == 3 * dropped  # 20 ms frames
    samples = await scrape(client)
    metric = value(
        samples,
        "bridge_bus_frames_dropped_total",
        direction="downlink",
        reason="socket_backpressure",
    )
    assert metric == 3 * dropped
    closed = [r.getMessage() for r in caplog.records if "were dropped" in r.getMessage()]
    assert len(closed) == 1 and call["callID"] in closed[0]
    assert f": {dropped} audio messages ({dropped * 60} ms) were dropped" in closed[0]


async def test_a_socket_whose_closing_caller_is_cancelled_still_lets_its_client_go(
    make_client, monkeypatch
) -> None:
    """A PCM socket's close is cancelled while it waits (bounded) for a client that stopped
    reading to take its last messages (its handler cancelled as the client's connection
    goes, say): the close runs on, and the connection is closed and its sender stopped.
    Before, neither happened, and a second close returned at once (``tasks.CloseOnce``)."""
    monkeypatch.setattr(pcm_outbox, "OUTGOING_FRAMES", 10)
    monkeypatch.setattr(pcm_outbox, "CLOSE_TIMEOUT", 0.5)
    client = await make_client()
    call = await active_call(client)
    path = f"/call/{call['callID']}/stream?role=listen&format=f32le&frame_ms=60"
    writer = await unreading_client(client.port, path)
    try:
        runtime = client.app[MANAGER].runtime(call["callID"])
        (sock,) = await until(lambda: runtime.attached("socket"), 5, "the socket attached")
        await until(lambda: sock.dropped > 0, 5, "its queue full, its sender stuck")
        closing = asyncio.create_task(sock.close())
        await until(lambda: sock._closed, 2, "the close under way")  # draining, 0.5 s at most
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await until(lambda: let_go(writer), 3, "the client's connection closed")
        await until(lambda: not sock._tasks, 3, "its sender stopped")
        await sock.close()  # a later close: the same one, over
    finally:
        writer.close()
    await client.post("/call/hangup", json={"callID": call["callID"]})


async def test_clear_and_marks(make_client) -> None:
    client = await make_client(sim_peer="silence")
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    await ws.receive()  # ready
    # 1 s of audio queued at once, then a mark: acknowledged as played after the audio.
    t0 = time.monotonic()
    await ws.send_bytes(tone(440, 16_000, 16_000).astype("<i2").tobytes())
    await ws.send_str(json.dumps({"type": "mark", "name": "first"}))
    marks = []
    while not marks:
        msg = await asyncio.wait_for(ws.receive(), 3)
        if msg.type is WSMsgType.TEXT and json.loads(msg.data)["type"] == "mark":
            marks.append(json.loads(msg.data))
    assert marks == [{"type": "mark", "name": "first", "status": "played"}]
    # Never before the second of audio has played (later only on a loaded runner).
    assert time.monotonic() - t0 >= 0.75
    sc = sim_call(client)
    # 3 s queued, a mark behind it, then clear: the audio stops within a frame and the mark
    # comes back as cleared, never as played.
    await ws.send_bytes(tone(440, 48_000, 16_000).astype("<i2").tobytes())
    await ws.send_str(json.dumps({"type": "mark", "name": "second"}))
    await asyncio.sleep(0.4)
    assert band_energy(np.concatenate(list(sc.heard)[-10:]), 16_000, 440) > 0.9
    n0 = sc.frames_heard
    await ws.send_str(json.dumps({"type": "clear"}))
    # Half a second of what comes back, and more (bounded) until the clear's answer and the
    # mark's are in it: a loaded host answered after 0.5 s once.
    _, control = await collect(ws, 0.5)
    deadline = time.monotonic() + 5
    while {"cleared", "mark"} - {c["type"] for c in control} and time.monotonic() < deadline:
        control += (await collect(ws, 0.2))[1]
    cleared = [c for c in control if c["type"] == "cleared"]
    assert cleared and cleared[0]["droppedMs"] > 2000
    assert [c for c in control if c["type"] == "mark"] == [
        {"type": "mark", "name": "second", "status": "cleared"}
    ]
    after = list(sc.heard)[-(sc.frames_heard - n0) :]
    loud = [i for i, f in enumerate(after) if np.abs(f).max() > 100]
    assert len(after) > 15 and (not loud or max(loud) <= 2), loud  # stopped within a frame or two
    await ws.close()


class ForkServer:
    """A test WebSocket server the bridge forks media to."""

    def __init__(self, reply: list[dict] | None = None) -> None:
        self.messages: list[dict] = []
        self.reply = reply or []
        self.closed = asyncio.Event()
        self.open: set[web.WebSocketResponse] = set()

    async def shutdown(self, _app: web.Application) -> None:
        """Close the forks still connected when the server stops (the test's teardown comes
        before the bridge's): aiohttp waits for their handlers otherwise, 30 s of teardown."""
        for ws in list(self.open):
            await ws.close()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.open.add(ws)
        async for msg in ws:
            body = json.loads(msg.data)
            self.messages.append(body)
            if body["event"] == "start":
                for r in self.reply:
                    await ws.send_str(json.dumps(r))
        self.open.discard(ws)
        self.closed.set()
        return ws

    def media(self, track: str) -> list[dict]:
        return [m for m in self.messages if m["event"] == "media" and m["media"]["track"] == track]


async def fork_server(aiohttp_server, reply=None):
    fs = ForkServer(reply)
    app = web.Application()
    app.router.add_get("/ws", fs.handler)
    app.on_shutdown.append(fs.shutdown)
    server = await aiohttp_server(app)
    return fs, f"ws://127.0.0.1:{server.port}/ws"


@pytest.mark.parametrize("fmt", ["pcm16", "pcmu"])
async def test_fork_streams_both_tracks(make_client, aiohttp_server, fmt) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server)
    call, rtc = await webrtc_call(client, 440.0)
    resp = await client.post(
        f"/call/{call['callID']}/streams",
        json={"url": url, "channel": "both", "type": "oneway", "format": fmt},
    )
    assert resp.status == 201, await resp.text()
    stream_id = (await resp.json())["streamId"]
    await until(
        lambda: min(len(fs.media("inbound")), len(fs.media("outbound"))) >= 100, 10, "2 s forked"
    )
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await asyncio.wait_for(fs.closed.wait(), 3)
    events = [m["event"] for m in fs.messages]
    assert events[0] == "connected" and events[1] == "start" and events[-1] == "stop"
    start = fs.messages[1]
    assert start["stream_id"] == stream_id and start["call_id"] == call["callID"]
    assert [m["sequence_number"] for m in fs.messages[1:]] == list(range(1, len(fs.messages)))
    rate = 8000 if fmt == "pcmu" else 16_000
    for track, freq in (("inbound", 660), ("outbound", 440)):
        media = fs.media(track)
        assert len(media) >= 80  # a steady 50 per second
        assert [m["media"]["chunk"] for m in media] == list(range(1, len(media) + 1))
        raw = b"".join(base64.b64decode(m["media"]["payload"]) for m in media[-40:])
        pcm = ulaw_decode(raw) if fmt == "pcmu" else np.frombuffer(raw, dtype="<i2")
        assert len(base64.b64decode(media[-1]["media"]["payload"])) == (
            160 if fmt == "pcmu" else 640
        )
        assert dominant_frequency(pcm, rate) == pytest.approx(freq, abs=4)
    await rtc.close()


async def test_twoway_fork_plays_into_the_call(make_client, aiohttp_server) -> None:
    clip = tone(1000, 16_000 * 2, 16_000, 0.4).astype("<i2").tobytes()
    reply = [
        {
            "event": "media",
            "stream_id": "x",
            "media": {"payload": base64.b64encode(clip[i : i + 6400]).decode()},
        }
        for i in range(0, len(clip), 6400)
    ]
    reply.append({"event": "mark", "stream_id": "x", "mark": {"name": "done"}})
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    fs, url = await fork_server(aiohttp_server, reply)
    call = await active_call(client)
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "channel": "inbound", "type": "twoway"}
    )
    assert resp.status == 201

    def hears_the_fork() -> bool:
        heard = list(sim_call(client).heard)[-25:]
        return len(heard) == 25 and band_energy(np.concatenate(heard), 16_000, 1000) > 0.9

    await until(hears_the_fork, 5, "the fork's 1 kHz heard on the call")

    def marks() -> list[dict]:
        return [m for m in fs.messages if m["event"] == "mark"]

    await until(marks, 5, "the fork's mark acknowledged")
    assert marks()[0]["mark"] == {"name": "done", "status": "played"}
    # Limits: one two-way and five one-way streams per call.
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "channel": "inbound", "type": "twoway"}
    )
    assert resp.status == 409
    for _ in range(5):
        resp = await client.post(
            f"/call/{call['callID']}/streams",
            json={"url": url, "channel": "inbound", "type": "oneway"},
        )
        assert resp.status == 201
    resp = await client.post(
        f"/call/{call['callID']}/streams", json={"url": url, "channel": "inbound", "type": "oneway"}
    )
    assert resp.status == 409
    resp = await client.post(
        f"/call/{call['callID']}/streams",
        json={"url": "ws://example.com/x", "channel": "inbound", "type": "oneway"},
    )
    assert resp.status == 403
    resp = await client.delete(f"/call/{call['callID']}/streams/st_nope")
    assert resp.status == 404


async def stalled_ws_server() -> tuple[asyncio.AbstractServer, int, list]:
    """Completes the WebSocket handshake, then never reads again."""
    held = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(switching_protocols(head))
        await writer.drain()
        held.append(writer)  # keep the socket open, unread

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1024)
    for sock in server.sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return server, server.sockets[0].getsockname()[1], held


async def test_stalled_fork_is_dropped_and_the_call_is_unaffected(make_client) -> None:
    client = await make_client(fork_url_allow=("127.0.0.1",))
    server, port, held = await stalled_ws_server()
    try:
        events = await client.get("/call/events")
        call, rtc = await webrtc_call(client, 440.0)
        resp = await client.post(
            f"/call/{call['callID']}/streams",
            json={"url": f"ws://127.0.0.1:{port}/", "channel": "both"},
        )
        assert resp.status == 201
        dropped = None
        deadline = time.monotonic() + 12
        while dropped is None and time.monotonic() < deadline:
            line = (await asyncio.wait_for(events.content.readline(), 12)).decode()
            if line.startswith("data: ") and '"stream.dropped"' in line:
                dropped = json.loads(line[6:])
        assert dropped is not None and dropped["reason"] == "dropped"
        # The call's own audio never stopped: the echo is continuous and on pitch. Watched
        # from before what is heard was sent (the echo's ~0.3 s): the client, its receiver and
        # the bridge share this process, and a stall of it (not of the call) loses frames at
        # the client's own jitter buffer (once 43 windows of 50, none quiet).
        # A fork that held the call up would silence it for as long as it stalls (seconds);
        # one quiet 20 ms window is a playout glitch of the test's own receiver on a loaded
        # host (CI on 9fc0c90: one run in 1 165 failed here with the fork dropped on time). A
        # second in which this process stalled past 100 ms (once 341 ms: 23 windows of 50
        # heard, the bridge's receiver concealing 3 frames) is listened to again, up to three:
        # a call the fork holds up is silent in every one.
        for _window in range(3):
            async with LoopLag() as lag:
                await asyncio.sleep(0.3)
                t0 = time.monotonic()
                await asyncio.sleep(1.0)
            if lag.worst < 0.1:
                break
        heard = rtc.recorder.since(t0)
        assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(440, abs=5)
        win = rtc.recorder.rate // 50
        windows = heard[: heard.size // win * win].reshape(-1, win) / 32768
        quiet = [round(rms_dbfs(w), 1) for w in windows if rms_dbfs(w) <= -20]
        if not (len(windows) >= 45 - lag.frames and len(quiet) <= 1 + lag.frames):
            # What the bridge's receiver did meanwhile, for the message (partial dips of -20 to
            # -23 dB in three windows were seen once in a quiet full run).
            stats = await (await client.get(f"/call/{call['callID']}/stats")).json()
            raise AssertionError(
                (quiet, len(windows), lag.worst, lag.stalled, stats["webrtc"]["receiver"])
            )
        events.close()
        await rtc.close()
    finally:
        for w in held:
            w.close()
        server.close()


async def test_a_client_presses_keys_heard_by_whatsapp(make_client) -> None:
    """``{"type": "dtmf"}`` from a socket's client is a key press as an agent's: the call's
    ``call.dtmf`` (its participant the socket) and on to WhatsApp — on the sim, the key's two
    tones (RFC 4733's in-band fallback: 770 + 1336 Hz for 5) heard by the peer. A bad key and a
    listen-only socket get errors; the socket stays up."""
    from bridge.resources import CALL_EVENTS

    from ..support.calls import peer_heard

    client = await make_client(sim_peer="silence")
    seen: list = []
    client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event))
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    await ws.receive()  # ready
    await ws.send_str(json.dumps({"type": "dtmf", "digit": "x"}))
    await ws.send_str(json.dumps({"type": "dtmf", "digit": "5", "durationMs": 5}))
    _, control = await collect(ws, 0.3)
    assert [c["code"] for c in control if c["type"] == "error"] == ["bad_dtmf", "bad_dtmf"]
    await ws.send_str(json.dumps({"type": "dtmf", "digit": "5", "durationMs": 400}))
    await until(lambda: [e for e in seen if e.type == "call.dtmf.sent"], 5, "the key sent on")
    pressed = [e.data for e in seen if e.type == "call.dtmf"]
    assert pressed[0]["digit"] == "5" and pressed[0]["participantID"].startswith("ws:"), pressed
    heard = peer_heard(client, call["callID"], 15)
    assert band_energy(heard, 16_000, 770) > 0.2 and band_energy(heard, 16_000, 1336) > 0.2
    listener = await client.ws_connect(f"/call/{call['callID']}/stream?role=listen")
    await listener.receive()
    await listener.send_str(json.dumps({"type": "dtmf", "digit": "1"}))
    _, control = await collect(listener, 0.3)
    assert [c["code"] for c in control if c["type"] == "error"] == ["listen_only"]
    await ws.close()
    await listener.close()


async def test_a_lent_legs_keys_cross_the_relay(make_client) -> None:
    """An agent's leg lent from another worker (``desk/lending.py``) runs the call's PCM stream:
    a key pressed on the leg goes over that stream as ``dtmf`` and is the call's ``call.dtmf``
    there, passed on to WhatsApp (the leg here a stand-in that only presses keys)."""
    from bridge.desk.lending import RemoteCall
    from bridge.engines.base import EngineStats
    from bridge.engines.socket import PcmStreamMedia
    from bridge.resources import CALL_EVENTS

    class Leg:
        attached_to: str | None = None

        def attach(self, call_id, bus, on_state, on_dtmf) -> None:
            self.attached_to, self.press = call_id, on_dtmf

        def release(self) -> None:
            self.attached_to = None

    client = await make_client(sim_peer="silence")
    seen: list = []
    client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event))
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    leg = Leg()
    remote = RemoteCall(call["callID"], leg, PcmStreamMedia(ws, call["callID"], EngineStats()))
    remote.start()
    leg.press(leg, "7", 300)
    await until(lambda: [e for e in seen if e.type == "call.dtmf.sent"], 5, "the key sent on")
    assert [e.data["digit"] for e in seen if e.type == "call.dtmf"] == ["7"]
    await remote.close()
    assert leg.attached_to is None


NESTED = "[" * 5000 + "]" * 5000
"""A text message nested deeper than Python's JSON parser recurses (10 kB)."""


async def test_unreadable_text_messages_are_errors_and_the_socket_stays(make_client) -> None:
    """A message nested too deeply, ``NaN``, a lone surrogate: each a ``bad_json`` error like
    any other malformed message (the first once closed the socket with 1000 and no word)."""
    client = await make_client(sim_peer="silence")
    call = await active_call(client)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    for text in (
        NESTED,
        '{"type": "dtmf", "digit": "1", "durationMs": NaN}',
        '{"type": "\\udc00"}',
    ):
        await ws.send_str(text)
    await ws.send_str(json.dumps({"type": "clear"}))
    _, control = await collect(ws, 0.5)
    assert [c.get("code", c["type"]) for c in control if c["type"] in ("error", "cleared")] == [
        "bad_json",
        "bad_json",
        "bad_json",
        "cleared",
    ]
    assert not ws.closed
    await ws.close()


async def test_a_forks_unreadable_messages_are_said_once_and_it_goes_on(
    make_client, aiohttp_server, caplog
) -> None:
    """The fork's app sends what cannot be read (nested too deeply, then a stream of broken
    JSON): one WARNING, and its later messages are still heard (the nesting once ended the
    fork's receiver, a traceback at ERROR, and nothing the app sent was heard again)."""
    acknowledged = asyncio.Event()

    async def app_side(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            body = json.loads(msg.data)
            if body["event"] == "start":
                await ws.send_str(NESTED)
                for _ in range(50):  # a second of an app that sends one a frame
                    await ws.send_str("{not json")
                await ws.send_str(json.dumps({"event": "mark", "mark": {"name": "after"}}))
            elif body["event"] == "mark" and body["mark"]["name"] == "after":
                acknowledged.set()
                break
        return ws

    app = web.Application()
    app.router.add_get("/ws", app_side)
    server = await aiohttp_server(app)
    client = await make_client(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    call = await active_call(client)
    caplog.set_level(logging.INFO, logger="bridge")
    resp = await client.post(
        f"/call/{call['callID']}/streams",
        json={"url": f"ws://127.0.0.1:{server.port}/ws", "channel": "inbound", "type": "twoway"},
    )
    assert resp.status == 201, await resp.text()
    await asyncio.wait_for(acknowledged.wait(), 5)
    said = [r for r in caplog.records if "cannot read" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_fork_whose_call_ends_while_it_connects_says_nothing_of_a_stream(
    make_client,
) -> None:
    """The call ends while a fork's WebSocket is still being opened: its request is 409 (no
    stream id given) and nothing says a stream started — nor that one stopped: the fork's
    close at the call's end published ``stream.stopped`` for a stream the app was never
    given, with no ``stream.started`` before it."""
    from bridge.resources import CALL_EVENTS

    asked = asyncio.Event()
    answer = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await answer.wait()  # the handshake is answered once the call has ended
        writer.write(switching_protocols(head))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            await reader.read()  # until the bridge closes it
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(fork_url_allow=("127.0.0.1",))
        seen: list = []
        client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event.type))
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(client, call["callID"], "active")
        starting = asyncio.ensure_future(
            client.post(f"/call/{call['callID']}/streams", json={"url": f"ws://127.0.0.1:{port}/"})
        )
        await asyncio.wait_for(asked.wait(), 5)
        assert (await client.post("/call/hangup", json={"callID": call["callID"]})).status == 200
        answer.set()
        resp = await asyncio.wait_for(starting, 5)
        assert resp.status == 409, await resp.text()
        assert "call.ended" in seen
        assert not [t for t in seen if t.startswith("stream.")], seen
    finally:
        answer.set()
        server.close()


async def test_a_fork_whose_reader_fails_ends_with_its_event_and_its_reason_said_once(
    make_client, aiohttp_server, caplog, monkeypatch
) -> None:
    """The fork's reader meets an error nobody expected (injected where the app's audio goes
    into the call): the fork ends whole — its socket closed, taken off the call, its
    ``stream.stopped`` with reason ``error`` — and the reason is said once at WARNING. It was
    left half-open: the reader's task died at ERROR while the fork went on sending the app the
    call's audio, still attached, and nobody was told."""
    from bridge.attachments import queued_source
    from bridge.resources import CALL_EVENTS

    closed = asyncio.Event()
    media_after_error: list[dict] = []

    async def app_side(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            body = json.loads(msg.data)
            if body["event"] == "start":
                payload = base64.b64encode(bytes(640)).decode()
                await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            elif body["event"] == "media" and failed.is_set():
                media_after_error.append(body)
        closed.set()
        return ws

    failed = asyncio.Event()

    def push(self: object, pcm: object) -> None:
        failed.set()
        raise ArithmeticError("injected: the reader's unexpected error")

    monkeypatch.setattr(queued_source.QueuedSource, "push", push)
    app = web.Application()
    app.router.add_get("/ws", app_side)
    server = await aiohttp_server(app)
    client = await make_client(fork_url_allow=("127.0.0.1",))
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
    await asyncio.wait_for(closed.wait(), 5)  # the bridge closed the app's socket
    stopped = await until(
        lambda: [e for e in seen if e.type in ("stream.stopped", "stream.dropped")], 5, "its end"
    )
    assert [(e.type, e.data["streamId"], e.data["reason"]) for e in stopped] == [
        ("stream.stopped", stream_id, "error")
    ]
    resp = await client.delete(f"/call/{call['callID']}/streams/{stream_id}")
    assert resp.status == 404  # no longer on the call
    assert (await wait_state(client, call["callID"], "active"))["state"] == "active"
    said = [r for r in caplog.records if "injected" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert len(media_after_error) < 10  # what was queued as it failed, not the call going on


async def test_a_fork_that_cannot_open_says_why_in_its_400_and_once_at_warning(
    make_client, aiohttp_server, caplog
) -> None:
    """A fork whose WebSocket does not open (nothing listening; a server that refuses the
    upgrade) is a 400 ``stream_connect_failed`` whose message says why, and a WARNING says it
    once, both without the URL's query (a token there is a secret). Before, the 400 said only
    "cannot open a WebSocket" and nothing was logged."""

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no")

    app = web.Application()
    app.router.add_get("/", refuse)
    server = await aiohttp_server(app)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = await make_client(fork_url_allow=("127.0.0.1",))
    call = await active_call(client)
    cases = [
        (f"ws://127.0.0.1:{server.port}/?token=s3cret", "the server answered 403"),
        (
            f"ws://127.0.0.1:{closed_port}/?token=s3cret",
            f"cannot connect to 127.0.0.1:{closed_port}",
        ),
    ]
    for url, why in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bridge.attachments.forks"):
            resp = await client.post(f"/call/{call['callID']}/streams", json={"url": url})
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "stream_connect_failed", body
        assert why in body["error"]["message"], body
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and why in warnings[0], warnings
        assert "s3cret" not in body["error"]["message"] + warnings[0]


async def test_fork_and_play_allow_entries_take_a_port(make_client, aiohttp_server) -> None:
    """``BRIDGE_FORK_URL_ALLOW`` and ``BRIDGE_PLAY_URL_ALLOW`` read as
    ``BRIDGE_WEBHOOK_URL_ALLOW`` does (``http.HostAllow``): ``host:port`` allows that port
    only. They were compared with the URL's bare host, so such an entry matched nothing and
    every fork, agent and playback URL was 403; an entry no URL can match stops the start."""
    from bridge.config import ConfigError, load_settings

    fs, url = await fork_server(aiohttp_server)
    port = url.split("/")[2].rsplit(":", 1)[1]
    client = await make_client(
        sim_peer="silence",
        fork_url_allow=(f"127.0.0.1:{port}",),
        play_url_allow=("127.0.0.1:1",),
    )
    call = await active_call(client)
    cid = call["callID"]
    resp = await client.post(f"/call/{cid}/streams", json={"url": url, "channel": "inbound"})
    assert resp.status == 201, await resp.text()
    await until(lambda: len(fs.media("inbound")) >= 5, 5, "the fork's first media")
    for path, body in [
        (f"/call/{cid}/streams", {"url": "ws://127.0.0.1:9/x"}),
        (f"/call/{cid}/agents", {"provider": "openai-realtime", "url": "ws://127.0.0.1:9/x"}),
        ("/call/play", {"callID": cid, "audioUrl": f"http://127.0.0.1:{port}/a.wav"}),
    ]:
        resp = await client.post(path, json=body)
        assert resp.status == 403, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "url_not_allowed"
    for name in ("BRIDGE_FORK_URL_ALLOW", "BRIDGE_PLAY_URL_ALLOW"):
        with pytest.raises(ConfigError, match=name):
            load_settings([], {name: "[::1"})
