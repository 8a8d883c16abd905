"""The retention sweeps (call reports, recordings) in a directory other workers sweep too (the
workers of ``--workers`` and instances on one volume share ``BRIDGE_DATA_DIR``): a record
another worker deleted between this sweep's listing and its look at the file is passed over,
and one that cannot be deleted is logged and kept for the next sweep while the others go.
Before, either error ended the worker's sweeping for good (files kept past their retention,
the disk filling)."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from prometheus_client import CollectorRegistry

from bridge.attachments import RecordingService
from bridge.attachments.recording import Recording
from bridge.calls.reports import CallReports, sweep_forever
from bridge.resources import sweep_recordings

from ..support.waits import until

DAY = 86400.0


def _expired(reports: CallReports, name: str) -> None:
    path = reports.root / f"{name}.report.json"
    if not path.exists():
        path.write_text("{}")
    old = time.time() - 2 * DAY
    os.utime(path, (old, old))


def _gone_meanwhile(reports: CallReports) -> None:
    """A record listed, then deleted by another worker before this one looked at it: the
    listing holds its name and the look finds nothing (a link to nowhere is exactly that)."""
    (reports.root / "swept-elsewhere.report.json").symlink_to(reports.root / "nowhere")


def _undeletable(reports: CallReports) -> None:
    """An expired record that unlink refuses (a directory in its place)."""
    (reports.root / "stuck.report.json").mkdir()
    _expired(reports, "stuck")


def test_a_record_deleted_meanwhile_or_undeletable_is_passed_over(tmp_path, caplog) -> None:
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _gone_meanwhile(reports)
    _undeletable(reports)
    _expired(reports, "old")
    (tmp_path / "new.report.json").write_text("{}")
    assert reports.sweep() == 1
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "new.report.json",
        "stuck.report.json",
        "swept-elsewhere.report.json",
    ]
    assert [r.getMessage()[:41] for r in caplog.records] == [
        "retention: call report stuck.report.json "
    ]


def test_a_record_that_cannot_be_deleted_is_said_once_while_it_lasts(tmp_path, caplog) -> None:
    """A record the disk will not delete, met at every sweep: said once at WARNING, not at
    each sweep (it was, a line a sweep for as long as it lasted), and its deletion once it
    goes at INFO; a failure that comes back after that is said again."""
    caplog.set_level(logging.INFO, logger="bridge")
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _undeletable(reports)
    stuck = tmp_path / "stuck.report.json"
    assert [reports.sweep() for _ in range(5)] == [0] * 5
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert "call report stuck.report.json not deleted" in said[0][1]
    stuck.rmdir()  # the disk lets it go: an expired record in its place
    _expired(reports, "stuck")
    assert reports.sweep() == 1 and not stuck.exists()
    assert caplog.records[-1].levelno == logging.INFO
    assert "stuck.report.json deleted after 6 tries" in caplog.records[-1].getMessage()
    _undeletable(reports)  # it fails again: said again
    assert reports.sweep() == 0
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 2


async def test_the_reports_sweep_goes_on_after_a_pass_that_met_them(tmp_path) -> None:
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _gone_meanwhile(reports)
    _undeletable(reports)
    _expired(reports, "first")
    sweeping = asyncio.ensure_future(sweep_forever(reports, 0.01))
    try:
        await until(lambda: not (tmp_path / "first.report.json").exists(), what="first swept")
        _expired(reports, "later")  # expired after a pass that met the missing record
        await until(lambda: not (tmp_path / "later.report.json").exists(), what="later swept")
        assert not sweeping.done()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


def _recording(recordings: RecordingService, name: str, directory: bool = False) -> Recording:
    path = recordings.calls_dir / f"{name}.wav"
    if directory:
        path.mkdir()  # a directory in a recording's place: unlink refuses
    else:
        path.write_bytes(b"RIFF")
    rec = Recording(name, "c1", "mixed", path, f"calls/{name}.wav", 0, 4, 0.0, expires_at=1.0)
    recordings.index[name] = rec
    return rec


async def test_a_recording_that_cannot_be_deleted_holds_up_no_other(tmp_path, caplog) -> None:
    recordings = RecordingService(tmp_path, retention_days=1)
    stuck = _recording(recordings, "stuck", directory=True)
    first = _recording(recordings, "first")
    sweeping = asyncio.ensure_future(sweep_recordings(recordings, 0.01))
    try:
        await until(lambda: not first.path.exists(), what="the first recording swept")
        later = _recording(recordings, "later")
        await until(lambda: not later.path.exists(), what="a later recording swept")
        assert not sweeping.done()
        assert list(recordings.index) == ["stuck"] and stuck.path.is_dir()
        assert any("recording stuck not deleted" in r.getMessage() for r in caplog.records)
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


def test_the_stored_list_leaves_out_a_record_swept_meanwhile(tmp_path) -> None:
    """``GET /call/reports`` lists the newest records: one another worker swept between the
    listing and its look is left out (it was a 500)."""
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _gone_meanwhile(reports)
    for i, name in enumerate(["older", "newer"]):
        (tmp_path / f"{name}.report.json").write_text("{}")
        os.utime(tmp_path / f"{name}.report.json", (1_000_000 + i, 1_000_000 + i))
    assert reports.stored() == ["newer", "older"]
    assert reports.stored(limit=1) == ["newer"]
