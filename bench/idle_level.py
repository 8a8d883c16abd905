"""Idle Opus legs fed as the bridge feeds them: CPU µs a packet, the level sample included.

A forwarded Cloud API call's two legs are idle (``rtc/uplink.py``): their packets are counted
and forwarded, not decoded, and each leg's level is a sample (a run of packets decoded once a
second, its last ones metered into the two sides' meters). Here ``--calls`` calls' legs
(two a call) are real ``Playout`` objects whose offer says every packet was carried and whose
bus needs no PCM; each tick every leg gets one Opus packet (a 440 Hz tone with a little noise,
48 kHz, FEC on), and the main thread's CPU of that burst is summed (``time.thread_time``),
the bursts 20 ms apart as the bridge's sockets are read (``rtc/udp_poll.py``). ``--no-meters``
leaves the level out (nothing is decoded): the difference is what the sample costs. The meters'
figures are printed with the result: they are the same whichever code ran, bit for bit.

::

    .venv/bin/python -m bench.idle_level [--calls 10] [--ticks 500] [--repeat 3] [--no-meters]

This is a benchmark, not a test: nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.send_path import machine
from bridge.audio.opus import OpusEncoder
from bridge.loop import install_event_loop
from bridge.media import BusStats, LevelMeter
from bridge.rtc.uplink import Playout
from bridge.tasks import TaskSet


def packets(n: int) -> list[bytes]:
    """``n`` 20 ms Opus packets of a 440 Hz tone with a little noise (48 kHz, FEC on)."""
    enc = OpusEncoder(48_000, bitrate=32_000, complexity=5, fec=True, expected_loss=0, dtx=False)
    t = np.arange(960 * n) / 48_000
    noise = 300 * np.random.default_rng(1).standard_normal(t.size)
    pcm = (6000 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.int16)
    return [enc.encode(pcm[i * 960 : (i + 1) * 960]) for i in range(n)]


async def run_once(calls: int, ticks: int, payloads: list[bytes], meters: bool) -> dict[str, Any]:
    """µs of the main thread's CPU a packet, and the first leg's meter."""
    tasks = TaskSet("bench-idle-level")
    legs = []
    for _ in range(2 * calls):
        playout = Playout(lambda pcm: None, BusStats(), tasks)
        playout.forward_to(
            lambda seq, ts, payload, at: True,  # carried
            lambda at: False,  # nothing needs it decoded: idle
            (LevelMeter(), LevelMeter()) if meters else (),
        )
        legs.append(playout)
    spent = 0.0
    for t in range(ticks):
        at = time.monotonic()
        t0 = time.thread_time()
        for playout in legs:
            playout.packet(t & 0xFFFF, (t * 960) & 0xFFFFFFFF, payloads[t % len(payloads)], at)
        spent += time.thread_time() - t0
        await asyncio.sleep(0.02)
    meter = legs[0].idle_meters[0] if meters else LevelMeter()
    for playout in legs:
        playout.stop()
    await tasks.close()
    return {
        "us": spent / (2 * calls * ticks) * 1e6,
        "meter": (meter.samples, meter.energy),
    }


async def run(calls: int, ticks: int, repeat: int, meters: bool) -> dict[str, Any]:
    payloads = packets(500)
    runs = [await run_once(calls, ticks, payloads, meters) for _ in range(repeat)]
    us = [round(r["us"], 2) for r in runs]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "calls": calls,
        "ticks": ticks,
        "meters": meters,
        "us_per_packet": us,
        "median": round(statistics.median(us), 2),
        "meter_samples_energy": runs[-1]["meter"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=500, help="a run's (10 s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-meters", action="store_true", help="no level sample")
    parser.add_argument("--json", type=Path, help="also append the result here (JSON lines)")
    args = parser.parse_args()
    install_event_loop(True)
    result = asyncio.run(run(args.calls, args.ticks, args.repeat, not args.no_meters))
    print(
        f"idle Opus legs: {result['median']:.2f} µs a packet (runs {result['us_per_packet']}); "
        f"a leg's meter {result['meter_samples_energy']}"
    )
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
