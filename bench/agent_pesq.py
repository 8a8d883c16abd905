"""PESQ of an agent's speech as the WhatsApp side hears it: over the call's 16 kHz PCM socket
vs over a ``"format": "twilio"`` fork (G.711 µ-law, 8 kHz).

    .venv/bin/python -m bench.agent_pesq [--json bench/results/agent_pesq.json]

The agent says espeak-ng sentences (16 kHz); the simulator's WhatsApp user keeps every frame
it hears; the heard signal is aligned to what was said and scored with ITU-T P.862.2
(wideband PESQ, the ``pesq`` package) — the µ-law path loses the band above 4 kHz and adds
G.711 quantisation noise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pesq import pesq

from bench.vad import SENTENCES, espeak
from bridge.app import create_app
from bridge.audio import Resampler
from bridge.audio.g711 import ulaw_encode
from bridge.config import settings_for_tests
from bridge.engines import sim


class Heard:
    """Patches the simulated WhatsApp user to keep everything it hears."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.original = sim.SimMediaChannel.hear
        keep = self.frames
        original = self.original

        def hear(channel: Any, pcm: np.ndarray, now: float) -> None:
            keep.append(pcm.copy())
            original(channel, pcm, now)

        sim.SimMediaChannel.hear = hear  # type: ignore[method-assign]

    def restore(self) -> None:
        sim.SimMediaChannel.hear = self.original  # type: ignore[method-assign]


def align(ref: np.ndarray, heard: np.ndarray) -> np.ndarray:
    """``heard`` cut to line up with ``ref`` (the lag of the cross-correlation's peak)."""
    n = 1 << int(np.ceil(np.log2(ref.size + heard.size)))
    corr = np.fft.irfft(np.fft.rfft(heard, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(corr[: heard.size]))
    out = heard[lag : lag + ref.size]
    return np.pad(out, (0, ref.size - out.size))


async def heard_by_whatsapp(speech: np.ndarray, path: str) -> np.ndarray:
    heard = Heard()
    settings = settings_for_tests(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    runner = None
    try:
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        for _ in range(100):
            if (await (await client.get(f"/call/{call['callID']}")).json())["state"] == "active":
                break
            await asyncio.sleep(0.05)
        if path == "socket":
            ws = await client.ws_connect(f"/call/{call['callID']}/stream")
            await ws.send_bytes(speech.astype("<i2").tobytes())
        else:
            narrow = Resampler(8000).resample_array(speech, 16_000)
            payload = ulaw_encode(narrow)

            async def agent(request: web.Request) -> web.WebSocketResponse:
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for msg in ws:
                    if json.loads(msg.data)["event"] == "start":
                        for i in range(0, len(payload), 160):
                            chunk = base64.b64encode(payload[i : i + 160]).decode()
                            media = {"event": "media", "media": {"payload": chunk}}
                            await ws.send_str(json.dumps(media))
                return ws

            app = web.Application()
            app.router.add_get("/ws", agent)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            body = {"url": f"ws://127.0.0.1:{port}/ws", "type": "twoway", "format": "twilio"}
            resp = await client.post(f"/call/{call['callID']}/streams", json=body)
            assert resp.status == 201, await resp.text()
        await asyncio.sleep(speech.size / 16_000 + 1.0)
        await client.post("/call/hangup", json={"callID": call["callID"]})
    finally:
        await client.close()
        if runner is not None:
            await runner.cleanup()
        heard.restore()
    return np.concatenate(heard.frames)


async def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        # Under 10 s, so the bridge's queue takes it all at once.
        said = [espeak(t, Path(tmp), f"p{i}", "en") for i, t in enumerate(SENTENCES[:3])]
    gap = np.zeros(8000, dtype=np.int16)
    speech = np.concatenate([x for s in said for x in (s, gap)])
    result: dict[str, Any] = {"seconds": round(speech.size / 16_000, 1)}
    for path in ("socket", "twilio"):
        heard = align(speech.astype(np.float64), (await heard_by_whatsapp(speech, path)))
        result[path] = round(float(pesq(16_000, speech.astype(np.float64), heard, "wb")), 2)
    result["gain"] = round(result["socket"] - result["twilio"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("bench.agent_pesq needs espeak-ng (Debian: apt-get install espeak-ng)")
    text = json.dumps(asyncio.run(run()), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
