"""Call reports: the records of ended calls, written beside the recordings (same data
directory, same retention) for ``GET /call/{callID}/report`` and compared with the calls beside
them, and the live calls' reports as far as they go.

A live call's report is its runtime's own child (``live_report.py``'s :class:`LiveReport`: its
timeline, sampled once a second from counters the media path keeps, and its media watchdog that
raises ``call.media_warning``). :class:`CallReports` opens it for each new runtime, puts the
call's events on it, has every live runtime sample its own once a second, and takes it back when
the runtime closes — the call ended here, or moved to another worker — to store its record. It
keeps nothing per call: the live calls are the manager's runtimes (:class:`LiveCalls`). On the
20 ms path there is only the level meters' sum of squares a frame (``media.LevelMeter``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..attachments.files import ExpiredFiles
from ..config import Settings
from ..disk import on_disk
from ..errors import NotFound, StorageFailed
from ..logs import FailureKinds
from ..media.clock import clock_sleep
from ..tasks import TaskSet
from .events import CallEvent, CallEvents
from .live_report import SAMPLE_INTERVAL, LiveReport
from .media_watch import MediaWatch
from .model import Call
from .runtime import CallRuntime, runtime_of
from .timeline import Timeline

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
NEIGHBOURS_KEPT = 1000
"""Ended calls remembered to compare a call with the others of its time on this worker."""


class LiveCalls(Protocol):
    """The live calls' runtimes, each holding its report (the manager)."""

    def live_runtimes(self) -> list[CallRuntime]: ...
    def find_runtime(self, call_id: str) -> CallRuntime | None: ...


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
    """Opens each live call's report, stores the record when it closes, serves them."""

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
        self.calls: LiveCalls | None = None
        """Where the live calls' reports are (``None``: no live calls, only stored records)."""
        self._ended: deque[tuple[float, float | None, float | None]] = deque(maxlen=NEIGHBOURS_KEPT)
        """When this worker's latest calls ended, their MOS average and loss."""
        self._writes = TaskSet("call-reports")
        self._expired = ExpiredFiles(log)
        """The retention sweep's deletions: a record it cannot delete said once."""
        self.publish: Callable[[str, Call, dict[str, Any]], None] | None = None

    def open(self, call: Call) -> LiveReport:
        """A new runtime's report, its child until it closes and hands it back here."""
        return LiveReport(call, MediaWatch(self.warn_after, self.metrics.warnings), self._closed)

    # -- events
    def observe(self, event: CallEvent, call: Call | None) -> None:
        """An event about a call goes on its runtime's report, while the runtime lives (its
        close included: the attachments' and sessions' last events are in the record)."""
        runtime = runtime_of(call) if call is not None else None
        if runtime is not None and runtime.report is not None:
            runtime.report.event(event.type, event.data)

    def _closed(self, report: LiveReport) -> None:
        """A runtime closed: its report becomes the call's record (stored, then told)."""
        call, timeline = report.call, report.timeline
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
        self._writes.spawn(self._store(call, record, summary), f"report-write:{call.id[:32]}")

    async def _store(self, call: Call, record: dict[str, Any], summary: dict[str, Any]) -> None:
        """Write the record off the loop, then tell ``call.report`` (after ``call.ended``,
        which the manager publishes as soon as the runtime closed; readable now)."""
        try:
            await on_disk(self._write, call.id, record)
        except Exception as exc:
            log.warning("could not store the record of call %s: %s", call.id, exc)
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
        await self._writes.join()

    def _live_reports(self) -> list[LiveReport]:
        runtimes = self.calls.live_runtimes() if self.calls is not None else []
        return [r.report for r in runtimes if r.report is not None and not r.report.closed]

    def neighbours(self, timeline: Timeline) -> dict[str, Any] | None:
        """How the calls this worker carried beside this one did: those live now and those
        that ended after it began (medians of their MOS averages and losses), so one bad call
        can be told from a bad worker or a bad hour."""
        live = [r.timeline.quality() for r in self._live_reports() if r.timeline is not timeline]
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
        runtime = self.calls.find_runtime(call_id) if self.calls is not None else None
        report = runtime.report if runtime is not None else None
        if report is not None and not report.closed:
            return report.timeline.report(report.call.snapshot(), self.neighbours(report.timeline))
        if not SAFE_ID.match(call_id):
            raise NotFound(f"no report of call {call_id[:64]!r}")
        try:
            text = await on_disk(self._path(call_id).read_text)
            record = json.loads(text)
        except FileNotFoundError:
            raise NotFound(f"no report of call {call_id[:64]!r}") from None
        except OSError as exc:  # the disk failed it: as a recording or an asset
            raise StorageFailed(
                f"the record of call {call_id[:64]!r} cannot be read: {exc.strerror or exc}"
            ) from None
        except ValueError:  # broken on the disk (not what a write here leaves)
            raise StorageFailed(
                f"the record of call {call_id[:64]!r} is not readable JSON"
            ) from None
        if not isinstance(record, dict):
            raise StorageFailed(f"the record of call {call_id[:64]!r} is not readable JSON")
        return record

    def stored(self, limit: int | None = 50) -> list[str]:
        """The ids of the newest stored records, newest first, every one when ``limit`` is
        ``None`` (one swept meanwhile, by this worker or another sharing the data directory, is
        left out). A directory the disk fails to list raises :class:`StorageFailed`."""
        dated = sorted(self._dated())
        return [name for _, name in (dated if limit is None else dated[-limit:])][::-1]

    def _dated(self) -> list[tuple[float, str]]:
        """Every stored record's (modification time, call id): none without a directory yet,
        :class:`StorageFailed` when the disk fails to list it (``glob`` took a permission error
        for an empty directory, and let an I/O error through)."""
        dated: list[tuple[float, str]] = []
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if not entry.name.endswith(".report.json"):
                        continue
                    try:
                        mtime = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    dated.append((mtime, entry.name.removesuffix(".report.json")))
        except (FileNotFoundError, NotADirectoryError):
            return []  # no call has ended with a record here yet
        except OSError as exc:
            raise StorageFailed(
                f"the call records cannot be listed: {exc.strerror or exc}"
            ) from None
        return dated

    def sweep(self, now: float | None = None) -> int:
        """Delete records older than the recordings' retention. One that cannot be deleted is
        passed over (tried again next time, said once while it lasts: :class:`ExpiredFiles`),
        never the end of the sweep; a directory the disk
        fails to list raises :class:`StorageFailed` (:func:`sweep_forever` says it)."""
        now = time.time() if now is None else now
        removed = 0
        for mtime, name in self._dated():
            if mtime + self.retention_s > now:
                continue
            path = self.root / f"{name}.report.json"
            removed += self._expired.delete(name, f"call report {path.name}", path)
        return removed


async def sample_forever(
    runtimes: Callable[[], Iterable[CallRuntime]], until_calls: Callable[[], Awaitable[object]]
) -> None:
    """Once a second (on the media clock: no wake-up of its own during calls) every live
    runtime samples its own report; parked while the worker has no call (``until_calls``)."""
    bugs = FailureKinds(log)  # a failure that recurs every second: said once
    while True:
        await until_calls()
        await clock_sleep(SAMPLE_INTERVAL)
        sample_once(runtimes, time.monotonic(), bugs)


def sample_once(
    runtimes: Callable[[], Iterable[CallRuntime]], now: float, bugs: FailureKinds
) -> None:
    """A second of every live call's timeline. One call's failure costs its own row only:
    it once ended the pass, the calls after it sampled by no one for as long as it lasted."""
    for runtime in list(runtimes()):
        try:
            runtime.sample_report(now)
        except Exception as exc:
            bugs.failed(exc, "call %s: sampling its timeline", runtime.call_id)


def start_reports(
    settings: Settings,
    registry: CollectorRegistry,
    events: CallEvents,
    manager: CallManager,
    tasks: TaskSet,
) -> CallReports:
    """Give every runtime of ``manager`` its report: the call's events, a sample a second, its
    record when the runtime closes (``{BRIDGE_DATA_DIR}/reports``, kept
    ``BRIDGE_RECORDING_RETENTION_DAYS`` like recordings)."""
    storage = settings.storage
    reports = CallReports(
        Path(storage.data_dir) / "reports",
        storage.recording_retention_days * 86400,
        registry,
        settings.calls.media_warning_after,
    )
    if not settings.calls.call_reports:
        return reports  # stored records stay readable
    reports.calls = manager
    manager.open_report = reports.open  # each runtime the manager creates opens its report
    events.observe(reports.observe)
    reports.publish = lambda type_, call, data: events.publish(type_, call, **data)
    tasks.spawn(sample_forever(manager.live_runtimes, manager.until_calls), "call-timelines")
    tasks.spawn(sweep_forever(reports, storage.retention_sweep_interval), "report-retention")
    return reports


async def sweep_forever(reports: CallReports, interval: float) -> None:
    """:meth:`CallReports.sweep` every ``interval`` s. A directory the disk fails to list is
    said once at WARNING while it lasts (and when it is listed again): it ended the task, and
    no record was swept again until a restart."""
    failing = False
    while True:
        try:
            removed = await on_disk(reports.sweep)
        except StorageFailed as exc:
            if not failing:
                log.warning("retention: %s; tried again every %g s", exc.message, interval)
            failing = True
        else:
            if failing:
                log.warning("retention: the call records can be listed again")
            failing = False
            if removed:
                log.info("retention: deleted %d expired call reports", removed)
        await asyncio.sleep(interval)
