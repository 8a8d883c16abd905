"""Browser participants of one call and who hears whom (contact-centre roles).

One participant — the agent — is the common case: its microphone goes straight to the bus's
uplink and it hears the WhatsApp peer, as before (the *direct* path: no clock, no added
latency). As soon as the call needs a real mix — a second participant, hold, or playback
that the agent must hear too — the call switches to the *mixed* path for the rest of the
call: each 20 ms tick of the worker's one ``WorkerClock`` takes one frame from every input
(each participant's microphone, the WhatsApp peer, the playing sources) and builds every
output from that same tick, so nothing is mixed across two unsynchronised clocks.

Who hears what (Asterisk ChanSpy / Jambonz / Twilio coach semantics):

======== ==================================================== ================================
role     hears                                                is heard by
======== ==================================================== ================================
agent    WhatsApp + whispers + barges (+ playback ``both``)   WhatsApp, listeners, whisperers,
                                                              barges
listen   agent + WhatsApp + barges                            nobody
whisper  agent + WhatsApp + barges                            the agent only
barge    agent + WhatsApp                                     WhatsApp, agent, listeners,
                                                              whisperers
======== ==================================================== ================================

On hold, WhatsApp hears only the hold sources (music); the agent's microphone goes nowhere
towards WhatsApp, and the participants keep hearing each other (not the held peer).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..audio import FRAME_SAMPLES
from ..audio.pcm import Pcm
from .clock import worker_clock
from .frames import BusFrame, DownlinkSink, downlink_jitter
from .stats import BusStats

log = logging.getLogger(__name__)

INPUT_FRAMES = 4
"""Frames a participant's microphone may run ahead of the mixing clock (80 ms), oldest
dropped beyond: a browser whose clock runs fast cannot grow the delay."""


class Role(enum.StrEnum):
    AGENT = "agent"
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"


HEARS: dict[Role, frozenset[str]] = {
    Role.AGENT: frozenset({"whatsapp", "whisper", "barge", "playback"}),
    Role.LISTEN: frozenset({"agent", "whatsapp", "barge"}),
    Role.WHISPER: frozenset({"agent", "whatsapp", "barge"}),
    Role.BARGE: frozenset({"agent", "whatsapp"}),
}
"""Which inputs each role hears (``playback``: sources played with ``target: both``)."""
TO_WHATSAPP = frozenset({"agent", "barge"})
"""Which participants the WhatsApp peer hears (besides the sources)."""


@dataclass
class Participant:
    id: str
    role: Role
    sink: DownlinkSink
    inbox: deque[Pcm] = field(default_factory=lambda: deque(maxlen=INPUT_FRAMES))


class MixHost(Protocol):
    """What the conference needs of the call's bus (``bus.CallBus``), which owns it: the
    dependency runs one way, bus → conference, with no import back."""

    call_id: str
    muted: bool
    stats: BusStats

    @property
    def closed(self) -> bool: ...

    @property
    def has_downlink_sources(self) -> bool: ...

    def push_uplink(self, pcm: Pcm, t: float | None = None) -> None: ...

    def emit_mixed_uplink(self, acc: npt.NDArray[np.int32], t: float) -> Pcm | None: ...


class Conference:
    """The participants of one bus, and the mixing clock when it is needed."""

    def __init__(self, bus: MixHost) -> None:
        self.bus = bus
        self.participants: dict[str, Participant] = {}
        self.held = False
        self._from_whatsapp: deque[BusFrame] = deque(maxlen=INPUT_FRAMES)
        self._clock: Callable[[], None] | None = None
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.clocked = False
        """What the WhatsApp side says comes on the worker clock (a clocked leg, the sim):
        the participants' sinks play it in the tick it came (``DownlinkSink.set_clocked``)."""

    def set_clocked(self, clocked: bool) -> None:
        """See :attr:`clocked`: every participant's sink follows, and each joining one."""
        self.clocked = clocked
        for p in self.participants.values():
            p.sink.set_clocked(clocked)

    # -- membership
    def join(self, pid: str, role: Role) -> tuple[Callable[[Pcm], None], DownlinkSink]:
        """Add a participant; returns where its microphone goes and what it plays."""

        if pid in self.participants:
            self.leave(pid)
        sink = DownlinkSink(self.bus.stats, pid, downlink_jitter())
        sink.set_clocked(self.clocked)
        self.participants[pid] = Participant(pid, role, sink)
        self.update()

        def microphone(pcm: Pcm) -> None:
            self._input(pid, pcm)

        return microphone, sink

    def leave(self, pid: str, sink: DownlinkSink | None = None) -> None:
        """Remove a participant (only if ``sink`` is still its own, when given: a replaced
        session's late close must not remove its successor)."""
        p = self.participants.get(pid)
        if p is None or (sink is not None and p.sink is not sink):
            return
        del self.participants[pid]
        self.update()

    def set_role(self, pid: str, role: Role) -> None:
        self.participants[pid].role = role
        self.update()

    def set_held(self, held: bool) -> None:
        self.held = held
        self.update()

    @property
    def agent(self) -> Participant | None:
        return next((p for p in self.participants.values() if p.role is Role.AGENT), None)

    # -- which path
    @property
    def mixing(self) -> bool:
        """Whether the mixing clock runs now."""
        return self._clock is not None

    @property
    def mixed(self) -> bool:
        """Whether the call needs the mixing clock (see the module docstring)."""
        if self.held or len(self.participants) > 1:
            return True
        only = next(iter(self.participants.values()), None)
        if only is not None and only.role is not Role.AGENT:
            return True
        return self.bus.has_downlink_sources

    def update(self) -> None:
        """Start the mixing clock once the call needs a mix.

        It then runs until the call ends, even if the call goes back to one agent: switching
        paths mid-call (after a hand-off, say) would put the WhatsApp side's frames on a new
        phase, a gap of up to a frame plus jitter; on one clock there is none.
        """
        if self.mixed and self._clock is None and not self.bus.closed:
            for p in self.participants.values():
                p.inbox.clear()
            self._from_whatsapp.clear()
            self._clock = worker_clock().register(self._tick)

    async def aclose(self) -> None:
        unregister, self._clock = self._clock, None
        if unregister is not None:
            unregister()
        self.participants.clear()

    # -- inputs
    def _input(self, pid: str, pcm: Pcm) -> None:
        p = self.participants.get(pid)
        if p is None:
            return  # left already (its session's last frames)
        if self._clock is None:
            if p.role is Role.AGENT:
                self.bus.push_uplink(pcm)  # the direct path
            return
        if len(p.inbox) == p.inbox.maxlen:
            self.bus.stats.source_frames_dropped += 1
        p.inbox.append(pcm)

    def from_whatsapp(self, frame: BusFrame) -> bool:
        """A frame from the WhatsApp peer; ``True`` when the mixer takes it (mixed path)."""
        if self._clock is None:
            return False
        self._from_whatsapp.append(frame)
        return True

    # -- the mixing clock
    def _tick(self, now: float) -> None:
        """The worker clock's tick for this call (see :class:`WorkerClock`)."""
        if self.bus.closed:
            return
        try:
            self.mix_once(now)
        except Exception:
            log.exception("call %s: the mixer failed", self.bus.call_id)
            raise

    def mix_once(self, now: float) -> None:
        """One 20 ms tick: every output from the same inputs (vectorised int32, one clip)."""

        wa = self._from_whatsapp.popleft() if self._from_whatsapp else None
        inputs: dict[str, npt.NDArray[np.int32]] = {}
        roles: dict[str, Role] = {}
        for p in self.participants.values():
            pcm = p.inbox.popleft() if p.inbox else self._silence
            inputs[p.id] = pcm.astype(np.int32)
            roles[p.id] = p.role
        to_wa = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        if not self.held and not self.bus.muted:
            for pid, role in roles.items():
                if role in TO_WHATSAPP:
                    to_wa += inputs[pid]
        playback = self.bus.emit_mixed_uplink(to_wa, now)
        groups: dict[str, npt.NDArray[np.int32]] = {
            name: np.zeros(FRAME_SAMPLES, dtype=np.int32)
            for name in ("agent", "whisper", "barge", "listen")
        }
        for pid, role in roles.items():
            groups[str(role)] += inputs[pid]
        if wa is not None and not self.held:
            groups["whatsapp"] = wa.pcm.astype(np.int32)
        if playback is not None:
            groups["playback"] = playback.astype(np.int32)
        t = wa.t if wa is not None else now
        for p in self.participants.values():
            acc = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            for name in HEARS[p.role]:
                source = groups.get(name)
                if source is None:
                    continue
                acc += source  # no role hears its own group: nobody hears themselves
            p.sink.push(BusFrame(np.clip(acc, -32768, 32767).astype(np.int16), t))
