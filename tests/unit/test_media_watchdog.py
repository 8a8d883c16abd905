"""The media watchdog (``bridge/calls/reports.py``) on stand-in calls carrying real receiver
counters: a WhatsApp side that sends nothing from the start is reported once as never started,
cleared when its audio comes; a ringing call is not watched."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.audio import tone
from bridge.audio.receiver import ReceiverStats
from bridge.calls.model import CallState
from bridge.calls.reports import CallReports
from bridge.calls.timeline import Timeline
from bridge.media import BusStats


def _runtime(stats: ReceiverStats, emitted: list[tuple[str, dict[str, Any]]]) -> Any:
    return SimpleNamespace(
        call=SimpleNamespace(
            id="c1", state=CallState.RINGING, mono_created=0.0, muted=False, held=False
        ),
        media=SimpleNamespace(
            webrtc_leg=SimpleNamespace(timeline_stats=(stats, None), far_end_loss=0.0)
        ),
        participants=SimpleNamespace(sessions={}),
        bus=SimpleNamespace(stats=BusStats()),
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
    heard = runtime.bus.stats.whatsapp_in
    for s in range(12, 14):  # it starts: 50 packets a second
        stats.packets_received += 50
        heard.add(tone(440, 16_000, amplitude=0.1))
        reports.sample([runtime], now=float(s))
    assert emitted[1] == ("call.media_warning_cleared", {"leg": "whatsapp", "silentS": 6.0})
    assert reports.timelines["c1"].first_audio == {"whatsapp": 12.0}
    for s in range(14, 18):  # it stops again: a stall, not a start that never came
        reports.sample([runtime], now=float(s))
    assert emitted[2][1]["what"] == "whatsapp_audio" and len(emitted) == 3
    rows = reports.timelines["c1"].timeline_json()
    assert [r["packetsReceived"] for r in rows if 11 < r["t"] < 14] == [50, 50]
    assert [r["levelReceivedDbfs"] for r in rows if 11 < r["t"] < 14] == [
        -23.0,
        -23.0,
    ]  # a 0.1 sine
    assert [r["levelReceivedDbfs"] for r in rows if r["t"] < 12] == [None] * 11


def test_packets_of_digital_silence_warn_unless_the_bridge_muted_or_held_the_call(
    tmp_path,
) -> None:
    """A side whose packets flow but carry digital silence (a muted track, a dead microphone)
    is warned about as ``*_audio_silent`` after ``warn_after`` seconds, cleared when sound
    returns; not while the call is muted or held by the bridge."""
    import numpy as np

    registry = CollectorRegistry()
    reports = CallReports(tmp_path, 86400, registry, warn_after=3.0)
    reports.timelines["c1"] = Timeline(started=0.0)
    stats, emitted = ReceiverStats(), []
    runtime = _runtime(stats, emitted)
    runtime.call.state = CallState.ACTIVE
    heard = runtime.bus.stats.whatsapp_in
    noise = (
        np.random.default_rng(1).normal(0, 3, 16_000).astype(np.int16)
    )  # about -82 dBFS: a quiet line
    zeros = np.zeros(16_000, dtype=np.int16)
    plan = [noise] * 2 + [zeros] * 4 + [noise] + [zeros] * 5
    for s, second in enumerate(plan, start=1):
        runtime.call.muted = 8 <= s <= 12  # the bridge muted the call: silence expected
        stats.packets_received += 50
        heard.add(second)
        reports.sample([runtime], now=float(s))
    assert emitted == [
        (
            "call.media_warning",
            {"leg": "whatsapp", "what": "whatsapp_audio_silent", "silentS": 3.0},
        ),
        ("call.media_warning_cleared", {"leg": "whatsapp", "silentS": 4.0}),
    ]
    levels = [r["levelReceivedDbfs"] for r in reports.timelines["c1"].timeline_json()]
    assert levels[:3] == [levels[0], levels[0], -120.0] and -84 < levels[0] < -80
    assert registry.get_sample_value("bridge_media_warnings_total", {"side": "whatsapp"}) == 1


async def test_a_call_that_left_this_worker_is_recorded_and_forgotten(tmp_path) -> None:
    """A call followed here whose runtime went (moved by a handover) does not stay in memory:
    after five passes without it, what was seen is stored and the call is let go."""
    import asyncio

    from bridge.calls.events import CallEvent

    reports = CallReports(tmp_path, 86400, CollectorRegistry(), warn_after=3.0)
    published: list[str] = []
    reports.publish = lambda type_, call, data: published.append(type_)
    call = SimpleNamespace(
        id="moved1",
        live=True,
        state=CallState.ACTIVE,
        mono_created=0.0,
        snapshot=lambda: {"callID": "moved1", "endReason": None},
    )
    reports.observe(CallEvent("call.active", {"callID": "moved1"}, "now"), call)  # type: ignore[arg-type]
    assert "moved1" in reports.timelines
    for s in range(1, 5):
        reports.sample([], now=float(s))
    assert "moved1" in reports.timelines
    reports.sample([], now=5.0)
    assert reports.timelines == {} and reports._calls == {}
    await reports.flush()
    await asyncio.sleep(0)
    assert (tmp_path / "moved1.report.json").is_file() and published == ["call.report"]
