"""The engine-delay part of ``make bench``: how much delay the remote PCM engine path adds
whatever the engine's clock (issue 61).

One call at a time, its click timed from outside (``bench/loadgen.py``'s probe: RTP sent →
its echo's RTP back at the load generator), through the bridge on ``BRIDGE_ENGINE=zuckzapgo``
against ``bench/zuckzapgo_echo.py`` in each of its unkind ways (as it receives; on its own 60 ms
clock at three phases; drifting ±300 ppm), and through a bare aiortc echo server in the same
run. Each case's figure is its click round trip (p50) minus the bare echo's; a clocked engine's
is the worst of its phases. Run alone with ``python -m bench.engine_delay`` or, by default,
after the sweep of ``python -m bench.run`` (``--engine-delay none`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality import write_now
from bench.run import (
    PCM_ENGINE,
    RESULTS,
    run_point,
    start_pcm_engine,
    start_server,
    stop,
    tree_rss_bytes,
)
from tests.support.ports import free_port

KINDS = ("as-received", "clocked", "drift")
"""The engine kinds measured by default (``bench/zuckzapgo_echo.py`` ``EchoKind``)."""
PHASES = 3
"""Phases of a clocked engine measured (its figure is the worst)."""
DRIFT_PPM = (300.0, -300.0)


@dataclass(frozen=True)
class Case:
    """One engine to measure: its name in the report and its ``zuckzapgo_echo`` arguments."""

    name: str
    kind: str
    argv: tuple[str, ...]


def cases(kinds: list[str], seed: int) -> list[Case]:
    """The cases of ``kinds``: a clocked engine at :data:`PHASES` phases drawn from ``seed``
    (its socket opens at no set point of the bridge's clock, so a phase names no offset to
    it: drawing several is what covers them), a drifting one at each of :data:`DRIFT_PPM`."""
    rng = random.Random(seed)
    out = []
    for kind in kinds:
        if kind == "as-received":
            out.append(Case(kind, kind, ("--kind", kind)))
        elif kind == "clocked":
            for _ in range(PHASES):
                phase = f"{rng.uniform(0.0, 0.06):.4f}"
                out.append(Case(f"clocked@{phase}", kind, ("--kind", kind, "--phase", phase)))
        elif kind == "drift":
            for ppm in DRIFT_PPM:
                argv = ("--kind", kind, "--ppm", f"{ppm:+g}")
                out.append(Case(f"drift{ppm:+g}ppm", kind, argv))
        else:
            raise ValueError(f"unknown engine kind {kind!r} (of {', '.join(KINDS)})")
    return out


async def click_rtt(target: str, warmup: float, window: float, case: Case | None) -> dict:
    """One call through ``target`` (``echo``, or the bridge against ``case``'s engine): its
    click round trip p50/p99 (ms) and, for the bridge, what its sink did."""
    port = free_port()
    engine = None
    engine_port = 0
    if case is not None:
        engine_port = free_port()
        engine = await start_pcm_engine(engine_port, list(case.argv))
    try:
        proc = await start_server(target, port, engine_port)
        try:
            await asyncio.sleep(1.0)
            point = await run_point(
                target,
                proc,
                f"http://127.0.0.1:{port}",
                1,
                warmup,
                window,
                tree_rss_bytes(proc.pid),
            )
        finally:
            await stop(proc)
    finally:
        if engine is not None:
            await stop(engine)
    keep = ("clicks", "click_rtt_p50_ms", "click_rtt_p99_ms", "downlink_on_time", "engine_sinks")
    return {k: point[k] for k in keep if k in point}


async def measure(
    kinds: list[str], warmup: float, window: float, rounds: int, seed: int
) -> dict[str, Any]:
    """Each case and the bare echo, ``rounds`` times (alternating, so each difference pairs
    points measured next to each other): the differences, their median and spread."""
    load_at_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for round_ in range(rounds):
        echo = await click_rtt("echo", warmup, window, None)
        print(f"  echo  round {round_}: click p50 {echo.get('click_rtt_p50_ms')} ms", flush=True)
        for case in cases(kinds, seed + round_):
            got = await click_rtt(PCM_ENGINE, warmup, window, case)
            rtt, bare = got.get("click_rtt_p50_ms"), echo.get("click_rtt_p50_ms")
            added = None if rtt is None or bare is None else rtt - bare
            row = {"case": case.name, "kind": case.kind, "round": round_, **got}
            row["echo_click_rtt_p50_ms"] = bare
            row["added_ms"] = added
            rows.append(row)
            shown = "-" if added is None else f"{added:+.1f}"
            print(f"  {case.name:18} round {round_}: {shown} ms vs the bare echo", flush=True)
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
        "summary": summary(rows),
        "load_at_start": load_at_start,
        "load_at_end": os.getloadavg(),
        "warmup_s": warmup,
        "window_s": window,
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: the worst case of each round (a clocked engine's worst phase, a drifting
    one's worse sign), then the median, least and most of those over the rounds (ms)."""
    worst: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["added_ms"] is None:
            continue
        by_round = worst.setdefault(row["kind"], {})
        r = row["round"]
        by_round[r] = max(by_round.get(r, row["added_ms"]), row["added_ms"])
    out = {}
    for kind, by_round in worst.items():
        v = sorted(by_round.values())
        out[kind] = {"median_ms": v[len(v) // 2], "min_ms": v[0], "max_ms": v[-1]}
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["engine delay: click round trip minus a bare aiortc echo's (p50, ms)"]
    lines.append(f"  {'kind':12} {'median':>8} {'min':>8} {'max':>8}  (worst case of a round)")
    for kind, s in result["summary"].items():
        lines.append(f"  {kind:12} {s['median_ms']:+8.1f} {s['min_ms']:+8.1f} {s['max_ms']:+8.1f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, *, flag: str) -> None:
    parser.add_argument(
        flag,
        default=",".join(KINDS),
        help=f"engine kinds to time ({', '.join(KINDS)}; 'none' skips)",
    )
    parser.add_argument("--engine-delay-rounds", type=int, default=1)
    parser.add_argument("--engine-delay-seed", type=int, default=61)


def run(
    kinds: str, rounds: int, seed: int, out: Path, warmup: float = 3.0, window: float = 10.0
) -> dict[str, Any] | None:
    """Measure (unless ``kinds`` is ``none``), write ``out/<stamp>-engine-delay.json``, print."""
    if kinds == "none":
        return None
    result = asyncio.run(measure(kinds.split(","), warmup, window, rounds, seed))
    print(table(result))
    write_now(result, out, "engine-delay")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, flag="--kinds")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    run(
        args.kinds,
        args.engine_delay_rounds,
        args.engine_delay_seed,
        Path(args.out),
        args.warmup,
        args.window,
    )


if __name__ == "__main__":
    main()
