"""A pipecat ``FrameSerializer`` for the bridge's PCM WebSocket (``GET /call/{callID}/stream``).

The wire (the bridge's docs/agents.md): binary messages are s16le 16 kHz mono PCM both ways;
text messages are JSON control. From the bridge: ``ready``, ``call_state``, ``ended``,
``buffer``, ``mark``, ``cleared``, ``error`` and ``dtmf`` (a key the WhatsApp user pressed);
to it: ``clear`` (drop what is queued) and ``mark``.

Frames, both ways:

* ``InputAudioRawFrame`` ← binary audio (resampled to the pipeline's input rate);
* ``InputDTMFFrame`` ← ``dtmf``; every other control message reaches the pipeline as an
  ``InputTransportMessageFrame`` with the message (a mark played, the call ended …);
* audio frames → binary audio at 16 kHz; ``InterruptionFrame`` → ``clear`` (the call stops
  hearing the bot's queued speech within a frame); ``OutputTransportMessage(Urgent)Frame`` →
  its message as JSON (e.g. ``{"type": "mark", "name": "turn-3"}``);
* ``EndFrame``/``CancelFrame`` → with ``auto_hang_up`` the call is hung up through the
  bridge's API (``POST /call/hangup``), the way pipecat's Twilio serializer uses Twilio's REST API;
  on an ``EndFrame`` the transport first waits for the bridge to have played what was sent (its
  own mark, :data:`END_MARK`), so a goodbye is heard to its end.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

BRIDGE_RATE = 16_000
"""The bridge's socket rate: the call's own (WhatsApp's Opus is wideband)."""

END_MARK = "pipecat_whatsapp_bridge.end"
"""The mark sent behind the last audio of a pipeline that ends; its answer (played, or cleared)
lets the hang-up go. Kept from the pipeline."""


class WhatsAppBridgeFrameSerializer(FrameSerializer):
    """Serializer for the bridge's PCM WebSocket (see the module docstring)."""

    class InputParams(FrameSerializer.InputParams):
        """Parameters.

        Parameters:
            sample_rate: the pipeline's input rate (default: the pipeline's own).
            auto_hang_up: hang the call up through the bridge's API on ``EndFrame``.
        """

        sample_rate: int | None = None
        auto_hang_up: bool = True

    def __init__(
        self,
        call_id: str,
        bridge_url: str | None = None,
        token: str | None = None,
        params: InputParams | None = None,
    ) -> None:
        """``call_id``: the bridge's call; ``bridge_url`` (``http://host:port``) and ``token``
        (the bridge's API token, if it has one): where ``auto_hang_up`` hangs up."""
        params = params or WhatsAppBridgeFrameSerializer.InputParams()
        super().__init__(params)
        self._params: WhatsAppBridgeFrameSerializer.InputParams = params
        if params.auto_hang_up and not bridge_url:
            raise ValueError("auto_hang_up needs bridge_url (or set auto_hang_up=False)")
        self.call_id = call_id
        self._bridge_url = (bridge_url or "").rstrip("/")
        self._token = token
        self._sample_rate = 0
        self._in = create_stream_resampler(clear_after_secs=params.resampler_clear_after_secs)
        self._out = create_stream_resampler(clear_after_secs=params.resampler_clear_after_secs)
        self._hung_up = False
        self._end_played = asyncio.Event()

    async def setup(self, setup: FrameProcessorSetup) -> None:
        self._sample_rate = self._params.sample_rate or setup.audio_in_sample_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, (EndFrame, CancelFrame)):
            if self._params.auto_hang_up and not self._hung_up:
                self._hung_up = True
                await self.hang_up()
            return None
        if isinstance(frame, InterruptionFrame):
            return json.dumps({"type": "clear"})
        if isinstance(frame, AudioRawFrame):
            audio = frame.audio
            if frame.sample_rate != BRIDGE_RATE:
                audio = await self._out.resample(audio, frame.sample_rate, BRIDGE_RATE)
            return bytes(audio) or None
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            if self.should_ignore_frame(frame):
                return None
            return json.dumps(frame.message)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            if len(data) % 2:
                return None
            audio = data
            if self._sample_rate != BRIDGE_RATE:
                audio = await self._in.resample(data, BRIDGE_RATE, self._sample_rate)
            if not audio:
                return None
            return InputAudioRawFrame(audio=audio, num_channels=1, sample_rate=self._sample_rate)
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            logger.warning(f"bridge sent a text frame that is not JSON: {data[:80]!r}")
            return None
        if not isinstance(message, dict):
            return None
        if message.get("type") == "mark" and message.get("name") == END_MARK:
            self._end_played.set()
            return None
        if message.get("type") == "ended":
            self._end_played.set()  # nothing more will play, nor answer the mark
        if message.get("type") == "dtmf":
            try:
                return InputDTMFFrame(KeypadEntry(message.get("digit")))
            except ValueError:
                return None
        return InputTransportMessageFrame(message=message)

    @property
    def hangs_up(self) -> bool:
        """Whether an ``EndFrame`` will hang the call up (``auto_hang_up``, not done yet)."""
        return self._params.auto_hang_up and not self._hung_up

    async def played(self, timeout: float) -> bool:
        """Wait until the bridge answered :data:`END_MARK` (or said the call ended), at most
        ``timeout`` seconds; whether it did."""
        try:
            await asyncio.wait_for(self._end_played.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def hang_up(self) -> None:
        """End the WhatsApp call through the bridge's API (``POST /call/hangup``)."""
        headers = {"token": self._token} if self._token else {}
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{self._bridge_url}/call/hangup",
                    json={"callID": self.call_id},
                    headers=headers,
                ) as response,
            ):
                if response.status >= 400 and response.status != 409:  # 409: already ended
                    logger.error(
                        f"bridge refused to hang up {self.call_id}: {response.status} "
                        f"{await response.text()}"
                    )
        except aiohttp.ClientError as exc:
            logger.error(f"cannot reach the bridge to hang up {self.call_id}: {exc}")
