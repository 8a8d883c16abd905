"""CPU of idle connected agent legs (issue 49): a real bridge process, N aiortc agents (in this
process) each with its socket and its connected leg, idle for S seconds; the bridge's CPU from
/proc/<pid>/stat (utime + stime) over that time, per leg, as a share of one core.

    python -m bench.idle_legs --legs 20 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import tempfile

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from bridge.rtc import restrict_host_addresses

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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


async def main(legs: int, seconds: float) -> None:
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
            idle0 = cpu_seconds(proc.pid)
            await asyncio.sleep(seconds / 4)
            baseline = (cpu_seconds(proc.pid) - idle0) / (seconds / 4)
            peers = [await agent(http, base, f"idle{i}") for i in range(legs)]
            await asyncio.sleep(3)  # connected, primed, parked
            ups = sum(1 for _, pc in peers if pc.connectionState == "connected")  # type: ignore[attr-defined]
            t0 = cpu_seconds(proc.pid)
            await asyncio.sleep(seconds)
            used = (cpu_seconds(proc.pid) - t0) / seconds
            print(
                f"{ups}/{legs} legs up, {seconds:.0f} s idle: bridge CPU {100 * used:.3f} % of a "
                f"core ({100 * baseline:.3f} % with no agent), "
                f"{100 * (used - baseline) / legs:.4f} % per idle leg"
            )
            for ws, pc in peers:
                await pc.close()  # type: ignore[attr-defined]
                await ws.close()  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--legs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    asyncio.run(main(args.legs, args.seconds))
