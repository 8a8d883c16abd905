"""Call reports: each live call's timeline sampled once a second from counters that already
exist (the legs' receiver statistics, the bus), the media watchdog that raises
``call.media_warning`` when a side stops sending, and the call record written at the end
beside the recordings (same data directory, same retention) for ``GET /call/{callID}/report``.

It attaches from outside the call runtime: it observes the call events (``CallEvents``) and
reads the live calls through the manager once a second; nothing runs on the 20 ms path."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..audio.receiver import ReceiverStats
from ..config import Settings
from ..errors import NotFound
from ..metrics import estimate_mos
from ..tasks import TaskSet
from .events import CallEvent, CallEvents
from .model import Call, CallState
from .runtime import CallRuntime
from .timeline import MISSING, Timeline

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0
SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
GONE_AFTER = 5
"""Passes (seconds) a followed call may go without a runtime here before it is let go."""
SAMPLES_PER_SECOND = 50
"""Opus frames (20 ms) a second: a side sending fewer than a tenth of them is stalled."""


@dataclass
class _LegState:
    """The previous sample of one leg (to turn cumulative counters into a second's worth)."""

    received: int = 0
    lost: int = 0
    recovered: int = 0
    concealed: int = 0
    stretched: int = 0
    delay: float = 0.0
    emitted: int = 0
    quiet_s: float = 0.0
    warned: bool = False


class ReportMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.mos = Histogram(
            "bridge_call_report_mos",
            "average MOS estimate of each ended call",
            buckets=(1.5, 2.0, 2.5, 3.0, 3.1, 3.6, 4.0, 4.2, 4.4, 5.0),
            registry=r,
        )
        self.setup = Histogram(
            "bridge_call_setup_seconds",
            "call created to the first audio of either side",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60),
            registry=r,
        )
        self.first_audio = Histogram(
            "bridge_call_first_audio_seconds",
            "call created to the first audio received from a side",
            ["side"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60),
            registry=r,
        )
        self.warnings = Counter(
            "bridge_media_warnings", "call.media_warning raised, by side", ["side"], registry=r
        )


class CallReports:
    """The timelines of live calls and the records of ended ones."""

    def __init__(
        self,
        root: Path,
        retention_s: float,
        registry: CollectorRegistry,
        warn_after: float,
    ) -> None:
        self.root = root
        self.retention_s = retention_s
        self.warn_after = warn_after
        self.metrics = ReportMetrics(registry)
        self.timelines: dict[str, Timeline] = {}
        self._calls: dict[str, Call] = {}
        self._unseen: dict[str, int] = {}
        """Passes a followed call has had no runtime here (moved away, or ended unannounced)."""
        self._legs: dict[tuple[str, str], _LegState] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self.publish: Callable[[str, Call, dict[str, Any]], None] | None = None

    # -- events
    def observe(self, event: CallEvent, call: Call | None) -> None:
        if call is None or event.type == "call.report":
            return
        timeline = self.timelines.get(call.id)
        if timeline is None:
            if not call.live:
                return
            timeline = self.timelines[call.id] = Timeline(call.mono_created)
            self._calls[call.id] = call
        timeline.event(time.monotonic(), event.type, event.data)
        if event.type == "call.ended":
            self._finish(call)

    def _finish(self, call: Call) -> None:
        timeline = self.timelines.pop(call.id)
        self._calls.pop(call.id, None)
        self._unseen.pop(call.id, None)
        for key in [k for k in self._legs if k[0] == call.id]:
            del self._legs[key]
        record = timeline.report(call.snapshot())
        summary = record["summary"]
        if summary["mosAverage"] is not None:
            self.metrics.mos.observe(summary["mosAverage"])
        if summary["setupS"] is not None:
            self.metrics.setup.observe(summary["setupS"])
        for leg, t in summary["firstAudioS"].items():
            self.metrics.first_audio.labels(leg.split(":")[0]).observe(t)
        task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self._write, call.id, record), name=f"report-write:{call.id[:32]}"
        )
        self._writes.add(task)
        task.add_done_callback(lambda done: self._written(done, call, summary))

    def _written(self, task: asyncio.Task[None], call: Call, summary: dict[str, Any]) -> None:
        """The record is on disk: tell ``call.report`` (after ``call.ended``, readable now)."""
        self._writes.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.warning("could not store the record of call %s: %s", call.id, task.exception())
        if self.publish is not None:
            self.publish("call.report", call, summary)

    def _path(self, call_id: str) -> Path:
        return self.root / f"{call_id}.report.json"

    def _write(self, call_id: str, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._path(call_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, separators=(",", ":")))
        tmp.replace(self._path(call_id))

    async def flush(self) -> None:
        """Wait for the records being written (at shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    # -- reading
    async def get(self, call_id: str) -> dict[str, Any]:
        """A live call's report so far, else the stored record of an ended call (written by
        this worker or another sharing ``BRIDGE_DATA_DIR``)."""
        timeline = self.timelines.get(call_id)
        call = self._calls.get(call_id)
        if timeline is not None and call is not None:
            return timeline.report(call.snapshot())
        if not SAFE_ID.match(call_id):
            raise NotFound(f"no report of call {call_id[:64]!r}")
        try:
            text = await asyncio.to_thread(self._path(call_id).read_text)
        except FileNotFoundError:
            raise NotFound(f"no report of call {call_id[:64]!r}") from None
        record: dict[str, Any] = json.loads(text)
        return record

    def stored(self, limit: int = 50) -> list[str]:
        """The ids of the newest stored records."""
        if not self.root.is_dir():
            return []
        files = sorted(self.root.glob("*.report.json"), key=lambda p: p.stat().st_mtime)
        return [p.name.removesuffix(".report.json") for p in files[-limit:]][::-1]

    def sweep(self, now: float | None = None) -> int:
        """Delete records older than the recordings' retention."""
        now = time.time() if now is None else now
        removed = 0
        if self.root.is_dir():
            for path in self.root.glob("*.report.json"):
                if path.stat().st_mtime + self.retention_s <= now:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # -- sampling
    def sample(self, runtimes: list[CallRuntime], now: float | None = None) -> None:
        """One pass over the live calls: a row per leg, and the watchdog."""
        now = time.monotonic() if now is None else now
        self._forget_gone({r.call.id for r in runtimes})
        for runtime in runtimes:
            timeline = self.timelines.get(runtime.call.id)
            if timeline is None:
                continue
            leg = runtime.media.webrtc_leg
            wa, rtt = leg.timeline_stats if leg is not None else (None, None)
            if wa is not None:
                self._sample_receiver(runtime, timeline, now, "whatsapp", wa, rtt)
            else:  # an engine that hands the bridge PCM: frames are its packets
                self._sample_frames(runtime, timeline, now, runtime.bus.stats.downlink_frames)
            for session in list(runtime.participants.sessions.values()):
                stats = session.receiver_stats
                if stats is None:
                    continue
                rtt = session.last.rtt_s if session.last is not None else None
                name = "browser:" + session.participant_id
                self._sample_receiver(runtime, timeline, now, name, stats, rtt)

    def _forget_gone(self, here: set[str]) -> None:
        """A call followed here that has had no runtime for ``GONE_AFTER`` passes (it moved
        to another worker, or ended without ``call.ended`` here) is recorded as it is and
        forgotten: nothing is kept for a call this worker no longer carries."""
        for call_id, call in list(self._calls.items()):
            if call_id in here or call.state in (CallState.CALLING, CallState.RINGING):
                self._unseen.pop(call_id, None)
                continue
            self._unseen[call_id] = self._unseen.get(call_id, 0) + 1
            if self._unseen[call_id] >= GONE_AFTER:
                self._finish(call)

    def _sample_receiver(
        self,
        runtime: CallRuntime,
        timeline: Timeline,
        now: float,
        name: str,
        s: ReceiverStats,
        rtt: float | None,
    ) -> None:
        st = self._legs.setdefault((runtime.call.id, name), _LegState())
        recovered = s.fec_packets_received + s.red_recovered_packets
        stretched = s.inserted_samples_for_deceleration + s.removed_samples_for_acceleration
        received, lost = s.packets_received - st.received, max(0, s.packets_lost - st.lost)
        concealed_ms = (s.concealed_samples - st.concealed) / 16
        emitted = s.jitter_buffer_emitted_count - st.emitted
        delay = (s.jitter_buffer_delay - st.delay) / emitted * 1000 if emitted else MISSING
        loss = max(lost / (received + lost) if received + lost else 0.0, concealed_ms / 1000)
        mos = estimate_mos(min(loss, 1.0), s.jitter, rtt) if received else MISSING
        values = [
            float(received),
            float(lost),
            float(recovered - st.recovered),
            concealed_ms,
            (stretched - st.stretched) / 16,
            s.jitter * 1000,
            delay,
            MISSING if rtt is None else rtt * 1000,
            mos,
        ]
        st.received, st.lost, st.recovered = s.packets_received, s.packets_lost, recovered
        st.concealed, st.stretched = s.concealed_samples, stretched
        st.delay, st.emitted = s.jitter_buffer_delay, s.jitter_buffer_emitted_count
        timeline.sample(now, name, values)
        self._watch(runtime, timeline, st, name, received)

    def _sample_frames(
        self, runtime: CallRuntime, timeline: Timeline, now: float, frames: int
    ) -> None:
        st = self._legs.setdefault((runtime.call.id, "whatsapp"), _LegState())
        received, st.received = frames - st.received, frames
        values = [float(received), 0.0, 0.0, 0.0, 0.0, MISSING, MISSING, MISSING, MISSING]
        timeline.sample(now, "whatsapp", values)
        self._watch(runtime, timeline, st, "whatsapp", received)

    def _watch(
        self, runtime: CallRuntime, timeline: Timeline, st: _LegState, name: str, received: int
    ) -> None:
        """Raise ``call.media_warning`` once when a side of an answered call has sent (next to)
        nothing for ``warn_after`` seconds, ``call.media_warning_cleared`` when it sends again."""
        if runtime.call.state is not CallState.ACTIVE:
            return
        if received * 10 < SAMPLES_PER_SECOND * SAMPLE_INTERVAL:
            st.quiet_s += SAMPLE_INTERVAL
            if st.quiet_s >= self.warn_after and not st.warned:
                st.warned = True
                side = name.split(":")[0]
                self.metrics.warnings.labels(side).inc()
                log.warning(
                    "call %s: %s sent no audio for %.0f s", runtime.call.id, name, st.quiet_s
                )
                runtime.emit(
                    "call.media_warning",
                    leg=name,
                    what=_what_stopped(name, name in timeline.first_audio),
                    silentS=st.quiet_s,
                )
            return
        if st.warned:
            runtime.emit("call.media_warning_cleared", leg=name, silentS=st.quiet_s)
            st.warned = False
        st.quiet_s = 0.0


def _what_stopped(name: str, started: bool) -> str:
    """``browser_audio`` (a dead or blocked microphone, or its path), ``whatsapp_audio``
    (the engine's or Meta's media stalled), ``*_never_started`` when none came at all."""
    what = "browser_audio" if name.startswith("browser") else "whatsapp_audio"
    return what if started else what + "_never_started"


async def sample_forever(reports: CallReports, runtimes: Callable[[], list[CallRuntime]]) -> None:
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL)
        try:
            reports.sample(runtimes())
        except Exception:
            log.exception("sampling call timelines")


def start_reports(
    settings: Settings,
    registry: CollectorRegistry,
    events: CallEvents,
    manager: CallManager,
    tasks: TaskSet,
) -> CallReports:
    """Follow every call of ``manager``: its events, a sample a second, its record at the end
    (``{BRIDGE_DATA_DIR}/reports``, kept ``BRIDGE_RECORDING_RETENTION_DAYS`` like recordings)."""
    storage = settings.storage
    reports = CallReports(
        Path(storage.data_dir) / "reports",
        storage.recording_retention_days * 86400,
        registry,
        settings.calls.media_warning_after,
    )
    if not settings.calls.call_reports:
        return reports  # stored records stay readable
    events.observe(reports.observe)
    reports.publish = lambda type_, call, data: events.publish(type_, call, **data)

    def runtimes() -> list[CallRuntime]:
        found = (manager.find_runtime(call.id) for call in manager.live_calls())
        return [r for r in found if r is not None]

    tasks.spawn(sample_forever(reports, runtimes), "call-timelines")
    tasks.spawn(sweep_forever(reports, storage.retention_sweep_interval), "report-retention")
    return reports


async def sweep_forever(reports: CallReports, interval: float) -> None:
    while True:
        removed = await asyncio.to_thread(reports.sweep)
        if removed:
            log.info("retention: deleted %d expired call reports", removed)
        await asyncio.sleep(interval)
