"""The media watchdog (``bridge/calls/reports.py``) on stand-in calls carrying real receiver
counters: a WhatsApp side that sends nothing from the start is reported once as never started,
cleared when its audio comes; a ringing call is not watched."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.audio.receiver import ReceiverStats
from bridge.calls.model import CallState
from bridge.calls.reports import CallReports
from bridge.calls.timeline import Timeline


def _runtime(stats: ReceiverStats, emitted: list[tuple[str, dict[str, Any]]]) -> Any:
    return SimpleNamespace(
        call=SimpleNamespace(id="c1", state=CallState.RINGING),
        media=SimpleNamespace(webrtc_leg=SimpleNamespace(timeline_stats=(stats, None))),
        participants=SimpleNamespace(sessions={}),
        emit=lambda type_, **data: emitted.append((type_, data)),
    )


def test_a_whatsapp_side_silent_from_the_start_is_reported_once_then_cleared(tmp_path) -> None:
    registry = CollectorRegistry()
    reports = CallReports(tmp_path, 86400, registry, warn_after=3.0)
    reports.timelines["c1"] = Timeline(started=0.0)
    stats, emitted = ReceiverStats(), []
    runtime = _runtime(stats, emitted)
    for s in range(1, 6):  # ringing: nothing is expected yet
        reports.sample([runtime], now=float(s))
    assert emitted == []
    runtime.call.state = CallState.ACTIVE
    for s in range(6, 12):  # answered, and still nothing from WhatsApp
        reports.sample([runtime], now=float(s))
    assert emitted == [
        (
            "call.media_warning",
            {"leg": "whatsapp", "what": "whatsapp_audio_never_started", "silentS": 3.0},
        )
    ]
    assert registry.get_sample_value("bridge_media_warnings_total", {"side": "whatsapp"}) == 1
    for s in range(12, 14):  # it starts: 50 packets a second
        stats.packets_received += 50
        reports.sample([runtime], now=float(s))
    assert emitted[1] == ("call.media_warning_cleared", {"leg": "whatsapp", "silentS": 6.0})
    assert reports.timelines["c1"].first_audio == {"whatsapp": 12.0}
    for s in range(14, 18):  # it stops again: a stall, not a start that never came
        reports.sample([runtime], now=float(s))
    assert emitted[2][1]["what"] == "whatsapp_audio" and len(emitted) == 3
    rows = reports.timelines["c1"].timeline_json()
    assert [r["packetsReceived"] for r in rows if 11 < r["t"] < 14] == [50, 50]
