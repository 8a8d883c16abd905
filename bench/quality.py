"""``make quality``: how the bridge sounds, scored with PESQ-WB (ITU-T P.862.2) on speech.

Three parts (issues 23 and 37):

* ``--encoder-curve``: libopus at 16 kHz, offline, complexity 0-10 × bitrate × in-band FEC,
  PESQ-WB and µs per frame (``bench/encoder_curve.py``). Picks the bridge's encoder defaults;
  ``--celt-curve``: the same for CELT-only at 56-96 kbit/s (the clean-link setting).
* ``--loss-curve``: the downlink's protection settings (bit rate, complexity, in-band FEC's
  planned loss, RED depth), offline, under seeded random loss and bursts, scored with an ideal
  FEC/RED/PLC receiver (``bench/encoder_curve.py``). Picks the protected encoder settings.
* the paths (default): speech through real bridge processes and real aiortc peers on loopback,
  every path under seeded network profiles applied on the wire, each next to an ideal receiver
  fed the very same packets (``bench/quality_paths.py``). ``--quick``: the loss and jitter
  profiles without the minute-long drift ones.
* ``--phones`` (also part of the default run): a phone on a SIP trunk (issue 61), PCMU and
  Opus, through the trunk leg's receiver on a simulated clock under seeded profiles, next to
  an ideal receiver fed the same packets, with the receiver's delay and CPU
  (``bench/phone_quality.py``).
* ``--chromium`` (also part of the default run): a real Chromium speaking into a call through
  a real bridge process under seeded profiles, next to an ideal receiver fed Chromium's own
  frames (``bench/chromium_quality.py``).

Writes ``bench/results/quality-<date>.json`` (``quality-encoder-<date>.json`` for the curve)
and prints Markdown tables for ``docs/quality.md``. A benchmark, not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.speech import espeak_version, missing_tools, speech

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def stamped(kind: str) -> dict[str, Any]:
    """A result's first fields: what it is, when, and on what machine."""
    return {
        "kind": kind,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    import aiortc
    import av
    import numpy

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "av": av.__version__,
        "numpy": numpy.__version__,
        "pesq": version("pesq"),
        "espeak_ng": espeak_version(),
        "load_1min": os.getloadavg()[0],
    }


def write(result: dict[str, Any], out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def write_now(result: dict[str, Any], out: Path, kind: str) -> Path:
    """``result`` to ``out/<local time stamp>-<kind>.json``, said on stdout."""
    path = write(result, out, time.strftime("%Y%m%d-%H%M%S") + f"-{kind}.json")
    print(f"wrote {path}")
    return path


def record(
    args: argparse.Namespace, kind: str, name: str, reference: Any, t0: float, **fields: Any
) -> None:
    """Write one part's result, stamped, to ``quality-<name>-<date>.json`` (``name`` empty:
    ``quality-<date>.json``) and say where."""
    result = {
        **stamped(kind),
        "speech_seconds": round(reference.size / 16_000, 2),
        "run_seconds": round(time.monotonic() - t0, 1),
        **fields,
    }
    stem = f"quality-{name}-" if name else "quality-"
    path = write(result, Path(args.out), f"{stem}{time.strftime('%Y%m%d')}.json")
    print(f"wrote {path} ({result['run_seconds']} s)")


def run_encoder_curve(args: argparse.Namespace) -> None:
    from bench.encoder_curve import celt_curve, curve, table

    reference = speech(args.seconds)
    t0 = time.monotonic()
    rows = celt_curve(reference) if args.celt_curve else curve(reference)
    print(table(rows))
    name = "celt" if args.celt_curve else "encoder"
    record(args, "encoder-curve", name, reference, t0, rows=rows)


def run_loss_curve(args: argparse.Namespace) -> None:
    from bench.encoder_curve import loss_curve, loss_table

    reference = speech(args.seconds)
    t0 = time.monotonic()
    rows = loss_curve(reference)
    print(loss_table(rows))
    record(args, "loss-curve", "loss", reference, t0, rows=rows)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def paths_table(paths: dict[str, Any]) -> str:
    """Markdown: one row per profile, each direction's score next to the ideal receiver's."""
    out = [
        "| network | browser → engine: bridge | ideal receiver | ideal, PLC only "
        "| receiver delay ms | engine → browser | bridge transit ms | bridge CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in paths.items():
        if name in ("echo", "cloudapi", "cloudapi_transcoded"):
            continue
        up, down = r["uplink"], r["downlink"]
        out.append(
            f"| {name} | {up['bridge']:.2f} | {up['ideal']:.2f} | {up['ideal_plc_only']:.2f} "
            f"| {_ms(up.get('receiver_delay_ms'))} | {down['bridge']:.2f} "
            f"| {_ms(down.get('bridge_transit_ms'))} | {r['bridge_cpu_percent']:.1f} % |"
        )
    down = downlink_table(paths)
    if down:
        out += ["", down]
    if "echo" in paths:
        out.append("")
        out.append(
            f"Echo round trip (browser → sim echo → browser), clean: "
            f"{paths['echo']['round_trip']['bridge']:.2f}"
        )
    if "cloudapi" in paths:
        out.append("")
        out.append(
            "| Cloud API call, clean | mode | through the bridge | the sender's own packets "
            "| bridge CPU |"
        )
        out.append("|---|---|---|---|---|")
        for key, mode in (("cloudapi", "pass-through"), ("cloudapi_transcoded", "transcoding")):
            if key not in paths:
                continue
            c = paths[key]
            w2b, b2w = c["whatsapp_to_browser"], c["browser_to_whatsapp"]
            cpu = f"{c['bridge_cpu_percent']:.1f} %"
            out.append(
                f"| WhatsApp → browser | {mode} | {w2b['bridge']:.2f} "
                f"| {w2b['whatsapp_packets']:.2f} | {cpu} |"
            )
            out.append(
                f"| browser → WhatsApp | {mode} | {b2w['bridge']:.2f} "
                f"| {b2w['browser_packets']:.2f} | |"
            )
    return "\n".join(out)


def downlink_table(paths: dict[str, Any]) -> str:
    """Markdown: the downlink under each loss profile, to a browser without RED (in-band FEC)
    and to one that offers it, next to the uplink's ideal receiver under the same loss, with
    the payload bit rate the bridge sent and its CPU."""
    rows = [
        "| network | engine → browser, FEC | PLC only | kbit/s | CPU | browser offering RED "
        "| kbit/s | CPU | browser → engine, ideal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in paths.items():
        red = r.get("downlink_red") if isinstance(r, dict) else None
        if red is None:
            continue
        down = r["downlink"]
        rows.append(
            f"| {name} | {down['bridge']:.2f} | {down['ideal_plc_only']:.2f} "
            f"| {down['payload_kbps']:.1f} | {r['bridge_cpu_percent']:.1f} % | {red['bridge']:.2f} "
            f"| {red['payload_kbps']:.1f} | {r['bridge_cpu_percent_red']:.1f} % "
            f"| {r['uplink']['ideal']:.2f} |"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def run_paths(args: argparse.Namespace) -> None:
    import asyncio

    from bench.chromium_quality import DEFAULT_PROFILES as CHROMIUM_PROFILES
    from bench.chromium_quality import chromium_rows, chromium_table
    from bench.phone_quality import phones_table, run_phones
    from bench.quality_paths import PROFILES
    from bench.quality_paths import run_paths as run

    reference = speech(args.seconds)
    names = [n for n in PROFILES if not (args.quick and PROFILES[n].drift_ppm)]
    if args.profiles:
        names = args.profiles.split(",")
    t0 = time.monotonic()
    paths = asyncio.run(run(reference, names, seed=args.seed, cloudapi=True))
    phones = run_phones(reference, seed=args.seed)
    chromium = asyncio.run(chromium_rows(reference, list(CHROMIUM_PROFILES), seed=args.seed))
    print(paths_table(paths))
    print()
    print(phones_table(phones))
    print()
    print(chromium_table(chromium))
    record(
        args,
        "paths",
        "",
        reference,
        t0,
        seed=args.seed,
        paths=paths,
        phones=phones,
        chromium=chromium,
    )


def run_phone_rows(args: argparse.Namespace) -> None:
    from bench.phone_quality import PHONE_PROFILES, TIMER, phones_table, run_phones

    reference = speech(args.seconds)
    names = args.profiles.split(",") if args.profiles else list(PHONE_PROFILES)
    t0 = time.monotonic()
    phones = run_phones(reference, names, seed=args.seed)
    print(phones_table(phones))
    record(
        args,
        "phones",
        "phones",
        reference,
        t0,
        seed=args.seed,
        timer_jitter_s=TIMER,
        phones=phones,
    )


def run_chromium_rows(args: argparse.Namespace) -> None:
    import asyncio

    from bench.chromium_quality import DEFAULT_PROFILES, chromium_rows, chromium_table

    reference = speech(args.seconds)
    names = args.profiles.split(",") if args.profiles else list(DEFAULT_PROFILES)
    t0 = time.monotonic()
    rows = asyncio.run(chromium_rows(reference, names, seed=args.seed))
    print(chromium_table(rows))
    record(args, "chromium", "chromium", reference, t0, seed=args.seed, chromium=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--encoder-curve", action="store_true", help="only the offline encoder curve"
    )
    parser.add_argument(
        "--celt-curve",
        action="store_true",
        help="only the offline curve of the clean-link choice: CELT-only at 56-96 kbit/s "
        "next to SILK at 40 and 64 kbit/s",
    )
    parser.add_argument(
        "--loss-curve",
        action="store_true",
        help="only the downlink's FEC/RED settings under loss, offline (~1 min)",
    )
    parser.add_argument(
        "--phones",
        action="store_true",
        help="only a phone on a SIP trunk: PCMU and Opus through the trunk leg's receiver, "
        "offline (~15 s)",
    )
    parser.add_argument(
        "--chromium",
        action="store_true",
        help="only a real Chromium speaking through a real bridge under seeded profiles (~5 min)",
    )
    parser.add_argument("--seconds", type=float, default=16.0, help="speech length")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="no minute-long drift profiles")
    parser.add_argument("--profiles", default="", help="comma-separated profile names")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit("the quality bench needs: " + "; ".join(missing))
    if args.encoder_curve or args.celt_curve:
        run_encoder_curve(args)
        return
    if args.loss_curve:
        run_loss_curve(args)
        return
    if args.phones:
        run_phone_rows(args)
        return
    if args.chromium:
        run_chromium_rows(args)
        return
    run_paths(args)


if __name__ == "__main__":
    main()
