"""The strict fake models of ``bench.agents`` in a process of their own, as a real provider runs
on a machine of its own: their JSON, base64, sockets and clocks are not counted as the bridge's
CPU, and their bursts do not stall the bridge's event loop.

    python -m bench.agent_fakes      (started by :class:`FakeHost`, never by hand)

One process serves every call's fake (``tests/fakes/``, unchanged: each keeps its own clock and
sends as the real service does) on 127.0.0.1, and is driven over its stdin/stdout, one JSON
object a line, each request answered by its ``id`` (several may be in flight):

- ``start`` ``{fake, n, api_key}``: ``n`` fakes of ``module:Class``, each on its own port;
  answers ``{ports}``;
- ``act`` ``{leg, method, args, kwargs, tone}``: awaits ``fake.method(*args, **kwargs)``
  (``tone``: the arguments of :func:`bridge.audio.tone`, the PCM passed first); answers ``{at}``,
  the ``time.monotonic()`` just before the call (when the fake acted, not when it was asked);
- ``get`` ``{leg, names}``: the fake's attributes (JSON values);
- ``drop`` ``{leg, timeout}``: ``fake.drop()``, then waits for a new socket and the caller's
  first chunk on it; answers ``{at, n, first}``: when it dropped, the caller's chunks before,
  that chunk's arrival (``null``: none within ``timeout``);
- ``cancelled`` ``{leg, n, timeout}``: waits for a cancel beyond the first ``n``; answers
  ``{at}`` (``null``: none came);
- ``caller_audio`` ``{leg, n, peak}``: the first ``n`` chunks' arrivals and whether each is
  louder than ``peak`` (the chunks themselves stay here);
- ``clock``: ``{monotonic, cpu}``, this process's ``time.monotonic()`` and CPU seconds;
- ``stop``: closes every server and exits (so does the end of stdin).

``time.monotonic()`` is ``CLOCK_MONOTONIC`` on Linux, one clock for every process of the host,
so the fakes' times and the bridge's compare as they did in one process (:meth:`FakeHost.start`
checks it once).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestServer

from bridge.audio import tone

POLL_S = 0.01
"""How often a wait looks at its fake (as ``bench.agents`` polled it in one process)."""


class FakeHost:
    """The bench's side: the fakes' process and its control channel (owned: :meth:`close`)."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0

    async def start(self, fake: str, n: int, api_key: str) -> list[int]:
        """Starts the process with ``n`` fakes of ``fake``; their ports."""
        root = Path(__file__).resolve().parents[1]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.agent_fakes",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=root,
            env=env,
            limit=16 << 20,
        )
        self._reader = asyncio.create_task(self._read(), name="agent-fakes-reader")
        before = time.monotonic()
        seen = (await self.request("clock"))["monotonic"]
        after = time.monotonic()
        # The measures subtract the fakes' times from the bridge's: one clock, or nothing holds.
        assert before <= seen <= after, ("CLOCK_MONOTONIC differs between processes", before, seen)
        return list((await self.request("start", fake=fake, n=n, api_key=api_key))["ports"])

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            while line := await self._proc.stdout.readline():
                answer = json.loads(line)
                future = self._waiting.pop(answer.pop("id"), None)
                if future is not None and not future.done():
                    if "error" in answer:
                        future.set_exception(RuntimeError(f"the fakes' process: {answer['error']}"))
                    else:
                        future.set_result(answer)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(RuntimeError("the fakes' process ended"))
            self._waiting.clear()

    async def request(self, op: str, **body: Any) -> dict[str, Any]:
        """One request; its answer."""
        assert self._proc is not None and self._proc.stdin is not None
        self._ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._ids] = future
        self._proc.stdin.write(json.dumps({"id": self._ids, "op": op, **body}).encode() + b"\n")
        await self._proc.stdin.drain()
        return await future

    async def cpu(self) -> float:
        """The fakes' process's CPU seconds so far."""
        return float((await self.request("clock"))["cpu"])

    async def close(self) -> None:
        """Stops the process (its servers closed first) and the reader; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(b'{"id": 0, "op": "stop"}\n')
                proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 10)
        except (TimeoutError, ConnectionError):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader


class RemoteFake:
    """One call's fake as ``bench.agents`` drives it: the fake's hooks (tests/fakes/common.py
    ``CallerAudioLog``) across the process boundary."""

    def __init__(self, host: FakeHost, leg: int) -> None:
        self.host = host
        self.leg = leg

    async def act(
        self, method: str, *args: Any, pcm_tone: tuple[Any, ...] | None = None, **kwargs: Any
    ) -> float:
        """``fake.method(...)`` awaited; when it began (monotonic)."""
        answer = await self.host.request(
            "act", leg=self.leg, method=method, args=args, kwargs=kwargs, tone=pcm_tone
        )
        return float(answer["at"])

    async def get(self, *names: str) -> dict[str, Any]:
        return (await self.host.request("get", leg=self.leg, names=names))["values"]

    async def drop_and_reconnected(self, timeout: float) -> tuple[float, int, float | None]:
        """The socket dropped; when (monotonic), the caller's chunks before it, and the arrival
        of the caller's first chunk on the socket the bridge opened again (``None``: none within
        ``timeout``)."""
        answer = await self.host.request("drop", leg=self.leg, timeout=timeout)
        return float(answer["at"]), int(answer["n"]), answer["first"]

    async def cancelled(self, n: int, timeout: float) -> float | None:
        answer = await self.host.request("cancelled", leg=self.leg, n=n, timeout=timeout)
        return answer["at"]

    async def caller_audio(self, n: int, peak: int) -> tuple[list[float], list[bool]]:
        answer = await self.host.request("caller_audio", leg=self.leg, n=n, peak=peak)
        return answer["arrived"], answer["loud"]


class Served:
    """The fakes' process: every call's fake and its server."""

    def __init__(self) -> None:
        self.fakes: list[Any] = []
        self.servers: list[TestServer] = []

    async def start(self, fake: str, n: int, api_key: str) -> dict[str, Any]:
        module, name = fake.split(":")
        kind = getattr(import_module(f"tests.fakes.{module}"), name)
        for _ in range(n):
            self.fakes.append(kind(api_key=api_key))
            self.servers.append(TestServer(self.fakes[-1].app()))
            await self.servers[-1].start_server()
        return {"ports": [s.port for s in self.servers]}

    async def act(
        self, leg: int, method: str, args: list[Any], kwargs: dict[str, Any], tone_args: Any
    ) -> dict[str, Any]:
        if tone_args is not None:
            args = [tone(*tone_args), *args]
        at = time.monotonic()
        await getattr(self.fakes[leg], method)(*args, **kwargs)
        return {"at": at}

    def get(self, leg: int, names: list[str]) -> dict[str, Any]:
        return {"values": {k: getattr(self.fakes[leg], k) for k in names}}

    async def drop(self, leg: int, timeout: float) -> dict[str, Any]:
        fake = self.fakes[leg]
        n, connections = len(fake.arrived), fake.connections
        at = time.monotonic()
        await fake.drop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fake.connections > connections:
                # The caller's first chunk on the new socket (a continuous uplink keeps adding
                # to ``arrived``: not the last one seen when this poll woke).
                first = next((t for t in fake.arrived[n:] if t >= fake.opened[-1]), None)
                if first is not None:
                    return {"at": at, "n": n, "first": first}
            await asyncio.sleep(POLL_S)
        return {"at": at, "n": n, "first": None}

    async def cancelled(self, leg: int, n: int, timeout: float) -> dict[str, Any]:
        fake = self.fakes[leg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(fake.cancelled) > n:
                return {"at": fake.cancelled[-1]}
            await asyncio.sleep(POLL_S)
        return {"at": None}

    def caller_audio(self, leg: int, n: int, peak: int) -> dict[str, Any]:
        fake = self.fakes[leg]
        loud = [
            bool(np.abs(np.frombuffer(c, dtype="<i2")).max(initial=0) > peak)
            for c in fake.chunks[:n]
        ]
        return {"arrived": fake.arrived[:n], "loud": loud}

    async def close(self) -> None:
        for server in self.servers:
            await server.close()

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        op = body.pop("op")
        if op == "clock":
            return {"monotonic": time.monotonic(), "cpu": time.process_time()}
        if op == "start":
            return await self.start(body["fake"], body["n"], body["api_key"])
        if op == "act":
            return await self.act(
                body["leg"], body["method"], body["args"], body["kwargs"], body["tone"]
            )
        if op == "get":
            return self.get(body["leg"], body["names"])
        if op == "drop":
            return await self.drop(body["leg"], body["timeout"])
        if op == "cancelled":
            return await self.cancelled(body["leg"], body["n"], body["timeout"])
        if op == "caller_audio":
            return self.caller_audio(body["leg"], body["n"], body["peak"])
        raise ValueError(f"unknown op {op!r}")


async def serve() -> None:
    """Answers the bench's requests on stdin until ``stop`` or its end."""
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader(limit=16 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # a stray print must not break the channel
    served = Served()
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: dict[str, Any]) -> None:
        ident = body.pop("id")
        try:
            answer = await served.answer(body)
        except Exception as e:  # the bench shows it, with the request that failed
            answer = {"error": f"{type(e).__name__}: {e} (in {body})"}
        out.write(json.dumps({"id": ident, **answer}).encode() + b"\n")
        out.flush()

    try:
        while line := await requests.readline():
            body = json.loads(line)
            if body["op"] == "stop":
                break
            task = asyncio.create_task(one(body), name=f"agent-fakes-{body['op']}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await served.close()
        out.close()


if __name__ == "__main__":
    asyncio.run(serve())
