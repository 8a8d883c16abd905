"""The bridge's own work per 20 ms frame of one call with a realtime model agent on it, without
sockets: the real bus and the real :class:`~bridge.agents.Agent` of a provider, driven frame by
frame as the worker clock drives them on a simulated call.

    .venv/bin/python -m bench.agent_frame [--frames 10000] [--repeat 5]

Each frame: the WhatsApp user's frame into the bus (``push_downlink``: its meter, the in-band
key detector a PCM engine's call has on it (``calls/dtmf.py`` ``InbandDtmf``, as on the
simulated call of ``bench.agents``), the agent's tap — the echo guard, the caller's audio
message made and queued for the model's socket), the
bus's mix phase (the agent's voice, a bus source, mixed into what the user hears; the agent's
uplink tap) and the WhatsApp side's take (its meter). *idle*: nobody speaks; *talking*: the
user sends a 20 ms burst every 200 ms while the agent's reply plays all the time (``xai`` only:
a full-duplex stream must come in real time, which a loop this fast is not). The model's
socket is not opened: its queue is emptied as it fills, so the websocket's own framing and the
loop's wake-ups (the rest of ``bench.agents``' CPU, with the fakes' work) are not in the
figure. Prints the fastest of ``--repeat`` runs, µs per frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from bridge.agents import Agent, OpenAILive, XaiGrokVoice
from bridge.audio import FRAME_SAMPLES, tone
from bridge.calls.dtmf import InbandDtmf
from bridge.media import CallBus

BURST = tone(1000, FRAME_SAMPLES, 16_000, 0.5)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
REPLY = tone(440, 3 * 16_000, 16_000, 0.25).astype("<i2").tobytes()
DIALECTS = {"xai": XaiGrokVoice, "openai-live": OpenAILive}
"""Two 16 kHz providers: one that sends replies (queued), one a full-duplex stream (played
through the receiver, the caller's gaps filled with silence)."""


async def _nothing(*args: Any) -> None:
    pass


def _agent_on_a_bus(provider: str) -> tuple[CallBus, Agent]:
    bus = CallBus("bench")
    host = SimpleNamespace(bus=bus, call_id="bench", emit=lambda *a, **k: None)
    agent = Agent(
        host,
        DIALECTS[provider](),
        "ws://127.0.0.1:9/model",
        None,
        tools=[],
        retries=0,
        on_tool=_nothing,
        on_failed=_nothing,
    )
    agent.model._ws = object()  # as if connected: the caller's audio is queued
    agent.model.state = "connected"
    bus.open_uplink(clocked=True)
    bus.add_downlink_tap(agent._caller)
    bus.add_uplink_tap(agent._sent)
    bus.add_source(agent.voice.source)
    InbandDtmf(bus, lambda digit, ms: None)
    return bus, agent


def per_frame_us(provider: str, talking: bool, frames: int) -> float:
    bus, agent = _agent_on_a_bus(provider)
    queue = agent.model._out
    start = time.perf_counter()
    for n in range(frames):
        if talking and n % 150 == 0:
            agent.voice.push(REPLY, f"item{n}")  # 3 s of reply every 3 s: it always plays
        bus.push_downlink(BURST if talking and n % 10 == 0 else SILENCE)
        bus._tick(0.0)  # the mix phase, with no microphone frame (the sim call's own path)
        bus.take_uplink()
        if len(queue) > 100:  # the socket's sender, which this bench does not run
            queue._items.clear()
            queue._audio = 0
    return (time.perf_counter() - start) / frames * 1e6


async def main(frames: int, repeat: int) -> dict[str, float]:
    # In a running loop: the bus registers its sources on the worker clock, whose ticks this
    # bench makes itself (nothing here awaits, so the clock never fires).
    out = {}
    for provider in DIALECTS:
        for talking in (False, True) if provider == "xai" else (False,):
            runs = [per_frame_us(provider, talking, frames) for _ in range(repeat)]
            out[f"{provider} {'talking' if talking else 'idle'}"] = round(min(runs), 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.frames, args.repeat))))
