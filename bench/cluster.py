"""What the bench needs to measure the bridge with ``BRIDGE_WORKERS`` > 1: a Redis for the
call directory, its workers' settings, and the process tree to sum CPU and memory over."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

SECRET = "bench-internal-secret-0123456789"


async def start_redis(port: int) -> asyncio.subprocess.Process:
    """A loopback ``redis-server`` without persistence (Debian's ``redis-server``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "bench --workers needs redis-server (Debian: apt-get install redis-server; "
            "`make test` installs it)"
        )
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        tempfile.gettempdir(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def worker_env(workers: int, redis_port: int, internal_port: int) -> dict[str, str]:
    return {
        "BRIDGE_WORKERS": str(workers),
        "BRIDGE_DIRECTORY": f"redis://127.0.0.1:{redis_port}/0",
        "BRIDGE_INTERNAL_URL": f"http://127.0.0.1:{internal_port}",
        "BRIDGE_INTERNAL_SECRET": SECRET,
    }


def tree(pid: int) -> list[int]:
    """``pid`` and its children (the supervisor and its workers)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids
