"""The retention sweeps (call reports, recordings) in a directory other workers sweep too (the
workers of ``--workers`` and instances on one volume share ``BRIDGE_DATA_DIR``): a record
another worker deleted between this sweep's listing and its look at the file is passed over,
and a pass that fails is logged and the next one runs. Before, either error ended the
worker's sweeping for good (files kept past their retention, the disk filling)."""

from __future__ import annotations

import asyncio
import os
import time

from prometheus_client import CollectorRegistry

from bridge.attachments import RecordingService
from bridge.attachments.recording import Recording
from bridge.calls.reports import CallReports, sweep_forever
from bridge.resources import sweep_recordings

from ..support.waits import until

DAY = 86400.0


def _expired(reports: CallReports, call_id: str) -> None:
    path = reports.root / f"{call_id}.report.json"
    path.write_text("{}")
    old = time.time() - 2 * DAY
    os.utime(path, (old, old))


def _gone_meanwhile(reports: CallReports) -> None:
    """A record listed, then deleted by another worker before this one looked at it: the
    listing holds its name and the look finds nothing (a link to nowhere is exactly that)."""
    (reports.root / "swept-elsewhere.report.json").symlink_to(reports.root / "nowhere")


def test_a_record_deleted_meanwhile_is_passed_over(tmp_path) -> None:
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _gone_meanwhile(reports)
    _expired(reports, "old")
    (tmp_path / "new.report.json").write_text("{}")
    assert reports.sweep() == 1
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "new.report.json",
        "swept-elsewhere.report.json",
    ]


async def test_the_sweep_goes_on_after_a_pass_that_met_one(tmp_path) -> None:
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    _gone_meanwhile(reports)
    _expired(reports, "first")
    sweeping = asyncio.ensure_future(sweep_forever(reports, 0.01))
    try:
        await until(lambda: not (tmp_path / "first.report.json").exists(), what="first swept")
        _expired(reports, "later")  # expired after the pass that met the missing record
        await until(lambda: not (tmp_path / "later.report.json").exists(), what="later swept")
        assert not sweeping.done()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


async def test_a_pass_that_fails_is_logged_and_the_next_one_runs(tmp_path, caplog) -> None:
    reports = CallReports(tmp_path, DAY, CollectorRegistry(), warn_after=3.0)
    stuck = tmp_path / "stuck.report.json"  # a directory in a record's place: unlink refuses
    stuck.mkdir()
    old = time.time() - 2 * DAY
    os.utime(stuck, (old, old))
    sweeping = asyncio.ensure_future(sweep_forever(reports, 0.01))
    try:
        await until(
            lambda: sum("not swept" in r.getMessage() for r in caplog.records) >= 2,
            what="two passes logged",
        )
        assert not sweeping.done()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


async def test_a_recordings_pass_that_fails_is_logged_and_the_next_one_runs(
    tmp_path, caplog
) -> None:
    recordings = RecordingService(tmp_path, retention_days=1)
    stuck = tmp_path / "files" / "calls" / "stuck.wav"
    stuck.mkdir()  # a directory in a recording's place: unlink refuses
    recordings.index["stuck"] = Recording(
        "stuck", "c1", "mixed", stuck, "calls/stuck.wav", 0, 0, 0.0, expires_at=1.0
    )
    sweeping = asyncio.ensure_future(sweep_recordings(recordings, 0.01))
    try:
        await until(
            lambda: sum("recordings not swept" in r.getMessage() for r in caplog.records) >= 2,
            what="two passes logged",
        )
        assert not sweeping.done()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)
