"""Wake-ups of an idle worker (no calls): a real bridge process, started and left alone; how
often its event loop wakes over ``--seconds`` (10 by default), counted two ways:

- ``epoll_wait`` calls of its threads (``strace -f -c -e trace=epoll_wait``, attached for the
  window): each is the loop going back to sleep once the timer or socket that woke it is
  handled, so their rate is the loop's wake-ups (where strace may attach: else ``null``);
- the voluntary context switches of its main thread (``/proc/<pid>/task/<pid>/status``): the
  same wake-ups seen by the kernel, without strace.

    python -m bench.idle_worker --seconds 10

What wakes an idle worker is its periodic upkeep: the watchdog, the reports' sampler, the
event-loop lag monitor, the presence lease, the switchboard's closer... each parked until a call
needs it is a wake-up saved (docs/performance.md, *An idle worker*). This is a benchmark, not
a test: nothing here asserts on speed (``tests/integration/test_idle_worker.py`` checks the
samplers are parked).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.idle_legs import cpu_seconds
from bench.quality import write_now


def main_thread_switches(pid: int) -> int:
    """The voluntary context switches of the process's main thread (its event loop) so far."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    return 0


async def epoll_waits(pid: int, seconds: float) -> int | None:
    """``epoll_wait`` calls of ``pid``'s threads over ``seconds`` (strace attached), or
    ``None`` where strace is missing or may not attach."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        strace,
        "-f",
        "-c",
        "-e",
        "trace=epoll_wait,epoll_pwait",
        "-p",
        str(pid),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(seconds)
    proc.send_signal(2)  # SIGINT: strace detaches and prints its table
    _, err = await proc.communicate()
    calls = 0
    for line in err.decode(errors="replace").splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(epoll_p?wait)$", line)
        if m:
            calls += int(m.group(1))
    return calls if "epoll" in err.decode(errors="replace") else None


async def measure(seconds: float) -> dict[str, Any]:
    """Start a bridge with no calls, let it settle, count its wake-ups over ``seconds``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_ICE_ADDRESSES": "127.0.0.1",
        "BRIDGE_STUN_URLS": "",
        "BRIDGE_DATA_DIR": tempfile.mkdtemp(),
        "BRIDGE_LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", env=env)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # started up: its start-up work is over
        # The kernel's count first, alone (strace's stops would add their own switches).
        c0, s0 = cpu_seconds(proc.pid), main_thread_switches(proc.pid)
        await asyncio.sleep(seconds)
        used = cpu_seconds(proc.pid) - c0
        switches = main_thread_switches(proc.pid) - s0
        polls = await epoll_waits(proc.pid, seconds)
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "seconds": seconds,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "load_average": os.getloadavg(),
        "epoll_waits_per_s": None if polls is None else round(polls / seconds, 1),
        "main_thread_switches_per_s": round(switches / seconds, 1),
        "cpu_percent": round(100 * used / seconds, 3),
    }


def summary(r: dict[str, Any]) -> str:
    polls = r["epoll_waits_per_s"]
    return (
        f"idle worker, {r['seconds']:.0f} s: "
        f"{'-' if polls is None else polls} epoll_wait/s, "
        f"{r['main_thread_switches_per_s']} main-thread switches/s, "
        f"CPU {r['cpu_percent']:.3f} % of a core; load "
        + "/".join(f"{x:.2f}" for x in r["load_average"])
    )


def run(seconds: float, out: Path | None = None) -> dict[str, Any]:
    """Measure, print, and write ``out/<stamp>-idle-worker.json``."""
    result = asyncio.run(measure(seconds))
    print(summary(result))
    if out is not None:
        write_now(result, out, "idle-worker")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", help="write <stamp>-idle-worker.json here")
    args = parser.parse_args()
    run(args.seconds, Path(args.out) if args.out else None)
