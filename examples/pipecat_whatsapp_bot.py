"""A pipecat bot that answers WhatsApp calls through the bridge (16 kHz, no µ-law).

    .venv/bin/pip install -e '.[pipecat]'    # in a checkout, after `make run` made .venv
    .venv/bin/python examples/pipecat_whatsapp_bot.py --bridge http://127.0.0.1:8080 [--token TOKEN]

It follows the bridge's call events (``GET /call/events``, Server-Sent Events), answers every
inbound call (``POST /call/answer``) and runs one pipecat pipeline per call on the call's PCM
socket through :class:`pipecat_whatsapp_bridge.WhatsAppBridgeTransport`:

* it greets the caller (a rising chime here; put your STT → LLM → TTS services between the
  transport's input and output for a real agent);
* a key the caller presses arrives as pipecat's ``InputDTMFFrame``: ``1`` says the chime
  again, ``0`` interrupts it (``InterruptionFrame``: the transport sends ``clear`` and the
  caller stops hearing the queued audio at once), ``#`` says goodbye and ends the pipeline —
  the serializer then hangs the WhatsApp call up through the bridge's API (``POST /call/hangup``);
* when the caller hangs up the bridge closes the socket and the pipeline is cancelled.

Try it against the bridge's simulator: run ``make run`` (the sim engine), start this bot,
then ``curl -X POST http://127.0.0.1:8080/call/sim/incoming -H "Content-Type: application/json"
-d '{"phone": "5521999999999"}'`` (the simulated caller echoes the chime back to the bot).
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipecat_whatsapp_bridge import WhatsAppBridgeTransport

RATE = 16_000
RISING = (523.25, 659.25, 783.99)  # C5 E5 G5: hello, and "again"
FALLING = RISING[::-1]  # goodbye


def chime(seconds: float = 1.2, freqs: tuple[float, ...] = RISING) -> bytes:
    """Three notes, s16le: what the bot says (stand-in for TTS audio)."""
    notes = []
    for freq in freqs:
        t = np.arange(int(RATE * seconds / 3)) / RATE
        notes.append(np.sin(2 * np.pi * freq * t) * np.exp(-t * 3) * 0.4)
    return (np.concatenate(notes) * 32767).astype("<i2").tobytes()


class KeypadBot(FrameProcessor):
    """Speaks on start and on key presses; ``#`` ends the call."""

    async def say(self, audio: bytes) -> None:
        step = RATE // 50 * 2  # 20 ms of s16
        for i in range(0, len(audio), step):
            await self.push_frame(OutputAudioRawFrame(audio[i : i + step], RATE, 1))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame):
            key = frame.button.value
            logger.info(f"caller pressed {key}")
            if key == "1":
                await self.say(chime())
            elif key == "0":
                await self.push_frame(InterruptionFrame())
            elif key == "#":
                await self.say(chime(0.6, FALLING))
                await self.push_frame(EndFrame())  # → hang-up through the bridge's API
            return
        await self.push_frame(frame, direction)


async def run_bot(bridge: str, call_id: str, token: str | None) -> None:
    transport = WhatsAppBridgeTransport(bridge, call_id, token=token)
    bot = KeypadBot()
    task = PipelineWorker(
        Pipeline([transport.input(), bot, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,  # the bridge's control messages are not RTVI
    )

    @transport.event_handler("on_connected")
    async def greet(_transport, _ws) -> None:
        await bot.say(chime())

    @transport.event_handler("on_disconnected")
    async def caller_left(_transport, _ws) -> None:
        await task.cancel()  # the call ended (the bridge closed the socket)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    await runner.run()


async def answer_calls(bridge: str, token: str | None) -> None:
    headers = {"token": token} if token else {}
    bots: set[asyncio.Task[None]] = set()
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{bridge}/call/events", timeout=aiohttp.ClientTimeout()) as events,
        ):
            async for line in events.content:
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                # Events about a number or a user (number.*, call.permission) carry no call.
                call = event.get("call") or {}
                if event["type"] != "call.ringing" or call.get("direction") != "inbound":
                    continue
                call_id = call["callID"]
                async with http.post(f"{bridge}/call/answer", json={"callID": call_id}) as resp:
                    if resp.status != 200:
                        logger.warning(f"cannot answer {call_id}: {await resp.text()}")
                        continue
                logger.info(f"answered {call_id} from {call['peer']}")
                bot = asyncio.create_task(run_bot(bridge, call_id, token), name=f"bot:{call_id}")
                bots.add(bot)
                bot.add_done_callback(bots.discard)
    finally:  # stopped (Ctrl-C) or the bridge went away: the calls' bots stop too
        for bot in bots:
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a pipecat bot for WhatsApp calls")
    parser.add_argument("--bridge", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default=None, help="the bridge's API token, if it has one")
    args = parser.parse_args()
    asyncio.run(answer_calls(args.bridge.rstrip("/"), args.token))


if __name__ == "__main__":
    main()
