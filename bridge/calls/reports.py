"""Call reports: each live call's timeline sampled once a second from counters the media path
keeps (the legs' receiver statistics, octets sent, the level meters: ``samples.py``), the media
watchdog that raises ``call.media_warning`` when a side has nothing to hear
(``media_watch.py``), and the call record written at the end beside the recordings (same data
directory, same retention) for ``GET /call/{callID}/report``, compared with the calls beside it.

It attaches from outside the call runtime: it observes the call events (``CallEvents``) and
reads the live calls through the manager once a second; on the 20 ms path there is only the
level meters' sum of squares a frame (``media.LevelMeter``)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..config import Settings
from ..errors import NotFound
from ..rtc.leg import PeerLeg
from ..tasks import TaskSet
from .events import CallEvent, CallEvents
from .media_watch import MediaWatch
from .model import Call, CallState
from .runtime import CallRuntime
from .samples import LegCounters, LegSources
from .timeline import Timeline

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0
SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
NEIGHBOURS_KEPT = 1000
"""Ended calls remembered to compare a call with the others of its time on this worker."""
GONE_AFTER = 5
"""Passes (seconds) a followed call may go without a runtime here before it is let go."""


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
            "a call's set-up: each leg's offer (or the answer, if later) to its first audio "
            "both ways, the slowest leg",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60),
            registry=r,
        )
        self.first_audio = Histogram(
            "bridge_call_first_audio_seconds",
            "a leg's offer (or the call's answer, if later) to its first audio received",
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
        self._legs: dict[tuple[str, str], LegCounters] = {}
        self.watch = MediaWatch(warn_after, self.metrics.warnings)
        self._ended: deque[tuple[float, float | None, float | None]] = deque(maxlen=NEIGHBOURS_KEPT)
        """When this worker's latest calls ended, their MOS average and loss."""
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
        self.watch.forget(call.id)
        record = timeline.report(call.snapshot(), self.neighbours(timeline))
        summary = record["summary"]
        mos, loss = timeline.quality()
        self._ended.append((time.monotonic(), mos, loss))
        if summary["mosAverage"] is not None:
            self.metrics.mos.observe(summary["mosAverage"])
        if summary["setupS"] is not None:
            self.metrics.setup.observe(summary["setupS"])
        for leg, setup in summary["setup"].items():
            if setup["receivedS"] is not None:
                self.metrics.first_audio.labels(leg.split(":")[0]).observe(setup["receivedS"])
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

    def neighbours(self, timeline: Timeline) -> dict[str, Any] | None:
        """How the calls this worker carried beside this one did: those live now and those
        that ended after it began (medians of their MOS averages and losses), so one bad call
        can be told from a bad worker or a bad hour."""
        live = [t.quality() for t in self.timelines.values() if t is not timeline]
        ended = [(mos, loss) for end, mos, loss in self._ended if end >= timeline.started]
        # Only calls that carried audio: a call that rang unanswered has no loss to count (as
        # 0 it would pull the median down on a worker with many of them).
        others = [(mos, loss) for mos, loss in live + ended if loss is not None]
        if not others:
            return None
        moses = [m for m, _ in others if m is not None]
        return {
            "calls": len(others),
            "mosMedian": round(statistics.median(moses), 2) if moses else None,
            "lossFractionMedian": round(statistics.median(loss for _, loss in others), 4),
        }

    # -- reading
    async def get(self, call_id: str) -> dict[str, Any]:
        """A live call's report so far, else the stored record of an ended call (written by
        this worker or another sharing ``BRIDGE_DATA_DIR``)."""
        timeline = self.timelines.get(call_id)
        call = self._calls.get(call_id)
        if timeline is not None and call is not None:
            return timeline.report(call.snapshot(), self.neighbours(timeline))
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
            self._sample_leg(runtime, timeline, now, "whatsapp", whatsapp)
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
                self._sample_leg(runtime, timeline, now, name, browser)

    def _sample_leg(
        self, runtime: CallRuntime, timeline: Timeline, now: float, name: str, src: LegSources
    ) -> None:
        counters = self._legs.setdefault((runtime.call.id, name), LegCounters())
        values, received, level = counters.row(src, SAMPLE_INTERVAL)
        started = name in timeline.first_audio
        timeline.sample(now, name, values)
        self.watch.second(runtime, name, SAMPLE_INTERVAL, received, level, started)

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
