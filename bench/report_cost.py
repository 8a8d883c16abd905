"""What the call reports cost a call: the once-a-second sample of each leg's receiver counters
into the timeline with the media watchdog (``bridge/calls/reports.py``), timed over many calls
and simulated seconds, and the timeline's memory over a long call. No processes, no network:
the calls are stand-ins carrying real :class:`~bridge.audio.receiver.ReceiverStats` whose
counters advance as a 20 ms stream's would (with some loss, FEC and concealment)::

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

from prometheus_client import CollectorRegistry

from bench.quality import machine
from bridge.audio.receiver import ReceiverStats
from bridge.calls.model import CallState
from bridge.calls.reports import CallReports
from bridge.calls.timeline import Timeline


def _leg(stats: ReceiverStats) -> Any:
    return SimpleNamespace(timeline_stats=(stats, 0.04))


def _call(i: int) -> Any:
    wa, browser = ReceiverStats(), ReceiverStats()
    session = SimpleNamespace(
        receiver_stats=browser, last=SimpleNamespace(rtt_s=0.03), participant_id="agent"
    )
    return SimpleNamespace(
        call=SimpleNamespace(id=f"call{i}", state=CallState.ACTIVE, answered_at=1.0),
        media=SimpleNamespace(webrtc_leg=_leg(wa)),
        participants=SimpleNamespace(sessions={"agent": session}),
        bus=SimpleNamespace(stats=SimpleNamespace(downlink_frames=0)),
        emit=lambda *a, **k: None,
        counters=(wa, browser),
    )


def _advance(stats: ReceiverStats, rng: random.Random) -> None:
    lost = rng.randint(0, 3)
    stats.packets_received += 50 - lost
    stats.packets_lost += lost
    stats.fec_packets_received += lost // 2
    stats.concealed_samples += 320 * (lost - lost // 2)
    stats.jitter = rng.uniform(0.001, 0.02)
    stats.jitter_buffer_delay += 16_000 * 0.03
    stats.jitter_buffer_emitted_count += 16_000


def run(calls: int, seconds: int) -> dict[str, Any]:
    rng = random.Random(1)
    reports = CallReports(Path("/nonexistent"), 86400, CollectorRegistry(), 3.0)
    runtimes = [_call(i) for i in range(calls)]
    for r in runtimes:
        reports.timelines[r.call.id] = Timeline(started=0.0)
    spent = 0.0
    for s in range(1, seconds + 1):
        for r in runtimes:
            for stats in r.counters:
                _advance(stats, rng)
        before = time.process_time()
        reports.sample(runtimes, now=float(s))
        spent += time.process_time() - before
    per_call_s = spent / seconds / calls  # CPU seconds per call per second of call
    hour = Timeline(started=0.0)
    for s in range(1, 3601):
        for leg in ("whatsapp", "browser:agent"):
            hour.sample(float(s), leg, [48.0, 2.0, 1.0, 20.0, 0.0, 5.0, 30.0, 40.0, 4.1])
    return {
        "machine": machine(),
        "calls": calls,
        "seconds": seconds,
        "cpu_per_call_percent_of_a_core": round(per_call_s * 100, 5),
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
