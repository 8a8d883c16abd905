"""Fork added latency: from the moment the WhatsApp side's audio reaches the bridge (the engine
hands it a 20 ms frame) to the moment the agent's socket has it.

    .venv/bin/python -m bench.fork_latency [--seconds 20] [--json bench/results/fork_latency.json]

The simulator's WhatsApp user says a 20 ms burst of 1 kHz every 200 ms (silence between);
the time each burst leaves the engine is kept, and each burst is found again (by level) in
what the agent receives: a ``pcm16`` fork, a ``"format": "twilio"`` fork (µ-law 8 kHz) and
the call's PCM socket (``GET /call/{callID}/stream``). All on loopback, in one process:
the figure is the bridge's own (downlink taps, encoding, the send queue, the socket).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.audio import FRAME_SAMPLES, tone
from bridge.audio.g711 import ulaw_decode
from bridge.config import settings_for_tests
from bridge.engines import sim

EVERY = 10
"""A burst every tenth frame (200 ms)."""
BURST = tone(1000, FRAME_SAMPLES, 16_000, 0.5)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class Bursts:
    """Patches the simulated WhatsApp user to say the bursts; keeps when each left."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self._n = 0
        original = sim.SimMediaChannel._produce

        def produce(channel: Any, at: float) -> np.ndarray:
            self._n += 1
            if self._n % EVERY:
                return SILENCE
            self.sent.append(time.monotonic())
            return BURST

        self.original = original
        sim.SimMediaChannel._produce = produce  # type: ignore[method-assign]

    def restore(self) -> None:
        sim.SimMediaChannel._produce = self.original  # type: ignore[method-assign]


def arrivals(received: list[tuple[float, np.ndarray]]) -> list[float]:
    """When each burst arrived: the first loud frame after a quiet one."""
    out, loud_before = [], False
    for at, pcm in received:
        loud = pcm.size > 0 and float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 3000
        if loud and not loud_before:
            out.append(at)
        loud_before = loud
    return out


def latencies(sent: list[float], got: list[float]) -> dict[str, float]:
    lat = []
    for t in got:  # each arrival belongs to the last burst sent before it
        before = [s for s in sent if s <= t]
        if before:
            lat.append((t - before[-1]) * 1000)
    arr = np.array(lat[1:])  # the first may precede the fork's start
    return {
        "bursts": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "max_ms": round(float(arr.max()), 2),
    }


async def fork_target(received: list[tuple[float, np.ndarray]]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        codec = "pcm16"
        async for msg in ws:
            now = time.monotonic()
            body = json.loads(msg.data)
            if body["event"] == "start":
                fmt = body.get("start", {}).get("mediaFormat") or body.get("media_format")
                codec = "pcmu" if fmt["encoding"] == "audio/x-mulaw" else "pcm16"
            if body["event"] == "media":
                raw = base64.b64decode(body["media"]["payload"])
                pcm = ulaw_decode(raw) if codec == "pcmu" else np.frombuffer(raw, dtype="<i2")
                received.append((now, pcm))
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def measure(mode: str, seconds: float) -> dict[str, float]:
    bursts = Bursts()
    received: list[tuple[float, np.ndarray]] = []
    settings = settings_for_tests(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    runner, port = await fork_target(received)
    try:
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        for _ in range(100):
            snap = await (await client.get(f"/call/{call['callID']}")).json()
            if snap["state"] == "active":
                break
            await asyncio.sleep(0.05)
        if mode == "socket":
            ws = await client.ws_connect(f"/call/{call['callID']}/stream")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                msg = await ws.receive(timeout=seconds)
                if msg.type is WSMsgType.BINARY:
                    received.append((time.monotonic(), np.frombuffer(msg.data, dtype="<i2")))
            await ws.close()
        else:
            body = {"url": f"ws://127.0.0.1:{port}/ws", "format": mode}
            resp = await client.post(f"/call/{call['callID']}/streams", json=body)
            assert resp.status == 201, await resp.text()
            await asyncio.sleep(seconds)
        await client.post("/call/hangup", json={"callID": call["callID"]})
    finally:
        await client.close()
        await runner.cleanup()
        bursts.restore()
    return latencies(bursts.sent, arrivals(received))


async def run(seconds: float) -> dict[str, Any]:
    return {mode: await measure(mode, seconds) for mode in ("pcm16", "twilio", "socket")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
