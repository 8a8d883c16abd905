"""CPU of idle connected agent legs (issue 49, issue 61): a real bridge process, N aiortc agents
(in this process) each with its socket and its connected leg, idle for S seconds; the bridge's
CPU from /proc/<pid>/stat (utime + stime) over that time, per leg, as a share of one core, less
the same process's CPU with no agent (measured first, over half as long); and its wake-ups per
leg per second (voluntary context switches of all its threads, /proc/<pid>/task/*/status: each
is the event loop going back to sleep once the datagram or timer that woke it is handled).

    python -m bench.idle_legs --legs 20 --seconds 60

``make bench`` runs it last, cheap (10 legs × 20 s: ``--idle-legs 0`` skips) and writes
``bench/results/<stamp>-idle-legs.json``. The agents are aiortc peers: each sends an RTCP
report from its sender and one from its receiver about once a second and an ICE consent check
every ~5 s (a browser sends RTCP every ~5 s), so most of what a leg costs here is the far end's.
This is a benchmark, not a test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bench.quality import write_now
from bridge.rtc import restrict_host_addresses

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wakeups(pid: int) -> int:
    """The process's voluntary context switches so far, all threads."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total


async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read the agent's socket until it closes (its pings answered on the way)."""
    async for _ in ws:
        pass


class Silent(MediaStreamTrack):
    """The agent app's microphone while idle: nothing sent (its sender waits)."""

    kind = "audio"

    async def recv(self):  # type: ignore[override]
        await asyncio.Event().wait()


async def agent(http: aiohttp.ClientSession, base: str, name: str) -> tuple[object, object]:
    async with http.post(f"{base}/agents/tokens", json={"agentID": name}) as r:
        token = (await r.json())["token"]
    ws = await http.ws_connect(f"{base}/agents/connect?token={token}")
    pc = RTCPeerConnection()
    pc.addTrack(Silent())
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send_str(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
    while True:
        msg = json.loads((await ws.receive()).data)
        if msg["type"] == "answer":
            break
    await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
    return ws, pc


async def measure(legs: int, seconds: float) -> dict[str, Any]:
    """Start a bridge, connect ``legs`` idle agents, measure over ``seconds``; the figures."""
    restrict_host_addresses(["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp()
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_ICE_ADDRESSES": "127.0.0.1",
        "BRIDGE_STUN_URLS": "",
        "BRIDGE_DATA_DIR": data,
        "BRIDGE_LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge", env=env)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(base + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)  # started up
            quiet = seconds / 2
            idle0, woke0 = cpu_seconds(proc.pid), wakeups(proc.pid)
            await asyncio.sleep(quiet)
            baseline = (cpu_seconds(proc.pid) - idle0) / quiet
            base_wakeups = (wakeups(proc.pid) - woke0) / quiet
            peers = [await agent(http, base, f"idle{i}") for i in range(legs)]
            # Each socket read as an agent app reads it: aiohttp answers the desk's heartbeat
            # pings only inside receive(), and an unanswered one closes the socket, and the
            # agent's leg with it, ~30 s after it opened (before, longer windows measured
            # dead legs from then on).
            readers = [
                asyncio.create_task(drain(ws), name=f"agent-{i}") for i, (ws, _) in enumerate(peers)
            ]
            await asyncio.sleep(3)  # connected, primed, parked
            ups = sum(1 for _, pc in peers if pc.connectionState == "connected")  # type: ignore[attr-defined]
            t0, w0 = cpu_seconds(proc.pid), wakeups(proc.pid)
            await asyncio.sleep(seconds)
            used = (cpu_seconds(proc.pid) - t0) / seconds
            woke = (wakeups(proc.pid) - w0) / seconds
            up_after = sum(1 for _, pc in peers if pc.connectionState == "connected")  # type: ignore[attr-defined]
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for ws, pc in peers:
                await pc.close()  # type: ignore[attr-defined]
                await ws.close()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "legs": legs,
        "legs_up": ups,
        "legs_up_at_the_end": up_after,
        "seconds": seconds,
        "load_average": os.getloadavg(),
        "cpu_percent": round(100 * used, 3),
        "cpu_percent_no_agent": round(100 * baseline, 3),
        "cpu_percent_per_leg": round(100 * (used - baseline) / legs, 4),
        "wakeups_per_s": round(woke, 1),
        "wakeups_per_s_no_agent": round(base_wakeups, 1),
        "wakeups_per_leg_s": round((woke - base_wakeups) / legs, 2),
    }


def summary(result: dict[str, Any]) -> str:
    r = result
    return (
        f"idle legs: {r['legs_up']}/{r['legs']} up ({r['legs_up_at_the_end']} at the end), "
        f"{r['seconds']:.0f} s idle: bridge CPU "
        f"{r['cpu_percent']:.3f} % of a core ({r['cpu_percent_no_agent']:.3f} % with no agent), "
        f"{r['cpu_percent_per_leg']:.4f} % per idle leg; {r['wakeups_per_leg_s']:.2f} wake-ups "
        f"a second per leg ({r['wakeups_per_s_no_agent']:.1f}/s with no agent); load "
        + "/".join(f"{x:.2f}" for x in r["load_average"])
    )


def run(legs: int, seconds: float, out: Path | None = None) -> dict[str, Any] | None:
    """Measure (unless ``legs`` is 0), print, and write ``out/<stamp>-idle-legs.json``."""
    if legs <= 0:
        return None
    result = asyncio.run(measure(legs, seconds))
    print(summary(result))
    if out is not None:
        write_now(result, out, "idle-legs")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", help="write <stamp>-idle-legs.json here")
    args = parser.parse_args()
    run(args.legs, args.seconds, Path(args.out) if args.out else None)
