"""``WhatsAppBridgeTransport``: pipecat's WebSocket client transport, dialing a call's PCM
socket on the bridge, with what a telephony transport does and the plain client does not:

* an ``InterruptionFrame`` is serialized (→ ``clear``), so the caller stops hearing the bot's
  queued speech at once, not when the bridge's queue runs dry;
* ``EndFrame``/``CancelFrame`` reach the serializer before the socket closes (→ hang-up
  through the bridge's API when ``auto_hang_up``); an ``EndFrame`` only once what the pipeline
  said has been sent and the bridge has played it (a mark behind it), so the caller hears a
  goodbye to its end — a ``CancelFrame`` hangs up at once;
* what the bridge sends before the pipeline has started is held: pipecat's client transport
  connects while the pipeline is set up, and the bridge talks at once (``ready``, audio) —
  control messages are replayed once the input has started, audio from before is dropped.
"""

from __future__ import annotations

import json
from typing import Any

from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InterruptionFrame, StartFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.websocket.client import (
    WebsocketClientInputTransport,
    WebsocketClientOutputTransport,
    WebsocketClientParams,
    WebsocketClientTransport,
)

from .serializer import END_MARK, WhatsAppBridgeFrameSerializer

EARLY_MESSAGES = 100
"""Control messages held until the pipeline has started (the bridge sends a few)."""

PLAYOUT_WAIT = 10.0
"""Seconds an ending pipeline waits for the bridge to play what it sent before hanging up: the
bridge queues at most 10 s of a socket's audio."""


class _BridgeInput(WebsocketClientInputTransport):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started = False
        self._early: list[tuple[Any, str]] = []

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._started = True
        early, self._early = self._early, []
        for websocket, message in early:
            await super().on_message(websocket, message)

    async def on_message(self, websocket: Any, message: str | bytes) -> None:
        if self._started:
            await super().on_message(websocket, message)
        elif isinstance(message, str) and len(self._early) < EARLY_MESSAGES:
            self._early.append((websocket, message))


class _BridgeOutput(WebsocketClientOutputTransport):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._write_frame(frame)

    async def stop(self, frame: EndFrame) -> None:
        # pipecat's client output sends what its media senders still hold, then disconnects:
        # the hang-up goes between the two, once the bridge has played it all (the mark).
        await BaseOutputTransport.stop(self, frame)
        serializer = self._params.serializer
        if (
            isinstance(serializer, WhatsAppBridgeFrameSerializer)
            and serializer.hangs_up
            and await self._session.send(json.dumps({"type": "mark", "name": END_MARK}))
        ):
            if not await serializer.played(PLAYOUT_WAIT):
                logger.warning(
                    f"call {serializer.call_id}: the bridge did not play the pipeline's last "
                    f"audio within {PLAYOUT_WAIT:.0f} s; hanging up anyway"
                )
        await self._write_frame(frame)
        await self._session.disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await self._write_frame(frame)
        await super().cancel(frame)


class WhatsAppBridgeTransport(WebsocketClientTransport):
    """A pipecat transport for one WhatsApp call on the bridge (see the module docstring).

    ``bridge_url`` is the bridge's HTTP root (``http://host:8080``), ``token`` its API token
    if it has one; the transport dials ``/call/{call_id}/stream`` (16 kHz s16le, 20 ms)."""

    def __init__(
        self,
        bridge_url: str,
        call_id: str,
        *,
        token: str | None = None,
        params: WebsocketClientParams | None = None,
        serializer: WhatsAppBridgeFrameSerializer | None = None,
    ) -> None:
        base = bridge_url.rstrip("/")
        ws = "ws" + base[4:] if base.startswith("http") else base
        uri = f"{ws}/call/{call_id}/stream" + (f"?token={token}" if token else "")
        params = params or WebsocketClientParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            # pipecat's 2 s of silence after an EndFrame stand in for not knowing when the far
            # end has played the last words; the bridge says so (the mark), so the hang-up
            # follows them.
            audio_out_end_silence_secs=0,
        )
        params.add_wav_header = False  # the bridge takes raw PCM
        params.serializer = serializer or WhatsAppBridgeFrameSerializer(
            call_id, bridge_url=base, token=token
        )
        super().__init__(uri, params)

    def input(self) -> WebsocketClientInputTransport:
        if not self._input:
            self._input = _BridgeInput(self, self._session, self._params)
        return self._input

    def output(self) -> WebsocketClientOutputTransport:
        if not self._output:
            self._output = _BridgeOutput(self, self._session, self._params)
        return self._output
