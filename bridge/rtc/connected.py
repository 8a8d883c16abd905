"""``ConnectedLeg``: an agent's always-connected media leg, set up once when the agent connects
and lent to each call the agent takes (issue 49's "persistent connection").

Between calls it is parked: its sender off the worker's media clock, its receiver held, its
sockets read in batches (``rtc/udp_poll.py``). A parked track sends one packet of silence a
second, as an Opus sender in DTX sends its updates (RFC 7587 §3.1.4), from one
:class:`KeepalivePulse` the worker shares among all parked legs, so a browser's jitter buffer
stays in step with the stream and the first call starts sooner (measured in
docs/agents-routing.md). Its RTCP reports fall on the same whole seconds (``RtcpSchedule.pace``):
a worker's parked legs cost it one wake-up a second together, none per leg.

On a call it is a browser's session like any other (:class:`~.session.WebRTCSession`), the
call's agent participant; when the call lets it go it parks again. Closing it for good is
:meth:`ConnectedLeg.shutdown`, or the call's close once the owner has given it up
(:meth:`orphan`).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration

from ..audio.pcm import Pcm
from ..config import IceSettings, MediaSettings
from ..errors import CallStateError
from ..media import CallBus, Role
from ..media.clock import WorkerClock, worker_clock
from .rtcp_schedule import AVP_MIN_INTERVAL, AVPF_MIN_INTERVAL
from .rtpsend import OPUS_FRAME_TICKS, LeanSender
from .session import DtmfCallback, StateCallback, WebRTCSession
from .tracks import EncodedPacket, OpusBusTrack

PRIME = 10
"""Frames of silence (200 ms) a connected leg sends once it is up, before it parks."""

KEEPALIVE_FRAMES = 50
"""Ticks (1 s) between a parked track's packets (see the module docstring for the choice)."""
PULSE = KEEPALIVE_FRAMES * 0.02
"""Seconds between the keepalive pulses: they fall on its whole multiples of
``time.monotonic()``, and so do the parked legs' RTCP reports (their grid)."""


class KeepalivePulse:
    """One pulse per worker clock that wakes every parked track every :data:`PULSE` seconds
    to send its packet of silence: a one-shot callback on the clock (module docstring), only
    while some track is parked."""

    def __init__(self, clock: WorkerClock) -> None:
        self.clock = clock
        self._parked: set[ParkedTrack] = set()
        self._cancel: Callable[[], None] | None = None
        self._at = 0.0

    def add(self, track: ParkedTrack) -> None:
        self._parked.add(track)
        if self._cancel is None:
            self._schedule((math.floor(time.monotonic() / PULSE) + 1) * PULSE)

    def discard(self, track: ParkedTrack) -> None:
        self._parked.discard(track)

    def _schedule(self, at: float) -> None:
        self._at = at
        self._cancel = self.clock.call_at(at, self._pulse)

    def _pulse(self, now: float) -> None:
        self._cancel = None
        for track in list(self._parked):
            track.wake()
        if self._parked:
            at = self._at + PULSE
            if at <= now:  # the worker stalled past a pulse: the next whole one
                at = (math.floor(now / PULSE) + 1) * PULSE
            self._schedule(at)


_pulses: weakref.WeakKeyDictionary[WorkerClock, KeepalivePulse] = weakref.WeakKeyDictionary()


def keepalive_pulse() -> KeepalivePulse:
    """This worker clock's :class:`KeepalivePulse` (one a clock, as ``rtc/rests.py``'s resting
    senders: a new event loop's, a test's, holds nothing of the old one's)."""
    clock = worker_clock()
    pulse = _pulses.get(clock)
    if pulse is None:
        pulse = _pulses[clock] = KeepalivePulse(clock)
    return pulse


class _Nothing:
    """The parked track's source: never a frame."""

    def take(self, now: float) -> Pcm | None:
        return None

    def detach(self) -> None:
        pass


class ParkedTrack(OpusBusTrack):
    """An :class:`OpusBusTrack` that sends only its keepalive while parked (its sender off the
    clock; :meth:`wake`) and resumes on a call's sink with its sender back on the clock: the
    first frame at once, then every tick.

    Its RTP time moves on by the time it was parked and the first packet after carries the
    marker bit (RFC 3551 §4.1: the start of a talkspurt), so the far end's jitter buffer takes
    the pause as a silence, not as late packets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parked = False
        self._parked_at = time.monotonic()
        self._mark = False
        self._priming = 0
        self._keepalive_payload: bytes | None = None
        self.keepalives = 0
        """Packets of silence sent while parked."""
        self.park()

    def park(self) -> None:
        if self.parked:
            return
        self.parked = True
        if self.player is not None:
            self.player.off_clock()
            if self.readyState == "live":  # an ended track's keepalives would go nowhere
                keepalive_pulse().add(self)
        self._parked_at = time.monotonic()
        old, self.sink = self.sink, _Nothing()
        old.detach()
        self.pass_through = None

    def resume(self, sink: Any, priming: int = 0) -> None:
        """On ``sink``, back on the clock (its first frame at once); ``priming``: that many
        ticks, then parked again (:meth:`prime`)."""
        self._priming = priming
        self.sink = sink  # not parked: a call's sink after priming
        if not self.parked:
            return
        gap = int((time.monotonic() - self._parked_at) * 50)
        self._pts = (self._pts + gap * OPUS_FRAME_TICKS) & 0xFFFFFFFF
        self._mark = True
        self._encoder.reset()
        self.parked = False
        keepalive_pulse().discard(self)
        if self.player is not None:
            self.player.on_clock()

    def prime(self, frames: int) -> None:
        """Send ``frames`` of silence, then park: the far end's receive pipeline (its jitter
        buffer, its decoder) is running before the first call, as it is after one."""
        if self.parked:
            self.resume(_Nothing(), priming=frames)  # counted from its first frame, sent at once

    def played_by(self, player: LeanSender) -> None:
        if not self.parked:
            super().played_by(player)
            return
        self.player = player  # off the clock: the keepalive pulse wakes it
        keepalive_pulse().add(self)

    def packets(self, now: float) -> list[EncodedPacket]:
        if self._priming:
            self._priming -= 1
            if not self._priming:
                self.park()
        if self.parked:
            return []
        packets = super().packets(now)
        if packets and self._mark:
            packets[0].marker = True
            self._mark = False
        return packets

    def wake(self) -> None:
        """The keepalive pulse: send a packet of silence now, straight through the track's
        player, the leg's RTP sender (which stays off the clock)."""
        player = self.player
        if not self.parked or player is None:
            return
        packet = self._keepalive()
        try:
            player.send_now(packet.data, packet.pts, marker=False, audio_type=packet.payload_type)
        except ConnectionError:
            pass  # not connected (yet, or any more): the next pulse tries again

    def _keepalive(self) -> EncodedPacket:
        """One packet of silence while parked, its RTP time moved on by the time since the
        last one (a DTX update, RFC 7587 §3.1.4)."""
        now = time.monotonic()
        gap = max(1, round((now - self._parked_at) * 50))
        self._parked_at = now
        self._pts = (self._pts + (gap - 1) * OPUS_FRAME_TICKS) & 0xFFFFFFFF
        if self._keepalive_payload is None:  # encoded once: every keepalive is the same
            # From a fresh state: encoded after a call, silence still carries its last audio.
            self._encoder.reset()
            self._keepalive_payload = self._encoder.encode(self._silence)
        payload = self._keepalive_payload
        pts = self._pts
        self._pts = (self._pts + OPUS_FRAME_TICKS) & 0xFFFFFFFF
        self.keepalives += 1
        return self._packet(payload, pts, marker=False)

    def stop(self) -> None:
        super().stop()
        keepalive_pulse().discard(self)


class ConnectedLeg(WebRTCSession):
    """See the module docstring. Negotiated on a bus of its own that nothing feeds (its
    parking place); :meth:`attach` lends it to a call, :meth:`close` (the call's) gives it
    back."""

    what = "connected leg"
    track_class = ParkedTrack

    def __init__(
        self,
        name: str,
        media: MediaSettings,
        ice: IceSettings,
        configuration: RTCConfiguration | None = None,
    ) -> None:
        self._parking = CallBus(name)
        super().__init__(name, self._parking, media, ice, None, configuration)
        self.name = f"agent {name}"
        self.attached_to: str | None = None
        """The call the leg is on, else ``None`` (idle)."""
        self.lent_at: float | None = None
        """When it was lent to its call (monotonic)."""
        self.owned_by_call = False
        """The agent's socket went while on a call: that call's close ends the leg."""
        self.calls = 0
        self.up = asyncio.Event()
        """Set once ICE and DTLS are up."""

    @property
    def media_since(self) -> float | None:
        """Since it was lent to its call: idle, the app sends nothing (its microphone goes
        out on a call only), so its latest packet before may be any time ago."""
        return self.lent_at

    @property
    def usable(self) -> bool:
        """Up and not lent out: a call can take it."""
        return not self.closed and self.state == "connected" and self.attached_to is None

    async def accept_offer(self, sdp: str) -> str:
        answer = await super().accept_offer(sdp)
        self._idle()
        return answer

    def _idle(self) -> None:
        if isinstance(self._track, ParkedTrack):
            self._track.park()
        if self.leg is not None:  # RFC 3550's pace, on the pulse's seconds (module docstring)
            self.leg.playout.hold()
            self.leg.rtcp_schedule.pace(AVP_MIN_INTERVAL, PULSE)
        if self._wire is not None:
            self._wire.batch_reads(True)

    def attach(
        self,
        call_id: str,
        bus: CallBus,
        on_state: StateCallback,
        on_dtmf: DtmfCallback,
        participant_id: str = "agent",
        role: Role = Role.AGENT,
    ) -> None:
        """Lend the leg to a call as its participant ``participant_id``."""
        if not self.usable:
            raise CallStateError(f"{self.name}: the connected leg is {self.state}, not idle")
        self._detach()  # off the parking bus
        self.call_id, self.bus, self.participant_id, self.role = call_id, bus, participant_id, role
        self._on_state, self._on_dtmf = on_state, on_dtmf
        self._log_extra = {"call_id": call_id}
        bus.add_user(self.id)
        port = self._port = bus.conference.join(participant_id, role)
        assert isinstance(self._track, ParkedTrack) and self.leg is not None
        self.leg.playout.resume(self._uplink_frame, bus.stats)
        self._track.resume(port)
        if self._wire is not None:
            self._wire.batch_reads(False)
        self.leg.rtcp_schedule.pace(AVPF_MIN_INTERVAL)  # the far end's encoder listens
        self.attached_to, self.lent_at = call_id, time.monotonic()

    def release(self) -> None:
        """Leave the call and park again (idempotent)."""
        if self.attached_to is None:
            return
        self._detach()
        self._idle()
        self.bus, self._port = self._parking, None
        self._on_state = self._on_dtmf = None
        self.attached_to = None
        self.calls += 1

    def orphan(self) -> None:
        """The agent's session let go while the leg is on a call: the call ends it."""
        self.owned_by_call = True

    async def close(self) -> None:
        """The call's close of its participant: give the leg back (it parks); for good once
        the agent's session has let go of it, or when it was never lent."""
        if self.attached_to is not None and not self.owned_by_call and not self.closed:
            self.release()
            return
        await self.shutdown()

    async def shutdown(self) -> None:
        """Close the peer connection for good (idempotent)."""
        await WebRTCSession.close(self)

    def _state_changed(self, state: str) -> None:
        if state == "connected":
            self.up.set()
            if isinstance(self._track, ParkedTrack) and self.attached_to is None:
                self._track.prime(PRIME)
        super()._state_changed(state)
