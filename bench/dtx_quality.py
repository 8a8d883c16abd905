"""What DTX costs the uplink's sound, and what it saves, offline: the bench's speech (sentences
with pauses) coded as a browser codes it with and without ``usedtx=1`` (libopus' DTX and
WebRTC's rule: only the first packet of no audio of a silence is sent), over the seeded network
profiles of ``make quality``, into :class:`~bridge.audio.receiver.Receiver` popped on a
20 ms clock, as ``bench/receiver_delay.py`` does. Each is scored with PESQ-WB against the speech,
next to the ideal receiver fed the same packets (every packet in its place, a frame not sent or
lost concealed), with the packets sent a second, the receiver's delay (W3C mean) and its CPU a
frame. ``--noise`` adds room noise (RMS, int16) under the speech, where DTX's comfort noise
stands in for it::

    .venv/bin/python -m bench.dtx_quality --json bench/results/dtx-quality-<date>.json

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


def encode(pcm: np.ndarray, dtx: bool) -> dict[int, bytes]:
    """Frame index → the packet sent for it (a browser's settings: 32 kbit/s, FEC planned for
    10 % loss); with ``dtx``, the frames WebRTC does not send are missing."""
    enc = OpusEncoder(RATE, bitrate=32_000, complexity=9, fec=True, expected_loss=10, dtx=dtx)
    sent, quiet = {}, False
    for i in range(pcm.size // FRAME):
        payload = enc.encode(pcm[i * FRAME : (i + 1) * FRAME])
        if len(payload) <= 2 and quiet:
            continue
        quiet = len(payload) <= 2
        sent[i] = payload
    return sent


def run(sent: dict[int, bytes], frames: int, profile: str, seed: int) -> dict[str, object]:
    # Separate seeded draws for the send timer (by frame), the network and the receiver's
    # clock, so the two senders meet the same timers and the same clock phase.
    wire, rng = Wire(PROFILES[profile], seed), random.Random(seed)
    send_timer = np.abs(np.random.default_rng(seed).normal(0.0, 0.001, frames))
    arrivals = []
    for seq, i in enumerate(sorted(sent)):
        extra = wire.fate()
        if extra is not None:
            arrivals.append((i * 0.02 + float(send_timer[i]) + 0.001 + extra, seq, i))
    arrivals.sort()
    rx = Receiver(RATE, FRAME)
    out, j, tick, busy = [], 0, 0.001 + rng.uniform(0.0, 0.02), 0.0
    while tick < frames * 0.02 + 0.3:
        now = tick + abs(rng.gauss(0, 0.001))
        t = time.perf_counter()
        while j < len(arrivals) and arrivals[j][0] <= now:
            at, seq, i = arrivals[j]
            rx.push((1000 + seq) & 0xFFFF, (5000 + i * 960) & 0xFFFFFFFF, sent[i], at)
            j += 1
        out.append(rx.pop(now))
        busy += time.perf_counter() - t
        tick += 0.02
    got = {i: sent[i] for _, _, i in arrivals}
    s = rx.stats
    return {
        "played": np.concatenate(out),
        "ideal": ideal_decode(got),  # frame-indexed: a frame not sent is concealed, as lost
        "delay_ms": 1000 * s.jitter_buffer_delay / max(1, s.jitter_buffer_emitted_count),
        "us_per_frame": 1e6 * busy / len(out),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profiles", default="clean,loss3,jitter")
    parser.add_argument("--noise", type=float, default=0.0, help="room noise RMS (int16)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ref = speech(args.seconds)
    if args.noise:
        noise = np.random.default_rng(3).normal(0.0, args.noise, ref.size)
        ref = np.clip(ref + noise, -32768, 32767).astype(np.int16)
    frames = ref.size // FRAME
    rows: dict[str, dict[str, dict[str, float]]] = {}
    t0 = time.monotonic()
    for name, dtx in (("continuous", False), ("DTX", True)):
        sent = encode(ref, dtx)
        rows[name] = {}
        for profile in args.profiles.split(","):
            got: dict[str, list[float]] = {"bridge": [], "ideal": [], "delay_ms": [], "us": []}
            for seed in range(1, args.seeds + 1):
                r = run(sent, frames, profile, seed)
                got["bridge"].append(pesq_wb(ref, r["played"]))  # type: ignore[arg-type]
                got["ideal"].append(pesq_wb(ref, r["ideal"]))  # type: ignore[arg-type]
                got["delay_ms"].append(r["delay_ms"])  # type: ignore[arg-type]
                got["us"].append(r["us_per_frame"])  # type: ignore[arg-type]
            rows[name][profile] = {
                "bridge": round(float(np.mean(got["bridge"])), 3),
                "ideal": round(float(np.mean(got["ideal"])), 3),
                "delay_ms": round(float(np.mean(got["delay_ms"])), 1),
                "receiver_us_per_frame": round(float(np.median(got["us"])), 1),
                "packets_per_s": round(len(sent) / (frames * 0.02), 1),
            }
            print(name, profile, rows[name][profile], flush=True)
    profiles = args.profiles.split(",")
    print(
        "| sender | packets/s | "
        + " | ".join(f"{p}: PESQ (ideal) / delay ms / µs" for p in profiles)
        + " |"
    )
    print("|---|---|" + "---|" * len(profiles))
    for name, by in rows.items():
        cells = [
            f"{by[p]['bridge']:.2f} ({by[p]['ideal']:.2f}) / {by[p]['delay_ms']:.1f} / "
            f"{by[p]['receiver_us_per_frame']:.0f}"
            for p in profiles
        ]
        print(f"| {name} | {by[profiles[0]]['packets_per_s']} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            **stamped("dtx-quality"),
            "seeds": args.seeds,
            "noise_rms": args.noise,
            "speech_seconds": round(ref.size / RATE, 2),
            "run_seconds": round(time.monotonic() - t0, 1),
            "rows": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
