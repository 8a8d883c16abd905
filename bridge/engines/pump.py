"""``EnginePump``: moves audio between a call's bus and its engine media channel.

Two kinds of channel (``engines/channels.py``):

- a :class:`ClockedChannel` (a leg of this worker: the Cloud API's WhatsApp leg, the
  simulator's far end) joins the call as the WhatsApp side (``Conference.join``) and moves its
  own frames on the worker clock through the port it gets: no task, no queue, one de-jitter
  stage. The pump only opens the uplink and hears the leg's end;
- any other channel (a remote PCM engine's socket, whose clock is really foreign) gets two
  owned tasks, and the listeners' sinks follow its clock's drift (``media/frames.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..audio import FRAME_SAMPLES, Reframer
from ..media import BusClosed, CallBus, CallPort, Role
from ..media.conference import WHATSAPP
from ..tasks import CloseOnce, TaskSet
from .channels import ClockedChannel, MediaChannel, MediaClosed, MediaFatal

log = logging.getLogger(__name__)


class EnginePump:
    """Two owned tasks for a channel with a clock of its own: bus uplink → channel, one frame
    at a time as they arrive (an engine that needs larger frames reframes in its channel), and
    channel → 20 ms frames → bus downlink; a :class:`ClockedChannel` gets none (module
    docstring). When the channel ends on its own, ``on_closed`` is told why."""

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
        self._ending = False
        """The media is ending (the channel's own end or a close): said no more."""
        self._closing: CloseOnce[None] = CloseOnce(f"leg[{bus.call_id}]:close")
        self._port: CallPort | None = None
        """A clocked channel's door into the call (the WhatsApp side's)."""

    def start(self) -> None:
        channel = self.channel
        if isinstance(channel, ClockedChannel):
            self.bus.open_uplink(clocked=True)
            self._port = self.bus.conference.join(WHATSAPP, Role.WHATSAPP, self._leg_ended)
            channel.plug(self._port)
            return
        self.bus.open_uplink()
        self._tasks.spawn(self._run_uplink(), "uplink")
        self._tasks.spawn(self._run_downlink(), "downlink")

    async def _run_uplink(self) -> None:
        try:
            while True:
                frame = await self.bus.read_uplink()
                await self.channel.send(frame.pcm)
        except BusClosed:
            pass
        except (MediaClosed, ConnectionError) as exc:
            self._ended(exc)
        except Exception as exc:  # a bug: the media ends with it, never a call left silent
            self._failed("uplink", exc)

    async def _run_downlink(self) -> None:
        reframer = Reframer(FRAME_SAMPLES)
        try:
            while True:
                pcm = await self.channel.recv()
                for frame in reframer.push(pcm):
                    self.bus.push_downlink(frame)
        except (MediaClosed, ConnectionError) as exc:
            self._ended(exc)
        except Exception as exc:  # a bug: the media ends with it, never a call left silent
            self._failed("downlink", exc)

    def _failed(self, way: str, exc: Exception) -> None:
        """An unexpected error moving the media (a channel's bug): the task died, so the
        call's engine media is over, said once, as a lost channel would be (before, the task
        died alone and the call stayed up with that direction silent)."""
        if not self._ending:
            log.warning(
                "call %s: the engine media's %s failed: %r; its media ends",
                self.bus.call_id,
                way,
                exc,
                exc_info=exc,
            )
        self._ended(MediaFatal(f"{way} failed: {type(exc).__name__}"))

    def _leg_ended(self, why: str) -> None:
        self._ended(MediaFatal(why))

    def _ended(self, exc: BaseException | None) -> None:
        if self._ending:
            return
        self._ending = True
        self.bus.close_uplink()
        if self._on_closed is not None:
            self._on_closed(exc)

    async def close(self) -> None:
        """Stop both tasks, close the channel, and its leg leaves the call (idempotent;
        concurrent callers share one teardown, which runs to its end even if a caller is
        cancelled: ``tasks.CloseOnce``)."""
        self._ending = True
        await self._closing.run(self._teardown)

    async def _teardown(self) -> None:
        self.bus.close_uplink()
        await self._tasks.close()
        try:
            async with asyncio.timeout(5.0):
                await self.channel.close()
        except (TimeoutError, ConnectionError) as exc:
            log.warning("closing media channel of %s: %r", self.bus.call_id, exc)
        if self._port is not None:
            self._port.leave()
