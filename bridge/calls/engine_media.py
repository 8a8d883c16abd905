"""The WhatsApp side's media of one call: the engine's leg, and the pump between it and the bus.

Owned by the call's runtime (:mod:`.runtime`). It holds the engine's own per-call resource when
the engine has one in this process (a :class:`~bridge.engines.LegEngine`: the Cloud API's
WhatsApp-side peer connection, made before the call existed and taken over here), and opens the
engine media once something uses the bus — a browser, an attachment that wants media, key
presses — and the call is due for it (answered, or at once on engines whose media socket
carries call state). A worker that hands a call over swaps the channel under the pump
(:meth:`EngineMedia.swap`). When the media ends by itself, ``on_lost`` tells the runtime's owner,
which decides what the call does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..engines import CallLeg, Engine, EnginePump, LegEngine, WebRTCChannel, WebRTCLeg
from ..engines.channels import MediaChannel
from ..errors import EngineError
from ..media import CallBus
from ..tasks import TaskSet
from .dtmf import InbandDtmf
from .model import Call, CallState

log = logging.getLogger(__name__)


class EngineMedia:
    """The engine's leg and media pump of one call. See the module docstring."""

    def __init__(
        self,
        call: Call,
        engine: Engine,
        bus: CallBus,
        tasks: TaskSet,
        *,
        wanted: Callable[[], bool],
        on_lost: Callable[[BaseException | None], None],
        on_opened: Callable[[], None],
        on_whatsapp_dtmf: Callable[[str, int], None],
    ) -> None:
        self.call = call
        self.engine = engine
        self.bus = bus
        self._tasks = tasks
        self._wanted = wanted
        """Whether anything uses the call's audio (bus users, attachments that want media)."""
        self._on_lost = on_lost
        self._on_opened = on_opened
        self._on_whatsapp_dtmf = on_whatsapp_dtmf
        self.leg: CallLeg | None = (
            engine.take_leg(call.engine_call_id) if isinstance(engine, LegEngine) else None
        )
        """The engine's own per-call resource, owned from now on (closed after the pump)."""
        self._pump: EnginePump | None = None
        self._webrtc: WebRTCLeg | None = None
        self._dtmf_in: InbandDtmf | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def pump(self) -> EnginePump | None:
        return self._pump

    @pump.setter
    def pump(self, pump: EnginePump | None) -> None:
        """The pump, and with it :attr:`webrtc_leg`: its channel's, asked once per pump (a
        pump keeps its channel, a channel its leg). A runtime ``Protocol``'s ``isinstance``
        walks the class's attributes every time: asked by the reports' sampler and the
        quality sampler every second of every call, it was ~0.7 % of a forwarded call's CPU
        (docs/performance.md)."""
        self._pump = pump
        channel = pump.channel if pump is not None else None
        self._webrtc = channel.leg if isinstance(channel, WebRTCChannel) else None

    @property
    def channel(self) -> MediaChannel | None:
        return self._pump.channel if self._pump is not None else None

    @property
    def webrtc_leg(self) -> WebRTCLeg | None:
        """The engine media channel's WebRTC peer connection when it has one (cloudapi)."""
        return self._webrtc

    def _due(self) -> bool:
        if self._closed or not self._wanted():
            return False
        # Engines whose media socket also carries call state (WADial) open it as soon as the
        # call exists; the others once it is answered.
        if self.engine.media_before_answer:
            return self.call.live
        return self.call.state is CallState.ACTIVE

    def wake(self) -> None:
        """Open the engine media in the background if it is due (idempotent)."""
        if self._due() and self.pump is None and not self._tasks.closed:
            self._tasks.spawn(self.open(), "engine-media")

    async def open(self) -> None:
        """Open the engine media now if it is due and not open yet, and wait for it."""
        async with self._lock:
            if self.pump is not None or not self._due():
                return
            call = self.call
            try:
                channel = await self.engine.open_media(call.engine_call_id)
            except (EngineError, ConnectionError) as exc:
                # INFO: the call's failure is said at WARNING, with this reason, if the engine
                # does not report the call's end first (``Endings.media_lost``).
                log.info(
                    "call %s: cannot open engine media: %s",
                    call.id,
                    exc,
                    extra={"call_id": call.id},
                )
                self._on_lost(exc)  # a call that cannot carry audio is failed
                return
            if not self._due():
                await channel.close()
                return
            self.pump = EnginePump(self.bus, channel, on_closed=self._pump_closed)
            if self._dtmf_in is None and not isinstance(channel, WebRTCChannel):
                # A PCM engine: the WhatsApp user's key presses are tones in its audio.
                self._dtmf_in = InbandDtmf(self.bus, self._on_whatsapp_dtmf)
            self.pump.start()
            self._on_opened()

    async def swap(self, channel: MediaChannel) -> None:
        """Carry the engine audio over ``channel`` from now on, the current one closed (a
        worker that handed the call over relays its browser through the new owner)."""
        async with self._lock:
            old, self.pump = self.pump, None
            if old is not None:
                await old.close()
            self.pump = EnginePump(self.bus, channel, on_closed=self._pump_closed)
            self.pump.start()

    def _pump_closed(self, exc: BaseException | None) -> None:
        log.info(
            "call %s: engine media closed (%s)", self.call.id, exc, extra={"call_id": self.call.id}
        )
        if not self._closed:
            self._on_lost(exc)

    def leg_json(self) -> dict[str, Any]:
        leg: dict[str, Any] = {
            "engine": self.engine.name,
            "open": self.pump is not None and not self._closed,
        }
        webrtc = self.webrtc_leg
        if webrtc is not None:
            leg["webrtc"] = webrtc.leg_json()  # the WhatsApp side's own peer connection
        return leg

    def stop(self) -> None:
        """No more opening, no more losses reported: the call is closing."""
        self._closed = True

    async def close(self) -> None:
        """Close the in-band detector and the pump (idempotent); the leg is :meth:`release`'s."""
        self._closed = True
        if self._dtmf_in is not None:
            self._dtmf_in.close()
        if self.pump is not None:
            await self.pump.close()

    async def release(self) -> None:
        """Close the engine's own leg, last of all (it outlives the pump that used it)."""
        if self.leg is not None:
            try:
                await self.leg.close()
            except Exception:
                log.exception("call %s: closing the engine's leg", self.call.id)

    def forget(self) -> None:
        """Drop the pump: it calls back into the call (see ``Participants.forget``)."""
        self.pump = None
