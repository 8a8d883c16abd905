"""``LiveReport``: a live call's report, a child of its :class:`~.runtime.CallRuntime`.

Opened with the runtime, it holds the call's :class:`~.timeline.Timeline` (a row a second per
leg, the call's events on the same axis), each leg's previous counters (``samples.py``) and the
call's media watchdog (``media_watch.py``). The runtime samples it once a second
(:meth:`CallRuntime.sample_report`) and hands it on when it closes: :meth:`close` gives it to
whoever opened it (``reports.py``'s :class:`~.reports.CallReports`, which writes the record and
serves it). Nothing about the call is kept anywhere else, so nothing is left to guess about a
call that moved away or ended: its runtime closed, and its report with it. It sees the runtime
as the :class:`Sampled` it declares, never as its class."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ..media import CallBus
from ..rtc.leg import PeerLeg
from .engine_media import EngineMedia
from .media_watch import MediaWatch, Watched
from .model import Call
from .participants import Participants
from .samples import LegCounters, LegSources
from .timeline import Timeline

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of a call's legs (the rows' span)."""

ReportClosed = Callable[["LiveReport"], None]
"""Told once, when the report's runtime closed (it takes the report's record from there)."""

OpenReport = Callable[[Call], "LiveReport"]
"""Opens a new runtime's report (``CallReports.open``; none while call reports are off)."""


class Sampled(Watched, Protocol):
    """What the report samples of its call's runtime: the WhatsApp side, the bus and the
    participants (and what its watch uses)."""

    @property
    def media(self) -> EngineMedia: ...
    @property
    def bus(self) -> CallBus: ...
    @property
    def participants(self) -> Participants: ...


class LiveReport:
    """One live call's timeline, its legs' counters and its media watchdog."""

    def __init__(self, call: Call, watch: MediaWatch, on_closed: ReportClosed) -> None:
        self.call = call
        self.timeline = Timeline(call.mono_created)
        self.watch = watch
        self._counters: dict[str, LegCounters] = {}
        """Each leg's counters as the previous sample read them, by leg name."""
        self._on_closed = on_closed
        self.closed = False

    def event(self, type_: str, data: dict[str, Any]) -> None:
        """An event about the call, now, on the timeline's axis."""
        if not self.closed:
            self.timeline.event(time.monotonic(), type_, data)

    def sample(self, runtime: Sampled, now: float) -> None:
        """One second of every leg of ``runtime`` (this report's): a row each, and the
        watchdog."""
        if self.closed:
            return
        timeline = self.timeline
        # The WhatsApp side: its WebRTC leg's receiver where the engine has one, else the
        # engine's PCM frames; its levels as the engine pump hands the audio on.
        leg = runtime.media.webrtc_leg
        wa, rtt = leg.timeline_stats if leg is not None else (None, None)
        bus = runtime.bus.stats
        timeline.offer(runtime.call.mono_created, "whatsapp")
        whatsapp = LegSources(
            wa,
            rtt,
            frames=bus.downlink_frames,
            heard=bus.whatsapp_in,
            sent=bus.whatsapp_out,
            octets_sent=leg.octets_sent if isinstance(leg, PeerLeg) else None,
            loss_reported=None if leg is None else leg.far_end_loss,
        )
        self._sample_leg(runtime, now, "whatsapp", whatsapp)
        for session in list(runtime.participants.sessions.values()):
            stats = session.receiver_stats
            if stats is None:
                continue
            name = "browser:" + session.participant_id
            timeline.offer(session.offered_at, name)
            browser = LegSources(
                stats,
                session.last.rtt_s if session.last is not None else None,
                heard=session.mic_level,
                sent=session.sent_level,
                octets_sent=session.octets_sent,
                loss_reported=None if session.last is None else session.far_end_loss,
            )
            # Watched only when it sends: a listen-only browser (recvonly, no microphone) is
            # to send nothing (as the RTP timeout, ``watchdog.py``, leaves it alone).
            self._sample_leg(runtime, now, name, browser, watch=session.sends_audio)
        # Phones on SIP trunks: their RTP session's counts and RTCP. Not watched: a phone on
        # hold or in comfort noise may send nothing, and that is the PBX's to judge.
        for other in list(runtime.participants.other_legs.values()):
            found = other.timeline_sources()
            if found is not None:
                name = "sip:" + other.participant_id
                timeline.offer(found[0], name)
                self._sample_leg(runtime, now, name, found[1], watch=False)

    def _sample_leg(
        self, runtime: Sampled, now: float, name: str, src: LegSources, *, watch: bool = True
    ) -> None:
        counters = self._counters.setdefault(name, LegCounters())
        seconds = counters.span(now, SAMPLE_INTERVAL)
        values, received, level = counters.row(src, seconds)
        started = name in self.timeline.first_audio
        self.timeline.sample(now, name, values)
        if watch:
            self.watch.second(runtime, name, seconds, received, level, started)

    def close(self, ended: dict[str, Any] | None = None) -> None:
        """The runtime closed (idempotent): ``ended``, the data ``call.ended`` is published
        with when the call ended here (the record's last event; ``None``: the call goes on
        elsewhere, recorded as it is), then the report is handed on."""
        if self.closed:
            return
        if ended is not None:
            self.event("call.ended", ended)
        self.closed = True
        self._on_closed(self)
