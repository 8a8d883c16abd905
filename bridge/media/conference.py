"""The one router of a call: every in-worker leg's door into it, and who hears whom
(contact-centre roles).

Every leg that lives in this worker joins the call here, by :meth:`Conference.join`, and gets
the same kind of door, a :class:`CallPort`: it hands the frame it received to ``accept``,
takes the frame it sends from ``take``, leaves by ``leave`` and says it ended by ``ended``.
The conference routes each by the port's role: a participant (a browser, a trunk's phone)
speaks into the mix and hears its own mix; the WhatsApp side (:attr:`Role.WHATSAPP`: the Cloud
API's DTLS or SDES leg, the simulator's far end) says the bus's downlink and hears its uplink.
A remote PCM engine's socket keeps the engine pump's two tasks (its clock is foreign) and
reaches the same routing through ``CallBus.push_downlink`` and ``read_uplink``.

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
whatsapp agent + barges + sources (held: sources only)        every participant (not while
                                                              held)
======== ==================================================== ================================

On hold, WhatsApp hears only the hold sources (music); the agent's microphone goes nowhere
towards WhatsApp, and the participants keep hearing each other (not the held peer).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..audio import FRAME_SAMPLES
from ..audio.pcm import Pcm, clip16
from .clock import TICK_FAILURES, worker_clock
from .drops import MICROPHONE_OVERFLOW, Drops
from .frames import BusFrame, DownlinkSink, downlink_jitter
from .stats import BusStats
from .whatsapp_in import WhatsAppInput

log = logging.getLogger(__name__)

INPUT_FRAMES = 4
"""Frames a participant's microphone may run ahead of the mixing clock (80 ms), oldest
dropped beyond (the call's ``microphone_frames_dropped``, said once a call): a browser whose
clock runs fast cannot grow the delay."""


class Role(enum.StrEnum):
    AGENT = "agent"
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"
    WHATSAPP = "whatsapp"
    """The call's other side, not a participant: the leg to the WhatsApp user (one a call)."""


HEARS: dict[Role, frozenset[str]] = {
    Role.AGENT: frozenset({"whatsapp", "whisper", "barge", "playback"}),
    Role.LISTEN: frozenset({"agent", "whatsapp", "barge"}),
    Role.WHISPER: frozenset({"agent", "whatsapp", "barge"}),
    Role.BARGE: frozenset({"agent", "whatsapp"}),
}
"""Which inputs each participant's role hears (``playback``: sources played with ``target:
both``)."""
TO_WHATSAPP = frozenset({"agent", "barge"})
"""Which participants the WhatsApp peer hears (besides the sources)."""
WHATSAPP = "whatsapp"
"""The id the WhatsApp side joins with."""


class CallPort:
    """One in-worker leg's door into the call (``media/ports.py`` ``ClockedPort`` and
    ``FrameSource``), the same for every leg: the leg hands its received frame to
    :meth:`accept` and takes the frame it sends from :meth:`take`, each in its phase of the
    worker clock. It decides nothing: :class:`Conference` routes both by :attr:`role`."""

    def __init__(
        self,
        conference: Conference,
        pid: str,
        role: Role,
        sink: DownlinkSink | None,
        ended: Callable[[str], None] | None,
    ) -> None:
        self.id = pid
        self.role = role
        self.sink = sink
        """What a participant hears (its playout); ``None`` on the WhatsApp side, which hears
        the bus's uplink."""
        self.inbox: deque[Pcm] = deque(maxlen=INPUT_FRAMES)
        """A participant's microphone frames waiting for the mixing clock's tick."""
        self._conference = conference
        self._ended = ended

    def accept(self, pcm: Pcm) -> None:
        """The frame the leg received (a microphone's; the WhatsApp user's)."""
        self._conference.accept(self, pcm)

    def take(self, now: float) -> Pcm | None:
        """The frame the leg sends for the tick at ``now``, ``None`` for none (silence)."""
        return self._conference.take(self, now)

    def detach(self) -> None:
        """The leg's sender is gone: drop what waits for it."""
        if self.sink is not None:
            self.sink.detach()

    def ended(self, why: str) -> None:
        """The leg failed or closed by itself; ``why`` for the log (to whoever joined it)."""
        if self._ended is not None:
            self._ended(why)

    def leave(self) -> None:
        """Out of the call (idempotent; a port already replaced changes nothing)."""
        self._conference.leave(self.id, self)


class MixHost(Protocol):
    """What the conference needs of the call's bus (``bus.CallBus``), which owns it: the
    dependency runs one way, bus → conference, with no import back."""

    call_id: str
    muted: bool
    stats: BusStats
    drops: Drops

    @property
    def closed(self) -> bool: ...

    @property
    def has_downlink_sources(self) -> bool: ...

    def push_uplink(self, pcm: Pcm, t: float | None = None) -> None: ...

    def emit_mixed_uplink(self, acc: npt.NDArray[np.int32], t: float) -> Pcm | None: ...

    def push_downlink(self, pcm: Pcm, t: float | None = None) -> None:
        """The WhatsApp user's frame: the bus's taps, then :meth:`Conference.from_whatsapp`."""

    def take_uplink(self) -> BusFrame | None:
        """This tick's frame for WhatsApp (raises ``ConnectionError``, ``BusClosed``, once
        closed; the first frame taken is the newest waiting)."""


class Conference:
    """The call's one router: the legs' doors (:class:`CallPort`), who hears whom, and the
    mixing clock when it is needed."""

    def __init__(self, bus: MixHost) -> None:
        self.bus = bus
        self.participants: dict[str, CallPort] = {}
        self.whatsapp: CallPort | None = None
        """The WhatsApp side's door, while an in-worker leg carries it."""
        self.held = False
        self._from_whatsapp = WhatsAppInput(bus.stats, bus.drops)
        """What the WhatsApp side says, waiting for the mixer's tick."""
        self._clock: Callable[[], None] | None = None
        self._mix_failures = 0
        """Mixing ticks that raised (:meth:`_tick_failed`)."""
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.clocked = False
        """What the WhatsApp side says comes on the worker clock (a clocked leg, the sim):
        the participants' sinks play it in the tick it came (``DownlinkSink.set_clocked``)."""

    def set_clocked(self, clocked: bool) -> None:
        """See :attr:`clocked`: every participant's sink follows, and each joining one."""
        self.clocked = clocked
        self._from_whatsapp.set_clocked(clocked)
        self._clock_sinks()

    def _clock_sinks(self) -> None:
        """Each participant's sink is fed on the worker clock while the WhatsApp side is
        clocked or the call mixes (the mix of a tick is pushed in it): it plays the frame in
        the tick it came, with no jitter buffer of its own (the mix's input had the one)."""
        clocked = self.clocked or self._clock is not None
        for p in self.participants.values():
            if p.sink is not None:
                p.sink.set_clocked(clocked)

    # -- membership
    def join(self, pid: str, role: Role, ended: Callable[[str], None] | None = None) -> CallPort:
        """Let a leg in (one that was in as ``pid`` is replaced): its door into the call.

        ``ended`` hears the leg's own end (:meth:`CallPort.ended`: the WhatsApp side's pump)."""
        if role is Role.WHATSAPP:
            port = CallPort(self, pid, role, None, ended)
            self.whatsapp = port
            return port
        if pid in self.participants:
            self.leave(pid)
        sink = DownlinkSink(self.bus.stats, pid, downlink_jitter(), self.bus.drops)
        sink.set_clocked(self.clocked or self._clock is not None)
        port = CallPort(self, pid, role, sink, ended)
        self.participants[pid] = port
        self.update()
        return port

    def leave(self, pid: str, port: CallPort | None = None) -> None:
        """Remove a participant (only if ``port`` is still its own, when given: a replaced
        session's late close must not remove its successor); the WhatsApp side by its port."""
        if port is not None and port is self.whatsapp:
            self.whatsapp = None
            return
        p = self.participants.get(pid)
        if p is None or (port is not None and p is not port):
            return
        del self.participants[pid]
        self.update()

    def set_role(self, pid: str, role: Role) -> None:
        if role is Role.WHATSAPP:
            raise ValueError("a participant cannot become the WhatsApp side")
        self.participants[pid].role = role
        self.update()

    def set_held(self, held: bool) -> None:
        self.held = held
        self.update()

    @property
    def agent(self) -> CallPort | None:
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
        if (
            self.mixed
            and self._clock is None
            and not self.bus.closed
            and self._mix_failures < TICK_FAILURES
        ):
            for p in self.participants.values():
                p.inbox.clear()
            self._from_whatsapp.clear()
            agent = self.agent
            if agent is not None and agent.sink and self._from_whatsapp.adopt(agent.sink):
                # A remote engine's frames were the agent's sink's to de-jitter: that sink (what
                # it holds, its view of the engine's clock) is the mix's input from now, and the
                # agent hears the mix through a new one: no frame lost or late at the switch.
                agent.sink = DownlinkSink(
                    self.bus.stats, agent.id, downlink_jitter(), self.bus.drops
                )
            self._clock = worker_clock().register(self._tick, failed=self._tick_failed)
            self._clock_sinks()

    def _tick_failed(self) -> None:
        """The clock dropped a mixing tick that raised (a bug, logged there): mixing goes on
        from the next tick, every participant's audio with it. A mixer that fails
        :data:`TICK_FAILURES` times in a row stops for the rest of the call, said once."""
        self._clock = None
        self._mix_failures += 1
        if self._mix_failures >= TICK_FAILURES:
            log.warning(
                "call %s: the mixer failed %d times in a row: the call's mixed audio stops",
                self.bus.call_id,
                self._mix_failures,
            )
            self._clock_sinks()  # the WhatsApp side's frames go straight to the agent again
            return
        self.update()

    async def aclose(self) -> None:
        unregister, self._clock = self._clock, None
        if unregister is not None:
            unregister()
        self.participants.clear()
        self.whatsapp = None

    # -- the routes: each port's frame in (what its leg received), its frame out (what it sends)
    def accept(self, port: CallPort, pcm: Pcm) -> None:
        """``port``'s received frame, by its role: the WhatsApp user's to the bus's downlink
        (its taps, then :meth:`from_whatsapp`), a participant's microphone to :meth:`_input`.
        A port no longer in the call (a replaced or closed leg's last frames) goes nowhere."""
        if port.role is Role.WHATSAPP:
            if port is self.whatsapp:
                self.bus.push_downlink(pcm)
        elif self.participants.get(port.id) is port:
            self._input(port, pcm)

    def take(self, port: CallPort, now: float) -> Pcm | None:
        """The frame ``port``'s leg sends for the tick at ``now``, by its role: a participant
        plays its sink's (its mix, or the WhatsApp peer as it came); the WhatsApp side sends
        this tick's uplink frame (``CallBus.take_uplink``), while it is the call's."""
        if port.role is not Role.WHATSAPP:
            assert port.sink is not None
            return port.sink.take(now)
        if port is not self.whatsapp:
            return None
        try:
            frame = self.bus.take_uplink()
        except ConnectionError:  # the bus's BusClosed: the call is over
            return None
        return None if frame is None else frame.pcm

    def _input(self, p: CallPort, pcm: Pcm) -> None:
        if self._clock is None:
            if p.role is Role.AGENT:
                self.bus.push_uplink(pcm)  # the direct path
            return
        if len(p.inbox) == p.inbox.maxlen:
            self.bus.stats.microphone_frames_dropped += 1
            self.bus.drops.dropped(MICROPHONE_OVERFLOW, p.id)
        p.inbox.append(pcm)

    def from_whatsapp(self, frame: BusFrame) -> None:
        """A frame from the WhatsApp peer, after the bus's taps: to the mixer while it mixes
        (it builds every participant's mix on its own tick), else straight to the agent (the
        direct path: it hears the peer as it comes)."""
        if self._clock is not None:
            self._from_whatsapp.push(frame)
            return
        agent = self.agent
        if agent is not None and agent.sink is not None:
            agent.sink.push(frame)

    # -- the mixing clock
    def _tick(self, now: float) -> None:
        """The worker clock's tick for this call (see :class:`WorkerClock`); one that raises
        is logged by the clock (:meth:`_tick_failed`)."""
        if not self.bus.closed:
            self.mix_once(now)
            self._mix_failures = 0  # mixed: a failure to come starts the count again

    def mix_once(self, now: float) -> None:
        """One 20 ms tick: every output from the same inputs (vectorised int32, one clip)."""

        wa = self._from_whatsapp.take(now)
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
            if p.sink is not None:
                p.sink.push(BusFrame(clip16(acc), t))
