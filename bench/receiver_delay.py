"""The Opus receiver's delay against its sound, offline: which starting and minimum delay (and
margin) keep PESQ-WB within 0.05 of the ideal receiver for the least delay.

The same speech and seeded network profiles as ``make quality`` (``bench/quality_paths.py``:
loss, Gilbert bursts, 0–40 ms jitter, a sender's 400 ms stall every 5 s, irregular stalls), but
no processes and no real time: a browser-like encoder (Opus 32 kbit/s, in-band FEC planned for
10 % loss, 20 ms) makes the packets, each arrives at its send time plus 1 ms plus the profile's
delay (a few ms of seeded timer jitter on both clocks), and
:class:`~bridge.audio.receiver.Receiver` is popped on a 20 ms clock (of a seeded phase) as the
uplink pops it. Scored against the ideal receiver fed the very same packets (every packet,
however late). The delay is the receiver's own W3C mean
(``jitterBufferDelay / jitterBufferEmittedCount``), what it adds to the uplink, with the 95th
percentile of :attr:`Receiver.delay` over the ticks; the CPU is the receiver's (``push`` and
``pop``), µs a tick::

    .venv/bin/python -m bench.receiver_delay --json bench/results/receiver-delay-<date>.json

A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from bench.quality import stamped
from bench.quality_paths import PROFILES, Wire, ideal_decode
from bench.scoring import pesq_wb
from bench.speech import speech
from bridge.audio.opus import OpusEncoder
from bridge.audio.receiver import Receiver

RATE, FRAME = 16_000, 320
CANDIDATES = {
    "margin 4 ms (default)": {},
    "margin 2 ms": {"margin": 0.002},
    "margin 6 ms": {"margin": 0.006},
    "min 10 ms": {"min_delay": 0.01},
    "min 20 ms": {"min_delay": 0.02},
}


def encode(pcm: np.ndarray) -> list[bytes]:
    enc = OpusEncoder(RATE, bitrate=32_000, complexity=9, fec=True, expected_loss=10, dtx=False)
    return [enc.encode(pcm[i * FRAME : (i + 1) * FRAME]) for i in range(pcm.size // FRAME)]


def run(
    payloads: list[bytes], profile: str, seed: int, timer: float = 0.001, **options: float
) -> dict[str, float]:
    wire, rng = Wire(PROFILES[profile], seed), random.Random(seed)
    arrivals: list[tuple[float, int]] = []
    for i in range(len(payloads)):
        extra = wire.fate()
        if extra is not None:
            arrivals.append((i * 0.02 + abs(rng.gauss(0, timer)) + 0.001 + extra, i))
    arrivals.sort()
    rx = Receiver(RATE, FRAME, **options)  # type: ignore[arg-type]
    out, j, tick = [], 0, 0.001 + rng.uniform(0.0, 0.02)  # the clock's phase: any
    delays, cpu = [], 0.0
    while j < len(arrivals) or rx.buffered:
        now = tick + abs(rng.gauss(0, timer))
        t0 = time.process_time()
        while j < len(arrivals) and arrivals[j][0] <= now:
            at, i = arrivals[j]
            rx.push((1000 + i) & 0xFFFF, (5000 + i * 960) & 0xFFFFFFFF, payloads[i], at)
            j += 1
        out.append(rx.pop(now))
        cpu += time.process_time() - t0
        delays.append(rx.delay)
        tick += 0.02
    s = rx.stats
    got = {i: payloads[i] for _, i in arrivals}
    return {
        "played": np.concatenate(out),  # type: ignore[dict-item]
        "ideal": ideal_decode(got),  # type: ignore[dict-item]
        "delay_ms": 1000 * s.jitter_buffer_delay / max(1, s.jitter_buffer_emitted_count),
        "delay_p95_ms": 1000 * float(np.percentile(delays, 95)),
        "us_a_tick": 1e6 * cpu / len(delays),
        "concealment_events": s.concealment_events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--profiles", default="clean,loss3,loss10,bursts,jitter,jitter+loss3,stall,stalls"
    )
    parser.add_argument(
        "--timer", type=float, default=0.001, help="timer jitter of both clocks (s, |N(0, σ)|)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ref = speech(args.seconds)
    payloads = encode(ref)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    t0 = time.monotonic()
    for name, options in CANDIDATES.items():
        rows[name] = {}
        for profile in args.profiles.split(","):
            bridge, ideal, delay, p95, cpu = [], [], [], [], []
            for seed in range(1, args.seeds + 1):
                r = run(payloads, profile, seed, args.timer, **options)
                bridge.append(pesq_wb(ref, r["played"]))  # type: ignore[arg-type]
                ideal.append(pesq_wb(ref, r["ideal"]))  # type: ignore[arg-type]
                delay.append(r["delay_ms"])
                p95.append(r["delay_p95_ms"])
                cpu.append(r["us_a_tick"])
            rows[name][profile] = {
                "bridge": round(float(np.mean(bridge)), 3),
                "ideal": round(float(np.mean(ideal)), 3),
                "delay_ms": round(float(np.mean(delay)), 1),
                "delay_p95_ms": round(float(np.mean(p95)), 1),
                "us_a_tick": round(float(np.mean(cpu)), 1),
            }
            print(name, profile, rows[name][profile], flush=True)
    profiles = args.profiles.split(",")
    print("| receiver | " + " | ".join(f"{p}: PESQ − ideal / delay ms" for p in profiles) + " |")
    print("|---|" + "---|" * len(profiles))
    for name, by in rows.items():
        cells = [
            f"{by[p]['bridge'] - by[p]['ideal']:+.2f} / {by[p]['delay_ms']:.1f}" for p in profiles
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            **stamped("receiver-delay"),
            "seeds": args.seeds,
            "timer_jitter_s": args.timer,
            "speech_seconds": round(ref.size / RATE, 2),
            "run_seconds": round(time.monotonic() - t0, 1),
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
