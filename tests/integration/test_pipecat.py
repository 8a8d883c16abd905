"""Voice agents built with the real pipecat (pipecat-ai), not a copy of it, on a WhatsApp call.

* pipecat's own ``TwilioFrameSerializer`` over its WebSocket server transport takes a
  ``"format": "twilio"`` fork from the bridge, unchanged;
* the bridge's serializer (``pipecat_whatsapp_bridge``) over pipecat's WebSocket client
  transport dials the call's 16 kHz PCM socket.

Either way the agent hears the WhatsApp side's tone, speaks a tone the WhatsApp side hears,
gets the user's key presses as ``InputDTMFFrame``, its mark comes back only once its audio has
played, and an interruption (``InterruptionFrame`` → ``clear``) cuts the queued speech within
a frame. The WhatsApp side is the simulator's engine (what it plays, what it heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.server import (
    WebsocketServerParams,
    WebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner

from bridge.api.keys import MANAGER
from bridge.audio import rms_dbfs, tone
from pipecat_whatsapp_bridge import WhatsAppBridgeTransport

from ..fakes.common import free_port
from ..support.calls import wait_state
from ..support.loops import LoopLag
from ..support.spectrum import band_energy, dominant_frequency
from ..support.waits import until, wait_port
from .test_streams import active_call, sim_call
from .test_twilio_streams import press_on_whatsapp

RATE = 16_000
"""The pipeline's rate, in and out."""

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipecat_whatsapp_bot.py"


class ToneAgent(FrameProcessor):
    """The bot: keeps what it hears, the keys pressed and the transport's messages; says
    tones and marks when told."""

    def __init__(self) -> None:
        super().__init__()
        self.heard = bytearray()
        self.digits: list[str] = []
        self.messages: list[dict[str, Any]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            assert frame.sample_rate == RATE
            self.heard += frame.audio
        elif isinstance(frame, InputDTMFFrame):
            self.digits.append(frame.button.value)
        elif isinstance(frame, InputTransportMessageFrame):
            self.messages.append(frame.message)
        else:
            await self.push_frame(frame, direction)

    async def say(self, freq: float, seconds: float) -> None:
        pcm = tone(freq, int(RATE * seconds), RATE, 0.4)
        for i in range(0, pcm.size, RATE // 50):
            chunk = pcm[i : i + RATE // 50].astype("<i2").tobytes()
            await self.push_frame(OutputAudioRawFrame(chunk, RATE, 1))

    async def send(self, message: dict[str, Any]) -> None:
        """A message in order with the audio before it (a mark behind the speech)."""
        await self.push_frame(OutputTransportMessageFrame(message=message))

    async def interrupt(self) -> None:
        await self.push_frame(InterruptionFrame())


class SpyTwilioSerializer(TwilioFrameSerializer):
    """pipecat's serializer as is; the test also keeps every event the bridge sent (pipecat
    drops ``mark`` and ``stop``, which the test wants to see)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[dict[str, Any]] = []

    async def deserialize(self, data: str | bytes) -> Frame | None:
        self.events.append(json.loads(data))
        return await super().deserialize(data)


@asynccontextmanager
async def running(task: PipelineWorker) -> AsyncIterator[None]:
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    job = asyncio.ensure_future(runner.run())
    try:
        yield
    finally:
        await task.cancel()
        await asyncio.wait_for(job, 10)


def heard_since(sc, n: int) -> list[np.ndarray]:
    """What the WhatsApp side heard after its ``n``-th frame (at most its last 2 s)."""
    new = sc.frames_heard - n
    return list(sc.heard)[-new:] if new > 0 else []


def loud_frames(frames: list[np.ndarray]) -> list[int]:
    return [i for i, f in enumerate(frames) if np.abs(f).max() > 500]


async def speak_hear_mark_clear(
    client,
    agent: ToneAgent,
    send_mark: Callable[[str], Awaitable[None]],
    marks: Callable[[], list[str]],
    source: Callable[[], Any],
    min_frames: int,
) -> None:
    """What both agents must do once connected (see the module docstring); ``source`` is the
    bridge's queue of the agent's audio (watched to know when the ``clear`` arrived);
    ``min_frames`` of the agent's one-second tone must reach WhatsApp."""
    # The agent hears the WhatsApp side's 660 Hz tone (0.3 of full scale).
    await until(lambda: len(agent.heard) >= RATE * 2 * 2)
    heard = np.frombuffer(bytes(agent.heard[-RATE * 2 :]), dtype="<i2")
    assert dominant_frequency(heard, RATE) == pytest.approx(660, abs=4)
    assert rms_dbfs(heard) == pytest.approx(-13.5, abs=1.0)
    # A key the WhatsApp user presses reaches pipecat as its DTMF frame.
    press_on_whatsapp(client, "5")
    await until(lambda: agent.digits == ["5"])
    # One second of speech, then a mark: it comes back once the whole second has played.
    sc = sim_call(client)
    n0 = sc.frames_heard
    # pipecat paces its output on this process's loop, beside the bridge: a stall of the
    # process sends the tone late (the call hears a gap) and then in a burst.
    async with LoopLag() as lag:
        await agent.say(1000, 1.0)
        await send_mark("m1")
        await until(lambda: "m1" in marks())
        at_mark = len(loud_frames(heard_since(sc, n0)))
        n_mark = sc.frames_heard
        await until(lambda: sc.frames_heard >= n_mark + 10)
    played = heard_since(sc, n0)
    loud = loud_frames(played)
    assert len(loud) >= min_frames - lag.frames, (
        lag.stalled,
        str([int(np.abs(f).max()) for f in played]),
    )
    # The mark was sent as the last frame went to the engine: at most the frames on their way
    # from the mixer to the engine came after it.
    assert len(loud) - at_mark <= 2, (len(loud), at_mark)
    assert band_energy(np.concatenate([played[i] for i in loud]), 16_000, 1000) > 0.9
    # Four seconds queued, an interruption once it is heard: the call stops hearing it within
    # a frame of the bridge's ``clear``.
    cleared_at: list[int] = []
    queue = source()
    real_clear = queue.clear

    def clear() -> int:
        cleared_at.append(sc.frames_heard)
        return real_clear()

    queue.clear = clear
    n1 = sc.frames_heard
    await agent.say(1000, 4.0)
    await until(lambda: len(loud_frames(heard_since(sc, n1))) >= 25)
    async with LoopLag() as lag:
        await agent.interrupt()
        await until(lambda: bool(cleared_at))
        at = cleared_at[0]
        await until(lambda: sc.frames_heard >= at + 25)
    after = heard_since(sc, at)
    loud = loud_frames(after)
    # Within a frame; a frame more when a stall of this process outlasted one: the simulated
    # WhatsApp side takes the call's uplink on this loop's clock, and a frame it owed for a
    # tick the stall held up waited in the uplink past the clear (media/uplink_queue.py
    # TICK_UPLINK), as in a clean-clone run at load 2.6 (loud frames [1, 2]).
    assert not loud or max(loud) <= 1 + lag.past_a_frame, (loud, lag.worst)


async def test_pipecat_twilio_serializer_takes_a_fork_unchanged(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, fork_url_allow=("127.0.0.1",))
    call = await active_call(client)
    port = free_port()
    serializer = SpyTwilioSerializer(
        "MZ-set-by-the-app", params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    transport = WebsocketServerTransport(
        WebsocketServerParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
        host="127.0.0.1",
        port=port,
    )
    agent = ToneAgent()

    async def send_mark(name: str) -> None:
        await agent.send(
            {"event": "mark", "streamSid": "MZ-set-by-the-app", "mark": {"name": name}}
        )

    task = PipelineWorker(
        Pipeline([transport.input(), agent, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    async with running(task):
        await wait_port(port)  # the server listens
        resp = await client.post(
            f"/call/{call['callID']}/streams",
            json={
                "url": f"ws://127.0.0.1:{port}/",
                "type": "twoway",
                "format": "twilio",
                "customParameters": {"bot": "tone"},
            },
        )
        assert resp.status == 201, await resp.text()
        await speak_hear_mark_clear(
            client,
            agent,
            send_mark,
            lambda: [e["mark"]["name"] for e in serializer.events if e["event"] == "mark"],
            lambda: client.app[MANAGER].find_runtime(call["callID"]).attached("fork")[0].source,
            # pipecat's 16 -> 8 kHz stream resampler keeps its last samples (tens of ms) until
            # more audio comes, so a little under the second reaches the bridge before the mark.
            min_frames=45,
        )
        start = next(e for e in serializer.events if e["event"] == "start")
        assert start["start"]["callSid"] == call["callID"]
        assert start["start"]["customParameters"] == {"bot": "tone"}
        await client.post("/call/hangup", json={"callID": call["callID"]})
        await until(lambda: serializer.events[-1]["event"] == "stop")


async def test_pipecat_bridge_serializer_over_the_16khz_socket(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    call = await active_call(client)
    transport = WhatsAppBridgeTransport(f"http://127.0.0.1:{client.server.port}", call["callID"])
    agent = ToneAgent()

    async def send_mark(name: str) -> None:
        await agent.send({"type": "mark", "name": name})

    task = PipelineWorker(
        Pipeline([transport.input(), agent, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    async with running(task):
        await speak_hear_mark_clear(
            client,
            agent,
            send_mark,
            lambda: [
                m["name"]
                for m in agent.messages
                if m.get("type") == "mark" and m.get("status") == "played"
            ],
            lambda: client.app[MANAGER].find_runtime(call["callID"]).attached("socket")[0].source,
            min_frames=49,  # 16 kHz end to end: no resampler holds any of it back
        )
        ready = next(m for m in agent.messages if m.get("type") == "ready")
        assert (ready["encoding"], ready["sampleRate"]) == ("s16le", 16_000)
        # The bot ends its pipeline: the serializer hangs the WhatsApp call up.
        await task.queue_frame(EndFrame())
        await wait_state(client, call["callID"], "ended")


async def test_pipecat_bot_that_says_goodbye_and_ends_is_heard_to_the_end(make_client) -> None:
    """The example bot's ``#``: speech, then ``EndFrame``. The serializer hangs the call up only
    once the bridge has played the speech; it used to hang up as the ``EndFrame`` reached the
    output, before pipecat had sent the speech it still held, and the caller heard none of it."""
    client = await make_client(sim_peer="silence")
    call = await active_call(client)
    transport = WhatsAppBridgeTransport(f"http://127.0.0.1:{client.server.port}", call["callID"])
    agent = ToneAgent()
    task = PipelineWorker(
        Pipeline([transport.input(), agent, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    async with running(task):
        await until(lambda: any(m.get("type") == "ready" for m in agent.messages))
        sc = sim_call(client)
        n0 = sc.frames_heard
        async with LoopLag() as lag:
            await agent.say(1000, 0.6)  # 30 frames of goodbye
            await agent.push_frame(EndFrame())
            await wait_state(client, call["callID"], "ended")
        loud = loud_frames(heard_since(sc, n0))
        assert len(loud) >= 28 - lag.frames, (len(loud), lag.stalled)


async def test_the_example_bot_greets_and_says_goodbye_on_hash(make_client) -> None:
    """``examples/pipecat_whatsapp_bot.py`` against the simulator, as its docstring says to try
    it: it answers the ringing call and greets it; on ``#`` it says goodbye, three falling notes,
    and hangs up once they have played. The goodbye used to reach the call as noise (the
    chime's bytes reversed, not its samples), when it reached it at all."""
    spec = importlib.util.spec_from_file_location("pipecat_whatsapp_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    client = await make_client(sim_echo_delay=0.05)  # the '#' pressed comes back as the caller's
    bot = asyncio.ensure_future(
        example.answer_calls(f"http://127.0.0.1:{client.server.port}", None)
    )
    try:
        for _ in range(10):  # a call that rings before the bot follows the events: again
            ring = await client.post("/call/sim/incoming", json={"phone": "5521999999999"})
            call = await ring.json()
            with contextlib.suppress(AssertionError):
                await wait_state(client, call["callID"], "active", timeout=0.5)
                break
            await client.post("/call/hangup", json={"callID": call["callID"]})
        await until(  # its pipeline on the call's socket
            lambda: client.app[MANAGER].get(call["callID"]).transport == "websocket"
        )
        sc = sim_call(client)
        # The greeting (1.2 s) played, so the caller's '#' is not heard over its echo.
        await until(
            lambda: len(loud_frames(list(sc.heard))) >= 60 and not loud_frames([sc.heard[-1]])
        )
        resp = await client.post("/call/dtmf", json={"callID": call["callID"], "digits": "#"})
        assert resp.status == 202, await resp.text()
        await wait_state(client, call["callID"], "ended")
    finally:
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
    heard = list(sc.heard)
    goodbye = [heard[i] for i in loud_frames(heard)][-30:]  # the last 0.6 s the caller heard
    notes = [dominant_frequency(np.concatenate(goodbye[i : i + 10]), RATE) for i in (0, 10, 20)]
    assert notes == [
        pytest.approx(783.99, abs=8),
        pytest.approx(659.25, abs=8),
        pytest.approx(523.25, abs=8),
    ], notes
