"""Helpers of the multi-instance tests: a real ``redis-server`` and bridge processes on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster import start_redis
from bridge.cluster.redis import RedisDirectory
from bridge.cluster.redis_lease import Lease

from .ports import free_port
from .processes import spawn_bridge, stop_process
from .requires import require

REDIS_SERVER = shutil.which("redis-server")
HOW = "install Debian's redis-server package (`apt-get install redis-server`), or run `make test`"
SECRET = "internal-secret-for-tests-0123456789"


def require_redis() -> None:
    require(REDIS_SERVER is not None, "redis-server", HOW)


class Redis:
    """A ``redis-server`` on a loopback port, without persistence (a restart comes back empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await start_redis(self.port)  # the bench's: the same server, the same flags

    async def stop(self) -> None:
        await stop_process(self.proc)
        self.proc = None


def bridge_env(
    redis: Redis, port: int, internal_port: int, data_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of a bridge process sharing ``redis``, on loopback, with a 2 s
    heartbeat TTL."""
    env = {
        **os.environ,
        "BRIDGE_PORT": str(port),
        "BRIDGE_DIRECTORY": redis.url,
        "BRIDGE_INTERNAL_URL": f"http://127.0.0.1:{internal_port}",
        "BRIDGE_INTERNAL_SECRET": SECRET,
        "BRIDGE_HEARTBEAT_TTL": "2",
        "BRIDGE_ICE_ADDRESSES": "127.0.0.1",
        "BRIDGE_STUN_URLS": "",
        "BRIDGE_SIM_ANSWER_DELAY": "0.1",
        "BRIDGE_DATA_DIR": str(data_dir),
        "BRIDGE_LOG_LEVEL": "warning",
        # With a directory SIGTERM hands calls over by default; these tests stop instances
        # to end them (the handover tests ask for handover themselves).
        "BRIDGE_SHUTDOWN_CALLS": "hangup",
        **extra,
    }
    env.pop("BRIDGE_WORKER_INDEX", None)
    return env


@dataclass
class Bridge:
    """One bridge process (an instance, as on its own machine) sharing the Redis directory."""

    redis: Redis
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    worker_id: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = bridge_env(self.redis, self.port, self.internal_port, self.tmp, **self.env)
        self.proc = await spawn_bridge(env)
        # A bound against a hang, not a speed (as ``wait_healthy``'s): a start of ~2 s alone
        # took over 15 on a host loaded to 9.
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(self.base + "/readyz") as r:
                    body = await r.json()
                    if r.status == 200:
                        self.worker_id = body["directory"]["worker"]
                        return
            except aiohttp.ClientConnectionError:
                pass
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        # Stopped and reaped here, so no transport of it outlives the test's loop; its log
        # says why it never became ready.
        log = await self.stop()
        raise RuntimeError(f"bridge on {self.port} did not become ready: {log[-2000:]}")

    async def stop(self) -> str:
        """Stop it (SIGTERM); its log."""
        if self.proc is None:
            return ""
        await stop_process(self.proc, grace=10)
        assert self.proc.stderr is not None
        log = (await self.proc.stderr.read()).decode()
        # Shown by pytest only when the test fails: what a worker said before it went away.
        tail = "\n".join(log.splitlines()[-40:])
        print(f"\n--- bridge on {self.port} (exit {self.proc.returncode}), its log's end:\n{tail}")
        return log


async def start_bridges(session: aiohttp.ClientSession, *bridges: Bridge) -> None:
    """Start instances side by side: a start is mostly a process importing and binding (~1.5 s
    alone, several seconds on a loaded host), which the others need not wait for. If any
    fails, all are stopped before its failure is raised (no process outlives the test)."""
    started = await asyncio.gather(*(b.start(session) for b in bridges), return_exceptions=True)
    failed = [r for r in started if isinstance(r, BaseException)]
    if failed:
        await asyncio.gather(*(b.stop() for b in bridges))
        raise failed[0]


class Http:
    """The client interface RtcClient needs, over a real session to one instance."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    def post(self, path: str, **kw: Any) -> Any:
        return self.session.post(self.base + path, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.session.get(self.base + path, **kw)


async def sse_events(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None
) -> AsyncIterator[dict[str, str]]:
    """Each SSE event of ``base``'s ``/call/events`` as ``{id, event, data}``."""
    async with session.get(
        base + "/call/events", headers=headers or {}, timeout=aiohttp.ClientTimeout(total=None)
    ) as resp:
        assert resp.status == 200
        fields: dict[str, str] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in fields:
                    yield fields
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def post(session: Any, base: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """``POST`` JSON to one instance: the status and the JSON answer."""
    async with session.post(base + path, json=body) as r:
        return r.status, await r.json()


async def get(session: Any, base: str, path: str) -> tuple[int, Any]:
    """``GET`` from one instance: the status and the JSON answer."""
    async with session.get(base + path) as r:
        return r.status, await r.json()


async def wait_call(
    session: Any, base: str, call_id: str, state: str, timeout: float = 10
) -> dict[str, Any]:
    """The call's snapshot once it is in ``state`` on that instance (bounded by ``timeout``).

    A connection refused or reset counts as "not yet": with ``SO_REUSEPORT`` a connection the
    kernel queued on a worker that has just died is reset, and the next one reaches a live one."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, call = await get(session, base, f"/call/{call_id}")
        except aiohttp.ClientConnectionError as exc:
            status, call = 0, {"error": repr(exc)}
        if status == 200 and call.get("state") == state:
            return call  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, (status, call)
        await asyncio.sleep(0.05)


async def _nothing() -> None:
    return None


def worker_lease(
    redis: Any,
    heartbeat_ttl: float,
    *,
    calls: int = 0,
    end_local_calls: Callable[[], Awaitable[None]] = _nothing,
) -> Lease:
    """Worker ``w1``'s lease on ``redis`` (a real client or a stand-in), with ``calls`` live
    calls and nothing to write again when Redis comes back."""
    return Lease(
        redis,
        worker_id="w1",
        url="http://127.0.0.1:1",
        heartbeat_ttl=heartbeat_ttl,
        max_calls=10,
        calls=lambda: calls,
        catch_up=_nothing,
        end_local_calls=end_local_calls,
        stopping=lambda: False,
    )


async def _ignored(*args: Any) -> None:
    return None


def worker_directory(url: str, worker_id: str = "w1", **overrides: Any) -> RedisDirectory:
    """Worker ``worker_id``'s directory on the Redis at ``url`` (not started): no calls of its
    own, nothing done for lost ones, unless ``overrides`` (``RedisDirectory``'s keywords) say."""
    settings: dict[str, Any] = {
        "internal_url": "http://127.0.0.1:1",
        "heartbeat_ttl": 5.0,
        "ended_ttl": 60,
        "backlog": 100,
        "max_calls": 10,
        "local_calls": list,
        "end_lost_call": _ignored,
        "end_local_calls": _ignored,
    }
    settings.update(overrides)
    return RedisDirectory(url, worker_id=worker_id, **settings)
