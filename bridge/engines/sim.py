"""The embedded simulated WhatsApp network (``BRIDGE_ENGINE=sim``, the default;
docs/engines/sim.md).

Dialling rings for ``sim_answer_delay`` seconds and then answers; the far end echoes what it
hears after ``sim_echo_delay`` seconds (or sends a tone, or silence) and may hang up after
``sim_hangup_after``. Its far end lives in this worker: a ``ClockedChannel`` on the worker
clock, as the Cloud API's WhatsApp leg is, with no task or timer of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, tone
from ..audio.pcm import Pcm
from ..config import Settings, SimPeer, SimSettings
from ..errors import EngineCallNotFound, EngineError
from ..media.clock import TICK_FAILURES, Phase, worker_clock
from ..media.ports import ClockedPort
from ..tasks import TaskSet
from .base import EngineEvent, EngineEventKind, EngineHealth, EngineStats, RemoteCall, emit
from .channels import LegPort, MediaClosed, MediaFatal

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
ECHO_EARLY = 0.06
MAX_ENDED_CALLS = 100


@dataclass
class SimCall:
    """The simulated network's view of one call."""

    id: str
    peer: str
    direction: str
    state: str = "ringing"
    heard: deque[Pcm] = field(default_factory=lambda: deque(maxlen=50 * 2))
    """The last 2 s of audio the simulated peer received (for demos and tests)."""
    heard_at: deque[float] = field(default_factory=lambda: deque(maxlen=50 * 10))
    """When the last 10 s of those frames arrived (monotonic): the tests time what the peer
    heard by it (an agent's voice gone after its stream fell silent)."""
    frames_heard: int = 0
    channel: SimMediaChannel | None = None


class SimMediaChannel:
    """The simulated peer's end of a call's audio, paced by the worker clock: plugged into the
    WhatsApp side's door into the call (:meth:`plug`), it hears this tick's uplink frame and
    says its own in the engine phase, after the mix and before the tracks take the downlink."""

    def __init__(self, call: SimCall, settings: SimSettings) -> None:
        self.call = call
        self.behaviour = settings.sim_peer
        self.echo_delay = settings.sim_echo_delay
        self.tone_hz = settings.sim_tone_hz
        self._delay: deque[tuple[float, Pcm]] = deque(
            maxlen=int((settings.sim_echo_delay + 0.5) / FRAME_S)
        )
        self._phase = 0
        self._echoing = False
        self._depth = max(1, round(settings.sim_echo_delay / FRAME_S))
        # Frames the line may hold beyond its depth before it drops the oldest (absorbs uplink
        # bursts). With no echo delay asked for, one: the echo then adds at most 40 ms, so a
        # round trip timed from outside (the bench's click) is the bridge's, not this line's.
        self._slack = 5 if settings.sim_echo_delay > 0 else 1
        self.door = LegPort()
        """Its side of the WhatsApp side's door into the call, as a leg to Meta has."""
        self._unclock: Callable[[], None] | None = None
        self._failures = 0
        """Its ticks that raised in a row (:meth:`_tick_failed`)."""

    def plug(self, port: ClockedPort) -> None:
        """The call from now on, on the worker clock's engine phase; a channel already closed
        tells it at once."""
        self.door.plug(port)
        self._clock_on()

    def _clock_on(self) -> None:
        if self._unclock is None and self.door.over is None and self._failures < TICK_FAILURES:
            self._unclock = worker_clock().register(self._tick, Phase.ENGINE, self._tick_failed)

    def _tick(self, now: float) -> None:
        source = self.door.source
        if source.port is None:
            return
        while (pcm := source.take(now)) is not None:
            self.hear(pcm, now)
        self.door.received(self._produce(now))
        self._failures = 0  # through: a failure to come starts the count again

    def _tick_failed(self) -> None:
        """The clock dropped a tick that raised (a bug, logged there with its traceback): the
        far end is back on the clock from the next tick, a fault of one moment costing a
        frame. One that raises :data:`TICK_FAILURES` times in a row is given up: the far end
        is silent for the rest of the call, said once."""
        self._unclock = None
        self._failures += 1
        if self._failures >= TICK_FAILURES:
            log.warning(
                "simulated call %s: the far end failed %d times in a row: "
                "it is silent for the rest of the call",
                self.call.id,
                self._failures,
            )
            return
        self._clock_on()

    def hear(self, pcm: Pcm, now: float) -> None:
        """A frame the far end heard on the tick at ``now`` (the tick's time, not a clock read:
        the echo line compares it with that same tick's, so a loop that runs the tick late
        still echoes the frame in the tick it was heard)."""
        if self.door.over is not None:
            raise MediaClosed(self.call.id)
        self.call.heard.append(pcm)
        self.call.heard_at.append(now)
        self.call.frames_heard += 1
        if self.behaviour is SimPeer.ECHO:
            self._delay.append((now, pcm))

    # The plain ``MediaChannel`` face: nothing reads or writes it (the pump plugs it).
    async def send(self, pcm: Pcm) -> None:
        raise MediaFatal(f"{self.call.id}: a clocked channel is plugged, not written")

    async def recv(self) -> Pcm:
        raise MediaFatal(f"{self.call.id}: a clocked channel is plugged, not read")

    def _produce(self, at: float) -> Pcm:
        if self.behaviour is SimPeer.TONE:
            frame = tone(self.tone_hz, FRAME_SAMPLES, SAMPLE_RATE, amplitude=0.3, start=self._phase)
            self._phase += FRAME_SAMPLES
            return frame
        if self.behaviour is SimPeer.ECHO:
            return self._echo(at)
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def _echo(self, at: float) -> Pcm:
        # The echo is a delay line that doubles as the far end's jitter buffer: playout starts
        # once the oldest frame is ``echo_delay`` old, then one frame per tick, so uplink
        # bursts and event-loop stalls shorter than the delay leave no gap. Depth is kept near
        # the delay (drift would otherwise grow it), and an empty line waits to refill.
        line = self._delay
        if not self._echoing:
            if not line or line[0][0] + self.echo_delay > at + ECHO_EARLY:
                return np.zeros(FRAME_SAMPLES, dtype=np.int16)
            self._echoing = True
        if not line:
            self._echoing = False
            return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        while len(line) > self._depth + self._slack:
            line.popleft()
        return line.popleft()[1]

    async def close(self) -> None:
        """The far end hangs up (or the call's media closes): off the clock, and the plugged
        port told once."""
        unclock, self._unclock = self._unclock, None
        if unclock is not None:
            unclock()
        self.door.end(f"{self.call.id}: the simulated far end hung up")


class SimEngine:
    """An in-process simulated WhatsApp engine implementing the ``Engine`` protocol."""

    name = "sim"
    media_before_answer = False
    up = True  # in process: always reachable

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue(maxsize=1000)
        self.stats = EngineStats()
        self.calls: dict[str, SimCall] = {}
        self._tasks = TaskSet("sim")
        self._ids = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings, http: object = None) -> SimEngine:
        """The engine registered for ``BRIDGE_ENGINE=sim`` (it makes no requests)."""
        return cls(settings.sim)

    async def start(self) -> None:
        log.info("simulated WhatsApp engine ready (peer behaviour: %s)", self.settings.sim_peer)

    async def close(self) -> None:
        await self._tasks.close()
        for call in self.calls.values():
            if call.channel is not None:
                await call.channel.close()
        self.calls.clear()

    async def health(self) -> EngineHealth:
        return EngineHealth(up=True, detail="simulated engine", info={"calls": len(self.calls)})

    def _new_call(self, phone: str, direction: str) -> SimCall:
        call_id = f"SIM{next(self._ids):04d}{uuid.uuid4().hex[:8].upper()}"
        self.calls[call_id] = SimCall(call_id, f"{phone}@s.whatsapp.net", direction)
        return self.calls[call_id]

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        call = self._new_call(phone, "outbound")
        self._tasks.spawn(self._ring_then_answer(call), f"dial:{call.id}")
        return call.id

    async def _ring_then_answer(self, call: SimCall) -> None:
        await asyncio.sleep(0)
        emit(self.events, EngineEvent(EngineEventKind.RINGING, call.id, call.peer))
        await asyncio.sleep(self.settings.sim_answer_delay)
        if call.state != "ringing":
            return
        self._answered(call)

    def _answered(self, call: SimCall) -> None:
        call.state = "active"
        emit(self.events, EngineEvent(EngineEventKind.ANSWERED, call.id, call.peer))
        if self.settings.sim_hangup_after > 0:
            self._tasks.spawn(self._remote_hangup(call), f"hangup:{call.id}")

    async def _remote_hangup(self, call: SimCall) -> None:
        await asyncio.sleep(self.settings.sim_hangup_after)
        if call.state == "active":
            await self._end(call)
            emit(self.events, EngineEvent(EngineEventKind.ENDED, call.id, reason="remote_hangup"))

    def incoming(self, phone: str) -> str:
        """Simulate an inbound call from ``phone``; it rings until answered or declined."""
        call = self._new_call(phone, "inbound")
        emit(self.events, EngineEvent(EngineEventKind.INCOMING, call.id, call.peer))
        return call.id

    def _get(self, engine_call_id: str) -> SimCall:
        call = self.calls.get(engine_call_id)
        if call is None or call.state == "ended":
            raise EngineCallNotFound(f"simulated engine has no live call {engine_call_id}")
        return call

    async def answer(self, engine_call_id: str) -> None:
        call = self._get(engine_call_id)
        if call.direction != "inbound" or call.state != "ringing":
            raise EngineError(f"call {engine_call_id} is not ringing inbound")
        self._answered(call)

    async def hangup(self, engine_call_id: str) -> None:
        await self._end(self._get(engine_call_id))

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        """Never needed: the in-process network is always reachable."""

    async def startup_calls(self) -> list[RemoteCall]:
        """A simulated network starts with no calls: nothing is ever orphaned."""
        return []

    async def _end(self, call: SimCall) -> None:
        call.state = "ended"
        if call.channel is not None:
            await call.channel.close()
        # Keep a bounded history of ended calls (tests and demos read it), without their audio.
        call.heard = deque(list(call.heard)[-50:], maxlen=50)
        ended = [k for k, c in self.calls.items() if c.state == "ended"]
        for key in ended[: max(0, len(ended) - MAX_ENDED_CALLS)]:
            del self.calls[key]

    async def open_media(self, engine_call_id: str) -> SimMediaChannel:
        call = self._get(engine_call_id)
        if call.channel is not None:
            await call.channel.close()
        call.channel = SimMediaChannel(call, self.settings)
        return call.channel
