"""The bridge's share of a conversational turn with a realtime model on the call, barge-in
and ``audio_end_ms``, at N concurrent calls (issue 35's targets).

    .venv/bin/python -m bench.agents [--calls 20] [--turns 10] [--json bench/results/agents.json]

One process: the bridge (simulated WhatsApp engine) and one strict fake OpenAI Realtime
server per call (tests/fakes/openai_realtime.py), all on loopback, so every figure is the
bridge's own:

* up: the simulated WhatsApp user says a 20 ms burst every 200 ms; from the moment it leaves
  the engine to the moment the model's socket has the ``input_audio_buffer.append`` that
  carries it (resampled to 24 kHz);
* down: the model starts a response while the call is quiet; from its first
  ``response.output_audio.delta`` sent to the first frame of it the WhatsApp user gets;
* a dropped model socket: from the server's close to the caller's audio arriving on the
  socket the bridge opened again;
* barge-in: 3 s of answer queued, ``input_audio_buffer.speech_started`` 0.6 s into it; from
  that message sent to the first frame the WhatsApp user gets without the voice, and
  ``audio_end_ms`` in the ``conversation.item.truncate`` against the voiced frames the user
  really got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.audio import FRAME_SAMPLES, tone
from bridge.config import settings_for_tests
from bridge.engines import sim
from tests.fakes.openai_realtime import FakeOpenAIRealtime

EVERY = 10
BURST = tone(1000, FRAME_SAMPLES, 16_000, 0.5)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
VOICE = 0.25


class Line:
    """What one simulated WhatsApp user said (burst times) and heard (frame times, levels)."""

    def __init__(self) -> None:
        self.said: list[float] = []
        self.heard: list[tuple[float, bool]] = []
        self.n = 0


LINES: dict[int, Line] = {}


def patch_sim() -> Callable[[], None]:
    """Patch the simulated WhatsApp user to say bursts and time what it hears; returns the
    undo."""
    produce, hear = sim.SimMediaChannel._produce, sim.SimMediaChannel.hear

    def said(channel: Any, at: float) -> np.ndarray:
        line = LINES.setdefault(id(channel.call), Line())
        line.n += 1
        if line.n % EVERY:
            return SILENCE
        line.said.append(time.monotonic())
        return BURST

    def heard(channel: Any, pcm: np.ndarray) -> None:
        line = LINES.setdefault(id(channel.call), Line())
        line.heard.append((time.monotonic(), bool(np.abs(pcm).max() > 2000)))
        hear(channel, pcm)

    sim.SimMediaChannel._produce = said  # type: ignore[method-assign]
    sim.SimMediaChannel.hear = heard  # type: ignore[method-assign]

    def undo() -> None:
        sim.SimMediaChannel._produce = produce  # type: ignore[method-assign]
        sim.SimMediaChannel.hear = hear  # type: ignore[method-assign]
        LINES.clear()

    return undo


class TimedFake(FakeOpenAIRealtime):
    """The fake, keeping when each caller chunk arrived."""

    def __init__(self) -> None:
        super().__init__(api_key="sk-bench")
        self.arrived: list[tuple[float, bool]] = []

    def _append(self, ws: Any, body: dict[str, Any]) -> None:
        n = len(self.chunks)
        super()._append(ws, body)
        if len(self.chunks) > n:
            pcm = np.frombuffer(self.chunks[-1], dtype="<i2")
            self.arrived.append((time.monotonic(), bool(np.abs(pcm).max() > 4000)))


def up_latencies(line: Line, fake: TimedFake) -> list[float]:
    out = []
    onsets = [t for i, (t, loud) in enumerate(fake.arrived) if loud and not fake.arrived[i - 1][1]]
    for sent in line.said:
        later = [t for t in onsets if t >= sent]
        if later and later[0] - sent < 0.2:
            out.append(later[0] - sent)
    return out


async def one_call(client: TestClient, turns: int) -> dict[str, list[float]]:
    fake = TimedFake()
    server = TestServer(fake.app())
    await server.start_server()
    try:
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        cid = call["callID"]
        for _ in range(200):
            if (await (await client.get(f"/call/{cid}")).json())["state"] == "active":
                break
            await asyncio.sleep(0.05)
        body = {
            "provider": "openai-realtime",
            "url": f"ws://127.0.0.1:{server.port}/v1/realtime",
            "apiKey": "sk-bench",
        }
        resp = await client.post(f"/call/{cid}/agents", json=body)
        assert resp.status == 201, await resp.text()
        engine_call = client.app[sim_key()].calls[client.app[manager_key()].get(cid).engine_call_id]
        line = LINES.setdefault(id(engine_call), Line())
        down, barge, end_err = [], [], []
        for _ in range(turns):
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await fake.say(tone(440, 4800, 24_000, VOICE))  # 200 ms
            await asyncio.sleep(0.5)
            first = next((t for t, loud in line.heard if t >= t0 and loud), None)
            if first is not None:
                down.append(first - t0)
            # Barge-in.
            t1 = time.monotonic()
            await fake.say(tone(440, 3 * 24_000, 24_000, VOICE))
            await asyncio.sleep(0.6)
            cut = time.monotonic()
            n = len(fake.truncates)
            await fake.speech_started()
            await asyncio.sleep(0.3)
            quiet = next((t for t, loud in line.heard if t >= cut and not loud), None)
            if quiet is not None:
                barge.append(quiet - cut)
            if len(fake.truncates) > n:
                voiced = sum(loud for t, loud in line.heard if t1 <= t < cut + 0.3)
                end_err.append(abs(fake.truncates[-1]["audio_end_ms"] - voiced * 20) / 1000)
        up = up_latencies(line, fake)
        # The model's socket drops: time until the caller's audio reaches the model again.
        n = len(fake.arrived)
        t2 = time.monotonic()
        await fake.drop()
        for _ in range(300):
            if len(fake.arrived) > n and fake.connections > 1:
                break
            await asyncio.sleep(0.01)
        back = [fake.arrived[-1][0] - t2] if fake.connections > 1 else []
        await client.post("/call/hangup", json={"callID": cid})
        return {
            "up": up,
            "down": down,
            "barge": barge,
            "end_err": end_err,
            "back": back,
            "errors": fake.errors,
        }
    finally:
        await server.close()


def sim_key() -> Any:
    from bridge.api.keys import ENGINE

    return ENGINE


def manager_key() -> Any:
    from bridge.api.keys import MANAGER

    return MANAGER


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else float("nan")


async def run(calls: int, turns: int) -> dict[str, Any]:
    undo = patch_sim()
    settings = settings_for_tests(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        results = await asyncio.gather(*(one_call(client, turns) for _ in range(calls)))
    finally:
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        await client.close()
        undo()
    keys = ("up", "down", "barge", "end_err", "back", "errors")
    merged: dict[str, list[Any]] = {k: [] for k in keys}
    for r in results:
        for k in merged:
            merged[k] += r[k]
    return {
        "calls": calls,
        "turns": turns,
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        # The process's CPU time over the run's wall time: the bridge and every fake model.
        "process_cpu_share": round(cpu, 2),
        "up_ms": {"p50": p(merged["up"], 50), "p95": p(merged["up"], 95), "n": len(merged["up"])},
        "down_ms": {
            "p50": p(merged["down"], 50),
            "p95": p(merged["down"], 95),
            "n": len(merged["down"]),
        },
        "barge_in_stop_ms": {
            "p50": p(merged["barge"], 50),
            "p95": p(merged["barge"], 95),
            "n": len(merged["barge"]),
        },
        "audio_end_error_ms": {
            "p50": p(merged["end_err"], 50),
            "p95": p(merged["end_err"], 95),
            "max": p(merged["end_err"], 100),
            "n": len(merged["end_err"]),
        },
        "socket_dropped_to_audio_back_ms": {
            "p50": p(merged["back"], 50),
            "max": p(merged["back"], 100),
            "n": len(merged["back"]),
        },
        "protocol_errors": merged["errors"][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.turns))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
