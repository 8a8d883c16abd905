"""How fast the receiver sheds a large excess of delay, offline (docs/quality.md, *A large
excess of delay shed fast*)::

    .venv/bin/python -m bench.delay_recovery [--json bench/results/delay-recovery-<date>.json]

The bench's 16 s of speech and a 440 Hz tone, Opus 32 kbit/s (``bench.receiver_delay.encode``),
each packet arriving 1 ms after its send time but for one event: a start burst (the first
500 ms of packets at once at 0.5 s, as a GStreamer webrtcbin peer sends them once DTLS is up)
or a sender's stall of 400, 200 or 100 ms at 3.6-3.9 s released at once at 4.0 s (a Wi-Fi or
mobile hiccup). :class:`~bridge.audio.receiver.Receiver` is popped on a 20 ms clock and its
``delay`` read every tick. For each case: the seconds from the release until the delay stays
within 40 ms of the steady delay, the mean delay after the release, what was removed, the
receive CPU a tick and (speech) PESQ-WB of the whole 16 s against the reference. No real time:
the figures are the same run to run. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import stamped
from bench.receiver_delay import encode
from bench.scoring import pesq_wb
from bench.speech import speech
from bridge.audio import tone
from bridge.audio.receiver import Receiver

RATE, FRAME = 16_000, 320
NEAR = 0.04
"""How close to the steady delay counts as back (seconds)."""


def _stall(start: float, release: float) -> Callable[[int], float]:
    return lambda i: (release if start <= i * 0.02 < release else i * 0.02) + 0.001


CASES: dict[str, tuple[Callable[[int], float], float]] = {
    "start burst": (lambda i: max(0.5, i * 0.02) + 0.001, 0.5),
    "400 ms stall": (_stall(3.6, 4.0), 4.0),
    "200 ms stall": (_stall(3.8, 4.0), 4.0),
    "100 ms stall": (_stall(3.9, 4.0), 4.0),
}


def trial(
    payloads: list[bytes], arrive: Callable[[int], float]
) -> tuple[np.ndarray, list[tuple[float, float]], Receiver, float]:
    """The receiver fed ``payloads`` at ``arrive(i)``: what it played, (tick, delay) a tick,
    the receiver, and its CPU seconds."""
    arrivals = sorted((arrive(i), i) for i in range(len(payloads)))
    rx = Receiver(RATE, FRAME)
    j, tick, cpu = 0, 0.0105, 0.0
    out: list[np.ndarray] = []
    trace: list[tuple[float, float]] = []
    while j < len(arrivals) or rx.buffered:
        while j < len(arrivals) and arrivals[j][0] <= tick:
            at, i = arrivals[j]
            rx.push((1000 + i) & 0xFFFF, (5000 + i * 960) & 0xFFFFFFFF, payloads[i], at)
            j += 1
        t0 = time.process_time()
        out.append(rx.pop(tick))
        cpu += time.process_time() - t0
        trace.append((tick, rx.delay))
        tick += 0.02
    return np.concatenate(out), trace, rx, cpu


def recovery(trace: list[tuple[float, float]], steady: float, release: float) -> float:
    """Seconds after ``release`` until the delay stays within :data:`NEAR` of ``steady``."""
    last_off = release
    for t, delay in trace:
        if t >= release and abs(delay - steady) > NEAR:
            last_off = t
    return last_off - release


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ref = speech(16.0)
    rows: list[dict[str, Any]] = []
    for name, pcm in (("speech", ref), ("tone", tone(440, 16 * RATE, RATE, 0.3).astype(np.int16))):
        payloads = encode(pcm)
        played, trace, _, _ = trial(payloads, lambda i: i * 0.02 + 0.001)
        steady = float(np.median([d for _, d in trace[50:]]))
        score = f"  PESQ-WB {pesq_wb(ref, played):.2f}" if name == "speech" else ""
        print(f"{name:6} steady        delay {1000 * steady:4.0f} ms{score}")
        for case, (arrive, release) in CASES.items():
            played, trace, rx, cpu = trial(payloads, arrive)
            after = [d for t, d in trace if t >= release]
            row = {
                "signal": name,
                "case": case,
                "back_s": round(recovery(trace, steady, release), 2),
                "delay_after_ms": round(1000 * float(np.mean(after)), 1),
                "removed": rx.stats.removed_samples_for_acceleration,
                "concealment_events": rx.stats.concealment_events,
                "discarded": rx.stats.packets_discarded,
                "us_a_tick": round(1e6 * cpu / len(trace), 1),
                "pesq_wb": round(pesq_wb(ref, played), 3) if name == "speech" else None,
            }
            rows.append(row)
            score = f"  PESQ-WB {row['pesq_wb']:.2f}" if name == "speech" else ""
            print(
                f"{name:6} {case:13} back in {row['back_s']:5.2f} s"
                f"  mean delay after {row['delay_after_ms']:4.0f} ms"
                f"  removed {row['removed']}  {row['us_a_tick']:.0f} µs a tick{score}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {**stamped("delay-recovery"), "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
