"""The receiver over many seeds (issue 61's "0–40 ms jitter gap"): a phone on a trunk
(``bench/phone_quality.py``, PCMU and Opus, every profile) and the browser's Opus receiver
(``bench/receiver_delay.py``, 0–40 ms), each seed on its own, bridge − ideal PESQ-WB, the
receiver's mean / p95 delay and its receive CPU::

    .venv/bin/python -m bench.jitter_seeds --json bench/results/jitter-seeds-<date>.json

``phone_call`` is given the seed itself (``run_phones`` gives profile *k* seed + *k*), so seed
*s* of a profile here is the draw ``make quality --phones --seed s-k`` makes for it. A
benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.phone_quality import CODECS, PHONE_PROFILES, back_in, phone_call, phone_payloads
from bench.quality import stamped
from bench.receiver_delay import encode, run
from bench.scoring import pesq_wb
from bench.speech import speech


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=6, help="phone seeds 1..n")
    parser.add_argument("--browser-seeds", type=int, default=8, help="browser seeds 1..n")
    parser.add_argument("--profiles", default=",".join(PHONE_PROFILES))
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ref = speech(16.0)
    t0 = time.monotonic()
    phones: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for codec in args.codecs.split(","):
        payloads = phone_payloads(codec, ref)
        phones[codec] = {}
        for profile in args.profiles.split(","):
            rows = []
            for seed in range(1, args.seeds + 1):
                r = phone_call(ref, codec, profile, seed, payloads)
                r["gap"] = round(r["bridge"] - r["ideal"], 3)
                rows.append({"seed": seed, **r})
            phones[codec][profile] = rows
            gaps = " ".join(f"{r['gap']:+.2f}" for r in rows)
            delay = np.mean([r["delay_mean_ms"] for r in rows])
            p95 = np.mean([r["delay_p95_ms"] or 0 for r in rows])
            cpu = max(r["cpu_ms_per_s"] for r in rows)
            stalls = [r["recover_s"] for r in rows if "recover_s" in r]
            if len({len(k) for k in stalls}) > 1:  # irregular stalls: the slowest of all
                stalls = [
                    [max(k, key=lambda v: 1e9 if v is None else v, default=0.0)] for k in stalls
                ]
            back = [  # each stall's slowest seed (None: one was not back)
                None if None in k else max(k) for k in zip(*stalls, strict=True)
            ]
            late = sum(r["discarded"] for r in rows)
            events = sum(r["concealment_events"] for r in rows)
            print(
                f"{codec:5} {profile:9} gaps {gaps}  delay {delay:.1f} / p95 {p95:.1f} ms"
                f"  cpu ≤ {cpu:.2f} ms/s  concealed {events} times, {late} late"
                + (f"  back in ≤ {' / '.join(back_in(k) for k in back)}" if back else ""),
                flush=True,
            )
    browser = []
    if args.browser_seeds:
        payloads = encode(ref)
        for seed in range(1, args.browser_seeds + 1):
            r = run(payloads, "jitter", seed)
            bridge = pesq_wb(ref, r["played"])  # type: ignore[arg-type]
            ideal = pesq_wb(ref, r["ideal"])  # type: ignore[arg-type]
            browser.append(
                {
                    "seed": seed,
                    "bridge": round(bridge, 3),
                    "ideal": round(ideal, 3),
                    "gap": round(bridge - ideal, 3),
                    "delay_ms": round(r["delay_ms"], 1),
                }
            )
        gaps = " ".join(f"{r['gap']:+.2f}" for r in browser)
        delay = np.mean([r["delay_ms"] for r in browser])
        print(f"browser 0–40 ms gaps {gaps}  delay {delay:.1f} ms", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            **stamped("jitter-seeds"),
            "run_seconds": round(time.monotonic() - t0, 1),
            "phones": phones,
            "browser_jitter": browser,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
