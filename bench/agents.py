"""Every voice-agent provider's bridge share of a conversational turn, its barge-ins and what
an agent costs on a call, at N concurrent calls (issue 62's targets; issue 35's before it).

    .venv/bin/python -m bench.agents [--provider NAME ...] [--calls 20] [--turns 5]
                                     [--json bench/results/agents-<stamp>.json]

For each provider in turn: the bridge (simulated WhatsApp engine) in this process, and one
strict fake of the provider per call (``tests/fakes/``) in a process of its own
(``bench.agent_fakes``: one serves every call's fake), all on loopback, so every figure is the
bridge's own and the fakes' work neither counts as the bridge's CPU nor stalls its loop. Each
provider is one :class:`Adapter` row of :data:`ADAPTERS`: how its fake is made and reached, the
rates it speaks and its own barge-in signal. Every fake keeps the caller's audio with when it
came (``CallerAudioLog`` in tests/fakes/common.py), so timing needs no per-provider code; the
fakes' times are ``time.monotonic()`` of their process, the same clock as the bridge's
(``CLOCK_MONOTONIC``). For each provider, on the same calls:

* idle: the calls with nobody speaking, first without an agent, then with one attached:
  the bridge's process's CPU per call;
* up: the WhatsApp user says a 20 ms burst every 200 ms; from the moment it leaves the engine
  to the moment the model's socket has the chunk that carries it;
* down: the model starts a reply while the call is quiet; from its first audio sent (GPT-Live:
  the first voiced chunk of its continuous stream) to the first frame of it the WhatsApp user
  gets (GPT-Live's includes the bridge's jitter buffer, 100 ms by default);
* barge-in: 3 s of reply queued, the provider's own barge-in signal 0.6 s into it; from that
  message sent (GPT-Live, which has none: from its stream turning silent) to the first frame
  the user gets without the voice (and, where the provider truncates, ``audio_end_ms`` against
  the voiced frames the user really got);
* socket dropped: from the server's close to the caller's audio arriving on the socket the
  bridge opened again (all calls' sockets drop at once);
* cancel: an agent with the model's turn detection off (where the provider has that), a reply
  still being generated and playing, and the caller starts speaking (espeak-ng speech): from
  the caller's first sound leaving the engine to the provider's cancel at the model (the
  bridge's VAD onset, about 160 ms, included);
* CPU: the bridge's process's share of a core per call over the turns. The bench's own work
  in that process is small: the simulated user's frame and the loudness of each frame it hears
  (as before), and a few control messages to the fakes per turn. The fakes' process's CPU over
  the same windows is in the JSON beside it (``fakes_cpu_per_call_*``), not in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from bench.agent_fakes import FakeHost, RemoteFake
from bridge.agents.service import PROVIDERS
from bridge.app import create_app
from bridge.audio import FRAME_SAMPLES, tone
from bridge.config import settings_for_tests
from bridge.engines import sim
from bridge.loop import freeze_startup_heap

KEY = "bench-key-0123456789"
EVERY = 10
"""A burst every this many 20 ms frames while the turns run."""
BURST = tone(1000, FRAME_SAMPLES, 16_000, 0.5)
SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)
VOICE = 0.25
LOUD_HEARD = 2000
"""A frame the WhatsApp user gets is the agent's voice above this peak (the voice: ~8200)."""
LOUD_AT_MODEL = 4000
"""A caller chunk at the model is a burst above this peak (the burst: ~16400)."""


@dataclass(frozen=True)
class Adapter:
    """How the bench drives one provider through its strict fake (tests/fakes/).

    The fake is ``fake`` (``module:Class``), made with ``api_key=`` in the fakes' process
    (``bench.agent_fakes``, driven through a :class:`RemoteFake`); it serves ``app()`` and
    keeps the caller's audio through ``CallerAudioLog``; ``say(pcm)`` streams a reply at
    ``rate_out`` (``say(pcm, done=False)`` leaves it generating, for the cancel) and
    ``drop()`` closes the socket as a failing server; ``barge_in`` names its method that sends
    the provider's own barge-in signal."""

    provider: str
    fake: str
    url: str
    """The agent's ``url``, ``{host}`` the fake's ``127.0.0.1:port``."""
    rate_in: int
    """The caller's audio at the model."""
    rate_out: int
    """The model's voice (what ``say`` takes)."""
    barge_in: str
    bridge_hears: dict[str, Any] | None = None
    """The ``session`` that turns the model's turn detection off, so the bridge's VAD hears
    the caller and cancels; ``None``: the provider's own detection is always on."""
    truncates: bool = False
    """The fake keeps the ``conversation.item.truncate`` it was sent (``truncates``)."""
    barge_in_goal_ms: float = 60.0
    voice_at: str | None = None
    """Where the model's voice goes out on a stream of its own pace (GPT-Live's chunks): the
    fake's attribute saying when a reply's first audio went out, the down measure's start;
    ``None``: when ``say`` was called."""
    signal_at: str | None = None
    """Where the barge-in signal is the stream turning silent (GPT-Live): the fake's attribute
    saying when it did, the barge-in measure's start; ``None``: when the signal was sent."""

    def available(self) -> bool:
        module = self.fake.split(":")[0]
        return self.provider in PROVIDERS and find_spec(f"tests.fakes.{module}") is not None


ADAPTERS = (
    Adapter(
        "openai-realtime",
        "openai_realtime:FakeOpenAIRealtime",
        "ws://{host}/v1/realtime?model=gpt-realtime",
        24_000,
        24_000,
        "speech_started",
        bridge_hears={"turn_detection": None},
        truncates=True,
    ),
    Adapter(
        "gemini-live",
        "gemini_live:FakeGeminiLive",
        "ws://{host}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent",
        16_000,
        24_000,
        "interrupt",
        bridge_hears={"realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}},
    ),
    Adapter(
        "xai",
        "xai_realtime:FakeXaiRealtime",
        "ws://{host}/v1/realtime?model=grok-voice-think-fast-2.0",
        16_000,
        16_000,
        "speech_started",
        bridge_hears={"turn_detection": None},
        truncates=True,
    ),
    Adapter(
        "azure-voice-live",
        "azure_voice_live:FakeAzureVoiceLive",
        "ws://{host}/voice-live/realtime?api-version=2025-10-01&model=gpt-realtime",
        16_000,
        16_000,
        "speech_started",
        bridge_hears={"turn_detection": None},
        truncates=True,
    ),
    Adapter(
        "deepgram",
        "deepgram_agent:FakeDeepgramAgent",
        "ws://{host}/v1/agent/converse",
        16_000,
        16_000,
        "user_started_speaking",
    ),
    Adapter(
        "elevenlabs",
        "elevenlabs_agent:FakeElevenLabs",
        "ws://{host}/v1/convai/conversation?agent_id=agent_test",
        16_000,
        16_000,
        "interrupt",
    ),
    Adapter(
        "ultravox",
        "ultravox:FakeUltravox",
        "http://{host}/api",
        16_000,
        16_000,
        "clear_buffer",
    ),
    Adapter(
        "openai-live",
        "openai_live:FakeOpenAILive",
        "ws://{host}/v1/live/sessions",
        16_000,
        16_000,
        "fall_silent",
        barge_in_goal_ms=140.0,
        voice_at="voiced_since",
        signal_at="silent_since",
    ),
)


class Line:
    """What one simulated WhatsApp user said (burst times, speech) and heard (frame times,
    voiced or not)."""

    def __init__(self) -> None:
        self.bursts = False
        self.said: list[float] = []
        self.heard: list[tuple[float, bool]] = []
        self.n = 0
        self.talk: list[np.ndarray] = []
        """Speech frames still to say (the cancel's barge-in)."""
        self.talk_began: float | None = None


LINES: dict[int, Line] = {}


def patch_sim() -> Callable[[], None]:
    """Patch the simulated WhatsApp user to say what its :class:`Line` holds and time what it
    hears; returns the undo."""
    produce, hear = sim.SimMediaChannel._produce, sim.SimMediaChannel.hear

    def said(channel: Any, at: float) -> np.ndarray:
        line = LINES.setdefault(id(channel.call), Line())
        line.n += 1
        if line.talk:
            if line.talk_began is None:
                line.talk_began = time.monotonic()
            return line.talk.pop(0)
        if not line.bursts or line.n % EVERY:
            return SILENCE
        line.said.append(time.monotonic())
        return BURST

    def heard(channel: Any, pcm: np.ndarray, now: float) -> None:
        line = LINES.setdefault(id(channel.call), Line())
        # When the frame really reached the far end (the tick's ``now`` may be earlier, on a
        # late loop): the bench times the bridge's share in real time.
        line.heard.append((time.monotonic(), bool(np.abs(pcm).max() > LOUD_HEARD)))
        hear(channel, pcm, now)

    sim.SimMediaChannel._produce = said  # type: ignore[method-assign]
    sim.SimMediaChannel.hear = heard  # type: ignore[method-assign]

    def undo() -> None:
        sim.SimMediaChannel._produce = produce  # type: ignore[method-assign]
        sim.SimMediaChannel.hear = hear  # type: ignore[method-assign]
        LINES.clear()

    return undo


def up_latencies(line: Line, arrived: list[float], loud: list[bool], before: float) -> list[float]:
    """Each burst said ``before`` (the socket's drop): its time from the engine to the model,
    to the first loud chunk (``arrived`` at the model, ``loud`` or not) after a quiet one that
    arrived within 200 ms of it."""
    onsets = [t for i, t in enumerate(arrived) if loud[i] and (i == 0 or not loud[i - 1])]
    out = []
    for sent in (t for t in line.said if t < before):
        later = [t for t in onsets if t >= sent]
        if later and later[0] - sent < 0.2:
            out.append(later[0] - sent)
    return out


class Leg:
    """One call of the run: its fake model (in the fakes' process), the call and the simulated
    user."""

    def __init__(self, adapter: Adapter, fake: RemoteFake, port: int) -> None:
        self.adapter = adapter
        self.fake = fake
        self.port = port
        self.cid = ""
        self.agent_id = ""
        self.line = Line()

    async def open(self, client: TestClient) -> None:
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        self.cid = call["callID"]
        for _ in range(200):
            if (await (await client.get(f"/call/{self.cid}")).json())["state"] == "active":
                break
            await asyncio.sleep(0.05)
        engine_call = client.app[engine_key()].calls[
            client.app[manager_key()].get(self.cid).engine_call_id
        ]
        self.line = LINES.setdefault(id(engine_call), Line())

    async def attach(self, client: TestClient, session: dict[str, Any] | None = None) -> None:
        if self.agent_id:
            await client.delete(f"/call/{self.cid}/agents/{self.agent_id}")
        body: dict[str, Any] = {
            "provider": self.adapter.provider,
            "url": self.adapter.url.format(host=f"127.0.0.1:{self.port}"),
            "apiKey": KEY,
        }
        if session is not None:
            body["session"] = session
        resp = await client.post(f"/call/{self.cid}/agents", json=body)
        assert resp.status == 201, await resp.text()
        self.agent_id = (await resp.json())["agentID"]

    async def at(self, attribute: str | None, sent: float) -> float:
        """When the fake's ``attribute`` says it acted, else ``sent`` (when it was made to)."""
        when = (await self.fake.get(attribute))[attribute] if attribute else None
        return sent if when is None else float(when)

    def first_heard(self, since: float, loud: bool) -> float | None:
        return next((t for t, voiced in self.line.heard if t >= since and voiced == loud), None)

    async def turns(self, turns: int) -> dict[str, list[float]]:
        """Replies, barge-ins by the provider's signal, then the socket dropped."""
        fake, rate = self.fake, self.adapter.rate_out
        down, barge, end_err = [], [], []
        for _ in range(turns):
            await asyncio.sleep(0.3)
            t0 = await fake.act("say", pcm_tone=(440, rate // 5, rate, VOICE))  # 200 ms
            await asyncio.sleep(0.5)
            t0 = await self.at(self.adapter.voice_at, t0)
            first = self.first_heard(t0, True)
            if first is not None:
                down.append(first - t0)
            t1 = await fake.act("say", pcm_tone=(440, 3 * rate, rate, VOICE))
            await asyncio.sleep(0.6)
            truncated = (
                len((await fake.get("truncates"))["truncates"]) if self.adapter.truncates else 0
            )
            cut = await fake.act(self.adapter.barge_in)
            await asyncio.sleep(0.3)
            cut = await self.at(self.adapter.signal_at, cut)
            quiet = self.first_heard(cut, False)
            if quiet is not None:
                barge.append(quiet - cut)
            if self.adapter.truncates:
                truncates = (await fake.get("truncates"))["truncates"]
                if len(truncates) > truncated:
                    voiced = sum(loud for t, loud in self.line.heard if t1 <= t < cut + 0.3)
                    end_err.append(abs(truncates[-1]["audio_end_ms"] - voiced * 20) / 1000)
        dropped, n, first = await fake.drop_and_reconnected(3.0)
        back = [] if first is None else [first - dropped]
        # After the drop: a leg's analysis must not hold the loop while another leg reconnects.
        arrived, loud = await fake.caller_audio(n, LOUD_AT_MODEL)
        up = up_latencies(self.line, arrived, loud, dropped)
        return {"up": up, "down": down, "barge": barge, "end_err": end_err, "back": back}

    async def cancel(self, client: TestClient, talk: list[np.ndarray]) -> list[float]:
        """A reply still being generated and playing; the caller talks over it; from the
        caller's first sound to the cancel at the model."""
        assert self.adapter.bridge_hears is not None
        await self.attach(client, self.adapter.bridge_hears)
        rate = self.adapter.rate_out
        cancels = len((await self.fake.get("cancelled"))["cancelled"])
        await asyncio.sleep(0.5)
        await self.fake.act("say", pcm_tone=(440, 8 * rate, rate, VOICE), done=False)
        await asyncio.sleep(0.6)
        self.line.talk_began = None
        self.line.talk = list(talk)
        at = await self.fake.cancelled(cancels, 2.0)
        began = self.line.talk_began
        if at is not None and began is not None:
            return [at - began]
        return []


def engine_key() -> Any:
    from bridge.api.keys import ENGINE

    return ENGINE


def manager_key() -> Any:
    from bridge.api.keys import MANAGER

    return MANAGER


def p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def spread(values: list[float], *qs: int) -> dict[str, Any]:
    out: dict[str, Any] = {f"p{q}" if q < 100 else "max": p(values, q) for q in qs}
    return {**out, "n": len(values)}


def caller_speech() -> list[np.ndarray] | None:
    """1.5 s of espeak-ng speech from its first sound, as 20 ms frames (``None``: no tools)."""
    from bench.speech import missing_tools, speech

    if missing_tools():
        return None
    pcm = speech(1.5, level_dbfs=-20.0)
    pcm = pcm[int(np.argmax(np.abs(pcm) > 500)) :]
    return [
        pcm[i : i + FRAME_SAMPLES] for i in range(0, pcm.size - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]


async def cpu_shares(seconds: float, fakes: FakeHost) -> tuple[float, float]:
    """This process's CPU (the bridge's) and the fakes' process's over ``seconds`` of wall
    time, each as a share of one core."""
    cpu0, fakes0, wall0 = time.process_time(), await fakes.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, fakes1 = time.process_time() - cpu0, await fakes.cpu() - fakes0
    wall = time.monotonic() - wall0
    return cpu / wall, fakes1 / wall


async def run_provider(
    adapter: Adapter, calls: int, turns: int, idle_s: float, talk: list[np.ndarray] | None
) -> dict[str, Any]:
    undo = patch_sim()
    settings = settings_for_tests(sim_peer="silence", fork_url_allow=("127.0.0.1",))
    client = TestClient(TestServer(create_app(settings)))
    fakes = FakeHost()
    try:
        ports = await fakes.start(adapter.fake, calls, KEY)
        await client.start_server()
        await freeze_startup_heap(None)  # as `python -m bridge` does once it has started
        legs = [Leg(adapter, RemoteFake(fakes, i), port) for i, port in enumerate(ports)]
        await asyncio.gather(*(leg.open(client) for leg in legs))
        no_agent, _ = await cpu_shares(idle_s, fakes)
        await asyncio.gather(*(leg.attach(client) for leg in legs))
        await asyncio.sleep(0.5)
        idle_agent, idle_fakes = await cpu_shares(idle_s, fakes)
        for leg in legs:
            leg.line.bursts = True
        cpu0, fakes0, wall0 = time.process_time(), await fakes.cpu(), time.monotonic()
        results = await asyncio.gather(*(leg.turns(turns) for leg in legs))
        busy = time.process_time() - cpu0
        busy_fakes = await fakes.cpu() - fakes0
        wall = time.monotonic() - wall0
        busy, busy_fakes = busy / wall, busy_fakes / wall
        for leg in legs:
            leg.line.bursts = False
        cancels: list[float] = []
        if adapter.bridge_hears is not None and talk is not None:
            for each in await asyncio.gather(*(leg.cancel(client, talk) for leg in legs)):
                cancels += each
        errors = [e for leg in legs for e in (await leg.fake.get("errors"))["errors"]]
        await asyncio.gather(
            *(client.post("/call/hangup", json={"callID": leg.cid}) for leg in legs)
        )
    finally:
        await client.close()
        await fakes.close()
        undo()
    merged: dict[str, list[float]] = {k: [] for k in ("up", "down", "barge", "end_err", "back")}
    for r in results:
        for k in merged:
            merged[k] += r[k]
    if adapter.bridge_hears is None:
        cancel: dict[str, Any] | str = "none: the provider's own turn detection is always on"
    elif talk is None:
        cancel = "not run: espeak-ng, sox or pesq missing"
    else:
        cancel = spread(cancels, 50, 95, 100)
    return {
        "provider": adapter.provider,
        "rates_in_out": [adapter.rate_in, adapter.rate_out],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "up_ms": spread(merged["up"], 50, 95),
        "down_ms": spread(merged["down"], 50, 95),
        "barge_in_stop_ms": spread(merged["barge"], 50, 95),
        "barge_in_goal_ms": adapter.barge_in_goal_ms,
        "audio_end_error_ms": spread(merged["end_err"], 50, 100) if adapter.truncates else None,
        "cancel_after_caller_began_ms": cancel,
        "socket_dropped_to_audio_back_ms": spread(merged["back"], 50, 100),
        # The bridge's process's CPU per call, as % of one core (the bench's driving in it).
        "cpu_per_call_turns_pct": round(busy * 100 / calls, 2),
        "cpu_per_call_idle_no_agent_pct": round(no_agent * 100 / calls, 2),
        "cpu_per_call_idle_agent_pct": round(idle_agent * 100 / calls, 2),
        # The fakes' own process, per call, over the same windows: not the bridge's.
        "fakes_cpu_per_call_turns_pct": round(busy_fakes * 100 / calls, 2),
        "fakes_cpu_per_call_idle_agent_pct": round(idle_fakes * 100 / calls, 2),
        "protocol_errors": errors[:5],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The results as the Markdown table docs/agents.md shows."""

    def ms(d: dict[str, Any], a: str, b: str) -> str:
        return f"{d[a]} / {d[b]}" if d["n"] else "—"

    lines = [
        "| provider | up p50 / p95 ms | down p50 / p95 ms | barge-in stop p50 / p95 ms "
        "| cancel after the caller began p50 / max ms | socket drop → audio back p50 / max ms "
        "| CPU per call, turns / idle agent / idle no agent % | the fakes' CPU per call, turns % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["cancel_after_caller_began_ms"]
        cancel = ms(c, "p50", "max") if isinstance(c, dict) else "—"
        lines.append(
            f"| `{r['provider']}` | {ms(r['up_ms'], 'p50', 'p95')} "
            f"| {ms(r['down_ms'], 'p50', 'p95')} "
            f"| {ms(r['barge_in_stop_ms'], 'p50', 'p95')} | {cancel} "
            f"| {ms(r['socket_dropped_to_audio_back_ms'], 'p50', 'max')} "
            f"| {r['cpu_per_call_turns_pct']} / {r['cpu_per_call_idle_agent_pct']} "
            f"/ {r['cpu_per_call_idle_no_agent_pct']} | {r['fakes_cpu_per_call_turns_pct']} |"
        )
    return "\n".join(lines)


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip()


async def run(providers: list[Adapter], calls: int, turns: int, idle_s: float) -> dict[str, Any]:
    talk = caller_speech() if any(a.bridge_hears for a in providers) else None
    load0 = round(os.getloadavg()[0], 2)
    rows = [await run_provider(a, calls, turns, idle_s, talk) for a in providers]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "calls": calls,
        "turns": turns,
        "idle_s": idle_s,
        "cpus": os.cpu_count(),
        "load_average_1min_before": load0,
        "providers": rows,
    }


def main() -> None:
    available = [a for a in ADAPTERS if a.available()]
    names = [a.provider for a in available]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--provider", action="append", choices=names, help="repeatable; default: all available"
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of each idle window")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    chosen = [a for a in available if not args.provider or a.provider in args.provider]
    result = asyncio.run(run(chosen, args.calls, args.turns, args.idle))
    print(json.dumps(result, indent=2))
    print(table(result["providers"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
