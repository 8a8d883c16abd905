"""``CallBus``: one call's 16 kHz mono s16 audio in 20 ms frames, both directions.

Uplink is what the WhatsApp peer hears (browser microphone, later playback and sockets);
downlink is what the WhatsApp peer says, fanned out to every listener (the browser's paced
track, later recorders and sockets). Every queue is bounded with a counted drop policy and
nothing here blocks the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..audio import FRAME_SAMPLES
from ..audio.pcm import Pcm, clip16, mix_into, mix_over
from .clock import Phase, worker_clock
from .conference import Conference
from .drops import Drops
from .frames import BusFrame
from .stats import BusStats
from .uplink_queue import BusClosed, UplinkQueue

log = logging.getLogger(__name__)

UplinkTap = Callable[[BusFrame], None]
DownlinkTap = Callable[[BusFrame], None]


class UplinkSource(Protocol):
    """Audio mixed into what the WhatsApp peer hears (a file playing, a socket client)."""

    to_downlink: bool
    """Also mix it into what the browser hears (playback ``target: both``)."""

    def next_frame(self) -> Pcm | None:
        """The next 20 ms frame, an all-zero frame to wait, or ``None`` when finished."""

    def finished(self) -> None:
        """Called once after :meth:`next_frame` returned ``None`` or the source was removed."""


class CallBus:
    """The per-call PCM bus. See the module docstring."""

    def __init__(self, call_id: str, *, uplink_capacity: int = 25) -> None:
        self.call_id = call_id
        self.muted = False
        self.stats = BusStats()
        self.drops = Drops(call_id)
        """The frames dropped past a bound, each reason said once a call."""
        self._uplink = UplinkQueue(call_id, self.stats, self.drops, uplink_capacity)
        """What waits for the WhatsApp side's reader."""
        self._uplink_taps: list[UplinkTap] = []
        self._downlink_taps: list[DownlinkTap] = []
        self._sources: list[UplinkSource] = []
        self._mic_in_tick = False
        """A microphone frame went out (with the sources mixed in) since the last tick."""
        self._clock: Callable[[], None] | None = None
        """Unregisters :meth:`_tick` from the worker's media clock (while sources play)."""
        self._users: set[str] = set()
        self._closed = False
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.conference = Conference(self)
        """The call's one router: every in-worker leg's door, who hears whom (see
        :mod:`.conference`)."""

    # -- users: anything that makes the call's audio worth carrying (a browser, a socket, a
    # file playing); the call's runtime opens the engine media once there is one
    def add_user(self, name: str) -> None:
        self._users.add(name)

    def remove_user(self, name: str) -> None:
        self._users.discard(name)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    # -- uplink
    def open_uplink(self, *, clocked: bool = False) -> None:
        """Start accepting uplink frames (a leg is attached); stale frames are dropped.

        A ``clocked`` reader (a leg or a far end on the worker clock) takes each tick's frame
        in that tick (:meth:`take_uplink`, at most ``uplink_queue.TICK_UPLINK`` waiting) and the
        downlink it says plays in the tick it came (``Conference.set_clocked``); any other
        reader waits for frames in the bounded queue (:meth:`read_uplink`)."""
        self._uplink.start(clocked)
        self.conference.set_clocked(clocked)

    def close_uplink(self) -> None:
        self._uplink.open = False

    def push_uplink(self, pcm: Pcm, t: float | None = None) -> None:
        """Offer one 20 ms frame towards the WhatsApp peer (silence while muted).

        Never blocks: with no leg attached the frame is discarded; a full queue drops its
        oldest frame.
        """
        if pcm.shape != (FRAME_SAMPLES,) or pcm.dtype != np.int16:
            self.stats.bad_frames += 1
            return
        self._mic_in_tick = True
        now = time.monotonic() if t is None else t
        self._emit_uplink(self._silence if self.muted else pcm, now)

    def emit_mixed_uplink(self, acc: npt.NDArray[np.int32], t: float) -> Pcm | None:
        """The conference's tick: ``acc`` (the participants WhatsApp hears, int32) plus the
        sources goes out; returns what the sources play to the participants (``both``)."""
        return self._emit_uplink(acc, t)

    def _emit_uplink(self, pcm: Pcm | npt.NDArray[np.int32], t: float) -> Pcm | None:
        # Sources are consumed only while a leg carries the audio, so nothing a file or a
        # socket queued is lost (or reported played) before the peer can hear it.
        to_participants: Pcm | None = None
        if self._sources and self._uplink.open:
            out, to_participants = self._mix_sources(pcm)
        else:
            wide = pcm.dtype != np.int16
            out = clip16(pcm) if wide else pcm  # type: ignore[arg-type,assignment]
        frame = BusFrame(out, t)
        for tap in list(self._uplink_taps):
            self._call_tap(tap, frame, self._uplink_taps)
        if not self._uplink.open or self._closed:
            self.stats.uplink_discarded_inactive += 1
        else:
            self._uplink.put(frame)
        return to_participants

    # -- sources mixed into the uplink
    def add_source(self, source: UplinkSource) -> None:
        """Mix ``source`` into the uplink from the next frame on."""
        self._sources.append(source)
        self.add_user(f"source:{id(source)}")
        if source.to_downlink:
            self.conference.update()  # the participants hear it: mix on one clock
        if self._clock is None and not self._closed:
            self._mic_in_tick = False
            self._clock = worker_clock().register(self._tick, Phase.MIX)

    def remove_source(self, source: UplinkSource) -> None:
        if source in self._sources:
            self._sources.remove(source)
            self.remove_user(f"source:{id(source)}")
            source.finished()
            if source.to_downlink:
                self.conference.update()
            if not self._sources and self._clock is not None:
                self._clock()
                self._clock = None

    @property
    def uplink_tapped(self) -> bool:
        """Whether anything (a recorder, a fork, a model agent, a speech detector) reads the
        uplink's PCM: while nothing does and nothing mixes, it need not be decoded."""
        return bool(self._uplink_taps)

    @property
    def downlink_tapped(self) -> bool:
        """Whether anything reads the PCM the WhatsApp peer sends (as :attr:`uplink_tapped`)."""
        return bool(self._downlink_taps)

    @property
    def has_downlink_sources(self) -> bool:
        # Asked per forwarded packet (``calls/forwarding.py``): no generator while none plays.
        return bool(self._sources) and any(s.to_downlink for s in self._sources)

    def mixes(self, source: UplinkSource) -> bool:
        """Whether ``source`` is mixed into the uplink now (not yet removed)."""
        return source in self._sources

    @property
    def has_sources(self) -> bool:
        """Whether anything (a file, a socket, hold music, key tones) is mixed into what the
        WhatsApp peer hears."""
        return bool(self._sources)

    @property
    def closed(self) -> bool:
        return self._closed

    def _mix_sources(self, pcm: Pcm | npt.NDArray[np.int32]) -> tuple[Pcm, Pcm | None]:
        frames: list[Pcm] = []
        to_downlink: npt.NDArray[np.int32] | None = None
        for source in list(self._sources):
            try:
                frame = source.next_frame()
            except Exception:
                log.exception("call %s: an uplink source failed and was removed", self.call_id)
                frame = None
            if frame is not None and (frame.shape != (FRAME_SAMPLES,) or frame.dtype != np.int16):
                log.warning(
                    "call %s: an uplink source gave a frame of %s %s, not %d int16 samples; "
                    "it was removed",
                    self.call_id,
                    frame.shape,
                    frame.dtype,
                    FRAME_SAMPLES,
                    extra={"call_id": self.call_id},
                )
                frame = None
            if frame is None:
                self.remove_source(source)
                continue
            frames.append(frame)
            if source.to_downlink:
                if to_downlink is None:
                    to_downlink = frame.astype(np.int32)
                else:
                    mix_into(to_downlink, frame)
        return mix_over(pcm, frames), None if to_downlink is None else clip16(to_downlink)

    def _tick(self, now: float) -> None:
        """The worker clock's mix phase, while sources play: they are pulled once per tick —
        mixed into the microphone frame that went out in this tick's receive phase, or alone
        (over silence) when none did (the browser stopped sending, or none is attached). While
        the conference mixes, its own tick pulls them (:meth:`emit_mixed_uplink`)."""
        mic, self._mic_in_tick = self._mic_in_tick, False
        if mic or self._closed or self.conference.mixing:
            return
        try:
            self._emit_uplink(self._silence, now)
        except Exception:
            self._clock = None  # the clock unregisters a tick that raised: the next source
            raise  # registers it again (else sources would play only with a microphone)

    async def read_uplink(self) -> BusFrame:
        """Wait for the next uplink frame (raises :class:`BusClosed` once closed)."""
        if self._closed:
            raise BusClosed(self.call_id)
        return await self._uplink.read()

    def take_uplink(self) -> BusFrame | None:
        """This tick's uplink frame if one is waiting, else ``None`` (raises
        :class:`BusClosed` once closed): the worker clock's reader (a clocked leg, an
        in-process engine) never waits."""
        if self._closed:
            raise BusClosed(self.call_id)
        return self._uplink.take()

    def add_uplink_tap(self, tap: UplinkTap) -> None:
        self._uplink_taps.append(tap)

    def remove_uplink_tap(self, tap: UplinkTap) -> None:
        if tap in self._uplink_taps:
            self._uplink_taps.remove(tap)

    # -- downlink
    def push_downlink(self, pcm: Pcm, t: float | None = None) -> None:
        """Deliver one 20 ms frame from the WhatsApp peer (metered: ``whatsapp_in``) to every
        listener: the taps, then the conference (the one router to the participants' sinks). An
        in-worker leg's frame comes through its door (``Conference.accept``), a remote engine's
        from the pump's task."""
        if pcm.shape != (FRAME_SAMPLES,) or pcm.dtype != np.int16:
            self.stats.bad_frames += 1
            return
        frame = BusFrame(pcm, time.monotonic() if t is None else t)
        self.stats.downlink_frames += 1
        self.stats.whatsapp_in.add_energy(frame.energy, pcm.size)
        for tap in list(self._downlink_taps):
            self._call_tap(tap, frame, self._downlink_taps)
        self.conference.from_whatsapp(frame)

    def _call_tap(self, tap: UplinkTap, frame: BusFrame, taps: list[UplinkTap]) -> None:
        """A failing tap (a full disk under a recorder, ...) is logged and removed; the call's
        audio goes on."""
        try:
            tap(frame)
        except Exception:
            log.exception("call %s: a bus tap failed and was removed", self.call_id)
            if tap in taps:
                taps.remove(tap)

    def add_downlink_tap(self, tap: DownlinkTap) -> None:
        """See every frame from the WhatsApp peer, before anything is mixed in."""
        self._downlink_taps.append(tap)

    def remove_downlink_tap(self, tap: DownlinkTap) -> None:
        if tap in self._downlink_taps:
            self._downlink_taps.remove(tap)

    async def aclose(self) -> None:
        """:meth:`close`, and the conference leaves the media clock (the bus owns no task:
        its work runs on the worker's clock)."""
        self.close()
        await self.conference.aclose()

    def close(self) -> None:
        """Stop the bus; a waiting uplink reader gets :class:`BusClosed`."""
        if self._closed:
            return
        self._closed = True
        self._uplink.open = False
        self._uplink_taps.clear()
        self._downlink_taps.clear()
        for source in list(self._sources):
            self.remove_source(source)
        if self._clock is not None:  # (the last removed source unregistered it already)
            self._clock()
            self._clock = None
        self._uplink.close()
