"""``EnginePump``: moves audio between a call's bus and its engine media channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..audio import FRAME_SAMPLES, Reframer
from ..media import BusClosed, CallBus
from ..media.clock import Phase, worker_clock
from ..tasks import TaskSet
from .channels import InProcessChannel, MediaChannel, MediaClosed

log = logging.getLogger(__name__)


class EnginePump:
    """Two owned tasks: bus uplink → channel, and channel → 20 ms frames → bus downlink.

    Uplink frames go to the engine one by one as they arrive (no batching here; an engine
    that needs larger frames reframes in its channel). When the channel ends on its own,
    ``on_closed`` is called with the exception, so the owner can reconnect or end the call.
    A channel whose far end lives in this worker (:class:`InProcessChannel`) gets no tasks:
    both directions move on the worker clock's engine phase, after this tick's uplink frame
    was made and before the browsers' tracks take the downlink frame.
    """

    def __init__(
        self,
        bus: CallBus,
        channel: MediaChannel,
        *,
        on_closed: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.bus = bus
        self.channel = channel
        self._on_closed = on_closed
        self._tasks = TaskSet(f"leg[{bus.call_id}]")
        self._closing = False
        self._close_lock = asyncio.Lock()
        self._closed = False
        self._unclock: Callable[[], None] | None = None
        """Takes the in-process channel's tick off the worker clock."""

    def start(self) -> None:
        self.bus.open_uplink()
        if isinstance(self.channel, InProcessChannel):
            self._unclock = worker_clock().register(self._tick, Phase.ENGINE)
            return
        self._tasks.spawn(self._run_uplink(), "uplink")
        self._tasks.spawn(self._run_downlink(), "downlink")

    def _tick(self, now: float) -> None:
        channel: InProcessChannel = self.channel  # type: ignore[assignment]  # (start)
        stats = self.bus.stats
        try:
            try:
                while (frame := self.bus.take_uplink()) is not None:
                    stats.whatsapp_out.add(frame.pcm)
                    channel.hear(frame.pcm)
            except BusClosed:
                pass  # the call is closing: the far end still speaks until the pump closes
            pcm = channel.say(now)
        except MediaClosed as exc:
            self._stop_clock()
            self._ended(exc)
            return
        stats.whatsapp_in.add(pcm)
        self.bus.push_downlink(pcm)

    def _stop_clock(self) -> None:
        if self._unclock is not None:
            self._unclock()
            self._unclock = None

    async def _run_uplink(self) -> None:
        try:
            while True:
                frame = await self.bus.read_uplink()
                self.bus.stats.whatsapp_out.add(frame.pcm)
                await self.channel.send(frame.pcm)
        except BusClosed:
            pass
        except (MediaClosed, ConnectionError) as exc:
            self._ended(exc)

    async def _run_downlink(self) -> None:
        reframer = Reframer(FRAME_SAMPLES)
        try:
            while True:
                pcm = await self.channel.recv()
                for frame in reframer.push(pcm):
                    self.bus.stats.whatsapp_in.add(frame)
                    self.bus.push_downlink(frame)
        except (MediaClosed, ConnectionError) as exc:
            self._ended(exc)

    def _ended(self, exc: BaseException | None) -> None:
        if self._closing:
            return
        self._closing = True
        self.bus.close_uplink()
        if self._on_closed is not None:
            self._on_closed(exc)

    async def close(self) -> None:
        """Stop both tasks and close the channel (idempotent, concurrent-safe)."""
        async with self._close_lock:
            if self._closed:
                return
            self._closing = True
            self.bus.close_uplink()
            self._stop_clock()
            await self._tasks.close()
            try:
                await asyncio.wait_for(self.channel.close(), 5.0)
            except (TimeoutError, ConnectionError) as exc:
                log.warning("closing media channel of %s: %r", self.bus.call_id, exc)
            self._closed = True
