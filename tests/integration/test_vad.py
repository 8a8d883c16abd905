"""Speech activity (``BRIDGE_SPEECH_EVENTS``): ``call.speech.started`` / ``.stopped`` per side
from real speech (espeak-ng), none from music or noise, and a pause between words is no stop."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

pytest.importorskip("webrtcvad")
pytest.importorskip("onnxruntime")

from bridge.api.keys import MANAGER
from bridge.attachments.speech import SpeechDetector
from bridge.audio import FRAME_SAMPLES, Resampler
from bridge.calls import Call
from bridge.calls.handover import adopt_call
from bridge.calls.letting_go import announce_move, export_call, release_call

from ..support.dtmf_signals import music
from ..support.waits import until
from .test_streams import active_call, send_paced

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")

SENTENCES = [
    "Hello, I am calling about my order.",
    "It should have arrived yesterday, but nothing came.",
    "Could you please check where it is?",
]


def espeak(text: str, tmp: Path, name: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, 16 kHz s16."""
    wav = tmp / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "160", "-w", str(wav), text], check=True)
    resampler = Resampler(16_000)
    with av.open(str(wav)) as container:
        pcm = np.concatenate([resampler.resample(f) for f in container.decode(audio=0)])
    return pcm


def phrases(tmp: Path, pause_s: float = 1.5) -> tuple[np.ndarray, int]:
    """The sentences with ``pause_s`` of silence before each: the signal and how many."""
    gap = np.zeros(int(16_000 * pause_s), dtype=np.int16)
    parts = []
    for i, text in enumerate(SENTENCES):
        parts += [gap, espeak(text, tmp, f"s{i}")]
    return np.concatenate([*parts, gap]), len(SENTENCES)


def events_of(pcm: np.ndarray) -> list[tuple[bool, int]]:
    """(started?, frame index) for every change the detector reports on ``pcm``."""
    detector = SpeechDetector()
    out = []
    frames = pcm[: pcm.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    for i, frame in enumerate(frames):
        change = detector.feed(frame)
        if change is not None:
            out.append((change, i))
    return out


@needs_espeak
def test_each_sentence_is_one_start_and_one_stop(tmp_path: Path) -> None:
    signal, n = phrases(tmp_path)
    changes = events_of(signal)
    # Alternating start/stop, one pair per sentence: the pauses between its words (commas
    # included) were held over, the 1.5 s between sentences was not.
    assert [c for c, _ in changes] == [True, False] * n, changes
    starts = [i for c, i in changes if c]
    gap = int(1.5 * 50)
    first = gap  # the first sentence begins after one gap
    assert first <= starts[0] <= first + 25  # within 500 ms of the first word (frames)


@pytest.mark.parametrize("seed", [1, 2])
def test_no_start_on_a_minute_of_music(seed: int) -> None:
    piece = music(60, seed=seed)
    for offset in range(0, 512, 128):  # the detector's 32 ms windows fall anywhere in a note
        assert events_of(np.concatenate([np.zeros(offset, np.int16), piece])) == [], offset


def test_no_start_on_noise() -> None:
    rng = np.random.default_rng(3)
    white = (rng.standard_normal(16_000 * 20) * 3000).astype(np.int16)
    brown = np.cumsum(rng.standard_normal(16_000 * 20))
    brown = (brown - np.convolve(brown, np.ones(400) / 400, "same")) * 300
    hum = (np.sin(2 * np.pi * 50 * np.arange(16_000 * 20) / 16_000) * 8000).astype(np.int16)
    for noise in (white, np.clip(brown, -32768, 32767).astype(np.int16), hum):
        assert events_of(noise) == []


async def speech_events(sub, until_stops: int) -> list:
    out = []
    while sum(e.type == "call.speech.stopped" for e in out) < until_stops:
        event = await sub.get(20)
        if event is None:
            break
        if event.type.startswith("call.speech."):
            out.append(event)
    return out


@needs_espeak
async def test_events_per_side_in_sse_and_the_snapshot(make_client, tmp_path: Path) -> None:
    # The agent talks on the call's PCM socket (uplink); the simulated WhatsApp user echoes
    # it back 0.3 s later (downlink): each side starts and stops once per sentence.
    client = await make_client(sim_peer="echo", speech_events=True)
    call = await active_call(client)
    signal, n = phrases(tmp_path, pause_s=1.2)
    ws = await client.ws_connect(f"/call/{call['callID']}/stream")
    await ws.receive()  # ready
    async with client.app[MANAGER].events.subscribe() as sub:
        await send_paced(ws, signal)
        events = await speech_events(sub, until_stops=2 * n)
    by_side = {
        side: [e.type.rsplit(".", 1)[1] for e in events if e.data["side"] == side]
        for side in ("agent", "whatsapp")
    }
    assert by_side == {s: ["started", "stopped"] * n for s in ("agent", "whatsapp")}, by_side
    first = next(e for e in events if e.type == "call.speech.started")
    assert first.call["speaking"][first.data["side"]] is True
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["speaking"] == {"whatsapp": False, "agent": False}
    # Music on the line: nobody is talking.
    async with client.app[MANAGER].events.subscribe() as sub:
        await send_paced(ws, music(8, seed=5))
        await asyncio.sleep(0.5)
        heard = []
        while True:
            try:
                event = await sub.get(0.05)
            except TimeoutError:
                break
            if event is not None and event.type.startswith("call.speech."):
                heard.append((event.type, event.data["side"], event.at))
    assert heard == [], str(heard)
    await ws.close()


async def test_off_by_default(make_client) -> None:
    client = await make_client(sim_peer="echo")
    call = await active_call(client)
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert "speaking" not in snap
    assert not client.app[MANAGER].find_runtime(call["callID"]).attached("speech")


class _Claim:
    """The directory's claim of a moved call, always granted (this worker carries it)."""

    async def take_over(self, call: Call, previous_owner: str, token: str = "") -> None:
        await asyncio.sleep(0)

    async def give_back(self, call: Call, previous_owner: str, token: str) -> bool:
        return True


@needs_espeak
async def test_a_call_moved_here_has_speech_events_too(make_client, tmp_path: Path) -> None:
    """A live call another worker hands over (a drain) or leaves behind (a crash) is rebuilt
    here by ``adopt_call``, without the ``call.active`` that starts speech events: with
    ``BRIDGE_SPEECH_EVENTS`` on, a moved call had none (no ``speaking`` in its snapshot, no
    ``call.speech.*``) for the rest of its life. Moved here from "another worker" (let go of
    and carried on by the same one: the same seam), it has them, from the speech it carries."""
    client = await make_client(sim_peer="silence", speech_events=True)
    manager = client.app[MANAGER]
    call = await active_call(client)
    moved = export_call(manager.runtime(call["callID"]), "drain")
    await release_call(manager, call["callID"])
    assert manager.find_runtime(call["callID"]) is None
    runtime = await adopt_call(manager, moved, _Claim())
    await asyncio.sleep(0)  # speech starts on the loop's next turn, as for a call.active
    assert runtime.attached("speech"), "no speech activity on the moved call"
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["speaking"] == {"whatsapp": False, "agent": False}
    # What the agent says on the moved call (its uplink, straight onto its bus) is heard.
    signal = espeak(SENTENCES[0], tmp_path, "moved")
    gap = np.zeros(16_000, dtype=np.int16)
    pcm = np.concatenate([gap, signal, gap])
    async with manager.events.subscribe() as sub:
        for frame in pcm[: pcm.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES):
            runtime.bus.push_uplink(frame)
        said = await speech_events(sub, until_stops=1)
    assert [(e.type, e.data["side"]) for e in said] == [
        ("call.speech.started", "agent"),
        ("call.speech.stopped", "agent"),
    ], said
    # Handed on again (to a worker that now says who talks): this one says nothing more.
    announce_move(manager, runtime.call, "another-worker", "drain")
    await until(lambda: not runtime.attached("speech"), 2, "speech stopped here")
    async with manager.events.subscribe() as sub:
        for frame in pcm[: pcm.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES):
            runtime.bus.push_uplink(frame)
        await asyncio.sleep(0.1)
        late = []
        while True:
            try:
                event = await sub.get(0.05)
            except TimeoutError:
                break
            if event is not None and event.type.startswith("call.speech."):
                late.append(event.type)
    assert late == [], late
