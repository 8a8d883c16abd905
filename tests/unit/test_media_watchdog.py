"""The media watchdog (``bridge/calls/media_watch.py``, a child of each call's report,
``live_report.py``) on stand-in calls carrying real receiver counters: a WhatsApp side that
sends nothing from the start is reported once as never started, cleared when its audio comes;
a ringing call is not watched. And the report's place: opened with the call's runtime, written
when the runtime closes — the call ended here, or moved away — with nothing kept after."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.audio import tone
from bridge.audio.receiver import ReceiverStats
from bridge.audio.reception import RtpReception
from bridge.calls.model import CallState
from bridge.calls.reports import CallReports
from bridge.media import BusStats


def _second_of_packets(stats: ReceiverStats) -> None:
    """Fifty packets of a 20 ms stream into the stats' reception, none lost."""
    reception = stats.reception
    first = reception.highest + 1 if reception.base_seq is not None else 0
    for seq in range(first, first + 50):
        reception.received(seq, seq * 960, seq * 0.02)


def _runtime(stats: ReceiverStats, emitted: list[tuple[str, dict[str, Any]]]) -> Any:
    return SimpleNamespace(
        call=SimpleNamespace(
            id="c1", state=CallState.RINGING, mono_created=0.0, muted=False, held=False
        ),
        media=SimpleNamespace(
            webrtc_leg=SimpleNamespace(timeline_stats=(stats, None), far_end_loss=0.0)
        ),
        participants=SimpleNamespace(sessions={}, other_legs={}),
        bus=SimpleNamespace(stats=BusStats()),
        emit=lambda type_, **data: emitted.append((type_, data)),
    )


def test_a_whatsapp_side_silent_from_the_start_is_reported_once_then_cleared(tmp_path) -> None:
    registry = CollectorRegistry()
    reports = CallReports(tmp_path, 86400, registry, warn_after=3.0)
    stats, emitted = ReceiverStats(RtpReception(48_000)), []
    runtime = _runtime(stats, emitted)
    report = reports.open(runtime.call)
    for s in range(1, 6):  # ringing: nothing is expected yet
        report.sample(runtime, now=float(s))
    assert emitted == []
    runtime.call.state = CallState.ACTIVE
    for s in range(6, 12):  # answered, and still nothing from WhatsApp
        report.sample(runtime, now=float(s))
    assert emitted == [
        (
            "call.media_warning",
            {"leg": "whatsapp", "what": "whatsapp_audio_never_started", "silentS": 3.0},
        )
    ]
    assert registry.get_sample_value("bridge_media_warnings_total", {"side": "whatsapp"}) == 1
    heard = runtime.bus.stats.whatsapp_in
    for s in range(12, 14):  # it starts: 50 packets a second
        _second_of_packets(stats)
        heard.add(tone(440, 16_000, amplitude=0.1))
        report.sample(runtime, now=float(s))
    assert emitted[1] == ("call.media_warning_cleared", {"leg": "whatsapp", "silentS": 6.0})
    assert report.timeline.first_audio == {"whatsapp": 12.0}
    for s in range(14, 18):  # it stops again: a stall, not a start that never came
        report.sample(runtime, now=float(s))
    assert emitted[2][1]["what"] == "whatsapp_audio" and len(emitted) == 3
    rows = report.timeline.timeline_json()
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
    stats, emitted = ReceiverStats(RtpReception(48_000)), []
    runtime = _runtime(stats, emitted)
    report = reports.open(runtime.call)
    runtime.call.state = CallState.ACTIVE
    heard = runtime.bus.stats.whatsapp_in
    noise = (
        np.random.default_rng(1).normal(0, 3, 16_000).astype(np.int16)
    )  # about -82 dBFS: a quiet line
    zeros = np.zeros(16_000, dtype=np.int16)
    plan = [noise] * 2 + [zeros] * 4 + [noise] + [zeros] * 5
    for s, second in enumerate(plan, start=1):
        runtime.call.muted = 8 <= s <= 12  # the bridge muted the call: silence expected
        _second_of_packets(stats)
        heard.add(second)
        report.sample(runtime, now=float(s))
    assert emitted == [
        (
            "call.media_warning",
            {"leg": "whatsapp", "what": "whatsapp_audio_silent", "silentS": 3.0},
        ),
        ("call.media_warning_cleared", {"leg": "whatsapp", "silentS": 4.0}),
    ]
    levels = [r["levelReceivedDbfs"] for r in report.timeline.timeline_json()]
    assert levels[:3] == [levels[0], levels[0], -120.0] and -84 < levels[0] < -80
    assert registry.get_sample_value("bridge_media_warnings_total", {"side": "whatsapp"}) == 1


async def test_a_call_that_left_this_worker_is_recorded_as_it_is_at_once(tmp_path) -> None:
    """A call whose runtime here closed without it ending (moved by a handover) is recorded
    as it was seen, at once, and nothing of it stays: its report closed with its runtime and
    takes nothing more."""
    from ..fakes.engine import FakeEngine, calls_for_tests

    manager = calls_for_tests(FakeEngine()).manager
    reports = CallReports(tmp_path, 86400, CollectorRegistry(), warn_after=3.0)
    reports.calls, manager.open_report = manager, reports.open
    manager.events.observe(reports.observe)
    published: list[str] = []
    reports.publish = lambda type_, call, data: published.append(type_)
    call = await manager.make("5521999999999")
    runtime = manager.runtime(call.id)
    assert runtime.report is not None and runtime.report.call is call
    runtime.sample_report(1.0)
    assert (await reports.get(call.id))["summary"]["callID"] == call.id  # live, so far
    released = manager.release_moved(call.id)
    assert released is runtime
    await runtime.close()  # as release_call closes it: the call goes on elsewhere
    await reports.flush()
    stored = json.loads((tmp_path / f"{call.id}.report.json").read_text())
    assert published == ["call.report"] and stored["summary"]["endReason"] is None
    assert [e["type"] for e in stored["events"]] == ["call.created"]  # no call.ended here
    assert [r["leg"] for r in stored["timeline"]] == ["whatsapp"]
    assert runtime.report.closed and await reports.get(call.id) == stored
    runtime.report.event("call.moved", {})  # nothing more goes on it
    runtime.sample_report(2.0)
    assert [e["type"] for e in runtime.report.timeline.events] == ["call.created"]
    await manager.close()


async def test_a_call_that_ended_here_is_recorded_when_its_runtime_closes(tmp_path) -> None:
    """The record is written in the runtime's close: its last event is ``call.ended`` with the
    end's data, and ``call.report`` follows the ``call.ended`` the manager publishes."""
    from bridge.calls import EndReason

    from ..fakes.engine import FakeEngine, calls_for_tests

    manager = calls_for_tests(FakeEngine()).manager
    reports = CallReports(tmp_path, 86400, CollectorRegistry(), warn_after=3.0)
    reports.calls, manager.open_report = manager, reports.open
    manager.events.observe(reports.observe)
    published: list[str] = []
    manager.events.observe(lambda event, _call: published.append(event.type))
    reports.publish = lambda type_, call, data: published.append(type_)
    call = await manager.make("5521999999999")
    runtime = manager.runtime(call.id)
    runtime.emit("call.media_warning", leg="whatsapp", what="whatsapp_audio", silentS=3.0)
    await manager.end(call, EndReason.FAILED, code=131041)
    assert runtime.report is not None and runtime.report.closed
    await reports.flush()
    assert published == ["call.created", "call.media_warning", "call.ended", "call.report"]
    stored = json.loads((tmp_path / f"{call.id}.report.json").read_text())
    events = stored["events"]
    assert [e["type"] for e in events] == ["call.created", "call.media_warning", "call.ended"]
    assert events[-1]["code"] == 131041 and stored["summary"]["endReason"] == "failed"
    assert stored["summary"]["mediaWarnings"] == 1
    await manager.close()
