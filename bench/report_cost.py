"""What the call reports cost a call: the once-a-second sample of each leg's counters into the
timeline with the media watchdog (each call's ``bridge/calls/live_report.py``), timed over many
calls and simulated seconds; the level meters on the 20 ms path (one
:class:`~bridge.media.LevelMeter` ``add`` per frame, four streams a call: each side heard and
sent), timed on real frames; and the timeline's memory over a long call. No processes, no
network: the calls are stand-ins carrying real :class:`~bridge.audio.receiver.ReceiverStats` and
meters whose counters advance as a 20 ms stream's would (with some loss, FEC and concealment)::

    .venv/bin/python -m bench.report_cost --calls 200 --seconds 600

A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bench.quality import machine
from bridge.audio.receiver import ReceiverStats
from bridge.audio.reception import RtpReception
from bridge.calls.model import CallState
from bridge.calls.reports import CallReports
from bridge.calls.timeline import COLUMNS, Timeline
from bridge.media import BusStats, LevelMeter


def _leg(stats: ReceiverStats) -> Any:
    return SimpleNamespace(timeline_stats=(stats, 0.04), far_end_loss=0.01)


def _call(i: int) -> Any:
    wa, browser = ReceiverStats(RtpReception(48_000)), ReceiverStats(RtpReception(48_000))
    session = SimpleNamespace(
        receiver_stats=browser,
        last=SimpleNamespace(rtt_s=0.03),
        participant_id="agent",
        offered_at=0.5,
        mic_level=LevelMeter(),
        sent_level=LevelMeter(),
        octets_sent=0,
        far_end_loss=0.02,
    )
    bus = BusStats()
    return SimpleNamespace(
        call=SimpleNamespace(
            id=f"call{i}", state=CallState.ACTIVE, mono_created=0.0, muted=False, held=False
        ),
        media=SimpleNamespace(webrtc_leg=_leg(wa)),
        participants=SimpleNamespace(sessions={"agent": session}),
        bus=SimpleNamespace(stats=bus),
        emit=lambda *a, **k: None,
        counters=(wa, browser),
        meters=(bus.whatsapp_in, bus.whatsapp_out, session.mic_level, session.sent_level),
        session=session,
    )


def _advance(stats: ReceiverStats, rng: random.Random, second: int) -> None:
    """A second of a 20 ms Opus stream: its packets (some lost, the rest 0-20 ms late) into
    the stream's reception, and what the receiver would have counted of them."""
    lost = rng.randint(0, 3)
    gone = set(rng.sample(range(50), lost))
    for i in range(50):
        seq = second * 50 + i
        if i not in gone:
            at = seq * 0.02 + rng.uniform(0.0, 0.02)
            stats.reception.received(seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, at)
    stats.bytes_received += (50 - lost) * 80
    stats.fec_packets_received += lost // 2
    stats.concealed_samples += 320 * (lost - lost // 2)
    stats.jitter_buffer_delay += 16_000 * 0.03
    stats.jitter_buffer_emitted_count += 16_000


def _meter_cost(rng: random.Random, frames: int = 200_000) -> float:
    """CPU seconds one ``LevelMeter.add`` takes on a 20 ms frame of noise (the best of 5)."""
    pool = [
        np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, 2000, 320).astype(np.int16)
        for _ in range(50)
    ]
    meter, best = LevelMeter(), float("inf")
    for _ in range(5):
        before = time.process_time()
        for i in range(frames // 5):
            meter.add(pool[i % 50])
        best = min(best, (time.process_time() - before) / (frames // 5))
    return best


def run(calls: int, seconds: int) -> dict[str, Any]:
    rng = random.Random(1)
    reports = CallReports(Path("/nonexistent"), 86400, CollectorRegistry(), 3.0)
    runtimes = [_call(i) for i in range(calls)]
    for r in runtimes:
        r.report = reports.open(r.call)
    spent = 0.0
    for s in range(1, seconds + 1):
        for r in runtimes:
            for stats in r.counters:
                _advance(stats, rng, s)
            for meter in r.meters:  # a second of frames at about -26 dBFS
                meter.energy += 16_000 * 1000.0**2
                meter.samples += 16_000
            r.session.octets_sent += 50 * 90
        before = time.process_time()
        for r in runtimes:  # as each runtime's sample_report does
            r.report.sample(r, float(s))
        spent += time.process_time() - before
    per_call_s = spent / seconds / calls  # CPU seconds per call per second of call
    frame_s = _meter_cost(rng)
    meters_s = frame_s * 4 * 50  # four streams a call, 50 frames a second each
    hour = Timeline(started=0.0)
    row = [48.0, 2.0, 1.0, 20.0, 0.0, 5.0, 30.0, 40.0, 4.1, 30.0, 38.0, -24.5, -18.0, 2.0]
    assert len(row) == len(COLUMNS)
    for s in range(1, 3601):
        for leg in ("whatsapp", "browser:agent"):
            hour.sample(float(s), leg, row)
    return {
        "machine": machine(),
        "calls": calls,
        "seconds": seconds,
        "cpu_per_call_percent_of_a_core": round((per_call_s + meters_s) * 100, 5),
        "sample_pass_per_call_percent_of_a_core": round(per_call_s * 100, 5),
        "level_meters_per_call_percent_of_a_core": round(meters_s * 100, 5),
        "level_meter_us_per_frame": round(frame_s * 1e6, 3),
        "sample_pass_ms_for_all_calls": round(spent / seconds * 1000, 3),
        "timeline_bytes_one_hour_two_legs": hour.nbytes(),
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    out = run(args.calls, args.seconds)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
