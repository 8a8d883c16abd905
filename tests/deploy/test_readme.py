"""The README's curl walk-through runs as written against a live bridge."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from ..support.ports import free_port
from ..support.processes import spawn_bridge, stop_process
from ..support.requires import require

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A call, with curl") :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


async def test_curl_walkthrough_runs_as_written(tmp_path) -> None:
    require(
        bool(shutil.which("curl") and shutil.which("jq")),
        "curl and jq",
        "apt-get install curl jq (make test installs them)",
    )
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_ICE_ADDRESSES": "127.0.0.1",
        "BRIDGE_STUN_URLS": "",
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_LOG_LEVEL": "warning",
    }
    bridge = await spawn_bridge(env, stderr=asyncio.subprocess.DEVNULL)
    try:
        script = walkthrough().replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
        # Wait for the bridge like a reader would (it is up in well under a second).
        health = f"http://127.0.0.1:{port}/healthz"
        ready = f"for i in $(seq 100); do curl -sfo /dev/null {health} && break; sleep 0.1; done\n"
        shell = await asyncio.create_subprocess_exec(
            "bash",
            "-eu",
            "-c",
            ready + script,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(shell.communicate(), 60)
    finally:
        await stop_process(bridge)
    text = out.decode()
    assert shell.returncode == 0, (text, err.decode())
    lines = text.splitlines()
    assert re.search(r"^call [0-9a-f]{32}$", text, re.M), text
    assert "v=0" in lines and any(ln.startswith('{"state":') for ln in lines), text
    assert "event: call.muted" in lines and "event: call.ended" in lines, text  # SSE spoke
    assert "true" in lines and "ended hangup" in lines and "active" in lines, text
    assert "hangup" in lines
