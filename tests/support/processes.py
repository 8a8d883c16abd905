"""Processes the tests start: the bridge itself (``python -m bridge``), stopped by pid."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


async def stop_process(proc: asyncio.subprocess.Process | None, grace: float = 5.0) -> None:
    """Stop a process a test started (SIGTERM, then SIGKILL after ``grace``), by its pid."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def spawn_bridge(
    env: dict[str, str] | None = None,
    *args: str,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """``python -m bridge [args]`` from the repository root with ``env`` (default: this
    process's); stdout dropped and stderr (its log) piped unless told otherwise."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        env=env,
        cwd=ROOT,
        stdout=stdout,
        stderr=stderr,
    )


async def wait_healthy(base: str, timeout: float = 30.0) -> None:
    """Poll ``base``/healthz until it answers 200 (a bridge process is up). The bound is
    against a hang, not a speed: a start that takes ~2 s alone took over 10 on a host loaded
    to 5."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(base + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{base} never became healthy")
            await asyncio.sleep(0.05)
