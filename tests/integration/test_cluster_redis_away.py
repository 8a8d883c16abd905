"""New inbound calls while Redis is away, never lost nor carried twice. One placed on another
worker as Redis stops answering, for longer than the workers wait for it (``AGAIN_WITHIN``):
the worker that found the call rings it itself, it is answered there and its audio flows, and
once Redis is back exactly one worker carries it. One that starts ringing while Redis is away:
rung once, by the first worker to claim it when Redis is back. On Meta's Cloud API, webhooks
reaching a worker while Redis stalls: a user's new call rings there (its desk route not run).

Two real ``python -m bridge`` processes on a real ``redis-server``, both polling one ZuckZapGo
engine (the fake, written from its spec); the target's Redis connections go through a small
TCP relay that pauses the server and the target itself (SIGSTOP of pids this test started: a
host that stalls) the moment the target sends its take of the call's claim, so the pause lands
in the middle of the placing, every time. The browser is a real aiortc peer; the assertion is
on the tone it hears.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from bridge.cluster.redis import OP_TIMEOUT
from bridge.cluster.redis_owner import SWAP

from ..support.cluster import (
    Bridge,
    Http,
    Redis,
    get,
    post,
    require_redis,
    start_bridges,
    wait_call,
)
from ..support.ports import free_port
from ..support.rtc_client import RtcClient
from ..support.waits import until
from .test_cluster import hear

require_redis()

pytestmark = pytest.mark.timeout(90)


class PausingRelay:
    """A TCP relay to ``redis`` that stops the server (SIGSTOP), and the worker whose
    connections it relays (``worker``: a host that stalls as well), just before it passes on
    the first claim swap (``redis_owner.SWAP``) that worker sends."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.port = free_port()
        self.worker: int | None = None
        """The pid of the worker behind the relay (set once it started)."""
        self.stopped: list[int] = []
        self.tripped = False
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def paused(self) -> bool:
        return self.redis.proc is not None and self.redis.proc.pid in self.stopped

    def pause(self) -> None:
        assert self.redis.proc is not None and self.worker is not None
        self.tripped = True
        for pid in (self.redis.proc.pid, self.worker):
            os.kill(pid, signal.SIGSTOP)
            self.stopped.append(pid)

    def resume(self, pid: int) -> None:
        if pid in self.stopped:
            os.kill(pid, signal.SIGCONT)
            self.stopped.remove(pid)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool
    ) -> None:
        marker = SWAP.strip().encode()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if watch and not self.tripped and marker in data:
                    self.pause()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis.port)
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, watch=True)),
            asyncio.create_task(self._pump(up_reader, writer, watch=False)),
        ):
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def __aenter__(self) -> PausingRelay:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pid in list(self.stopped):
            self.resume(pid)
        assert self._server is not None
        self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def webhook_events(aiohttp_server: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver (``BRIDGE_WEBHOOK_URL``): its URL and the events it got. The app
    hears of a ringing call this way while Redis is away (its SSE stream comes from Redis)."""
    events: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        events.append(json.loads(await request.text()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = await aiohttp_server(app, host="127.0.0.1")
    yield f"http://127.0.0.1:{server.port}/hook", events


def polled_env(engine_url: str, hook_url: str) -> dict[str, str]:
    """Two workers' settings on one polled engine (the fake ZuckZapGo at ``engine_url``,
    polled every 0.2 s), their call events posted to ``hook_url`` (:func:`webhook_events`)."""
    return {
        "BRIDGE_ENGINE": "zuckzapgo",
        "BRIDGE_ENGINE_URL": engine_url,
        "BRIDGE_ENGINE_TOKEN": "ztok",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
        "BRIDGE_WEBHOOK_URL": hook_url,
        "BRIDGE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
    }


async def test_a_call_placed_as_redis_stops_rings_on_its_finder_and_is_carried_once(
    redis, session, tmp_path, aiohttp_server
) -> None:
    """A carries a call, so a new inbound call A finds goes to B; Redis stops as B takes its
    claim, and B stalls, past every wait. Before, A, whose request to B timed out and whose
    settle Redis refused, left the call to B, and B, back, refused it: rung by nobody, the
    WhatsApp caller unanswered. Now B rings no placed call past half A's wait, so A rings it
    itself, said once, and B rings nothing when it is back."""
    from ..fakes.zuckzapgo import FakeZuckZapGo

    fake = FakeZuckZapGo()
    await fake.start()
    async with webhook_events(aiohttp_server) as (hook_url, events), PausingRelay(redis) as relay:
        env = polled_env(fake.url, hook_url)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Bridge(redis, tmp_path / "a", env=env)
        # B polls rarely: A finds the new call; B reaches Redis through the relay.
        b = Bridge(
            redis,
            tmp_path / "b",
            env={**env, "BRIDGE_ENGINE_POLL_INTERVAL": "60", "BRIDGE_DIRECTORY": relay.url},
        )
        rtc: RtcClient | None = None
        try:
            await start_bridges(session, a, b)
            assert b.proc is not None and redis.proc is not None
            relay.worker = b.proc.pid
            status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
            assert status == 201 and made["owner"] == a.worker_id, made
            inbound = fake.ring_inbound("5511988887777")

            def ringing() -> list[dict[str, Any]]:
                calls = [e["call"] for e in events if e["type"] == "call.ringing"]
                return [c for c in calls if c["direction"] == "inbound"]

            rung = await until(ringing, 30, "the call ringing on a worker", every=0.1)
            assert relay.paused  # Redis stopped mid-placing, and stays so
            relay.resume(b.proc.pid)  # B, back, rings nothing: past its ringWithin
            assert [c["owner"] for c in rung] == [a.worker_id], rung
            call_id = rung[0]["callID"]
            status, answered = await post(session, a.base, "/call/answer", {"callID": call_id})
            assert status == 200 and answered["state"] == "active", answered
            assert fake.calls[inbound].answered
            rtc = RtcClient(Http(session, a.base), call_id, freq=440.0)
            await rtc.offer()
            await asyncio.wait_for(rtc.connected.wait(), 10)
            await rtc.recorder.tone_arrives(fake.tone_hz)
            assert await hear(rtc, 1.0) == pytest.approx(fake.tone_hz, abs=5)
            assert relay.paused
            relay.resume(redis.proc.pid)
            for bridge in (a, b):

                async def ready(base: str = bridge.base) -> bool:
                    return (await get(session, base, "/readyz"))[0] == 200

                await until(ready, 15, "/readyz to say 200 again", every=0.1)

            async def listed() -> list[dict[str, Any]] | None:
                _status, listing = await get(session, b.base, "/call/status")
                calls = [c for c in listing.get("calls", []) if c["direction"] == "inbound"]
                return calls if calls and calls[0]["state"] == "active" else None

            calls = await until(listed, 10, "A's call written again", every=0.1)
            assert [(c["callID"], c["owner"]) for c in calls] == [(call_id, a.worker_id)]
            assert len(ringing()) == 1  # B never rang it
            assert await hear(rtc, 0.5) == pytest.approx(fake.tone_hz, abs=5)
        finally:
            if rtc is not None:
                await rtc.close()
            for pid in list(relay.stopped):
                relay.resume(pid)
            logs = await asyncio.gather(a.stop(), b.stop())
            await fake.stop()
    said = [line for line in logs[0].splitlines() if "ringing it here" in line]
    assert len(said) == 1 and "cannot settle" in said[0], said


async def test_a_call_that_starts_ringing_while_redis_is_away_is_rung_once_when_it_is_back(
    redis, session, tmp_path, aiohttp_server
) -> None:
    """Redis stops, both workers know it, and then a WhatsApp user calls: every worker polls
    the engine and sees the call, and none may take it alone. Before, each reported it once
    and never again: once Redis was back (restarted, empty) the call, still ringing, rang
    nowhere. Now the engine offers it again at each poll, and the first worker to claim it
    once Redis answers rings it: rung once, answered there."""
    from ..fakes.zuckzapgo import FakeZuckZapGo

    fake = FakeZuckZapGo()
    await fake.start()
    async with webhook_events(aiohttp_server) as (hook_url, events):
        env = polled_env(fake.url, hook_url)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Bridge(redis, tmp_path / "a", env=env)
        b = Bridge(redis, tmp_path / "b", env=env)
        try:
            await start_bridges(session, a, b)
            await redis.stop()
            for bridge in (a, b):

                async def away(base: str = bridge.base) -> bool:
                    _status, ready = await get(session, base, "/readyz")
                    return ready["directory"]["up"] is False

                await until(away, 10, "the worker to find Redis away", every=0.1)
            inbound = fake.ring_inbound("5511988887777")
            await asyncio.sleep(1.0)  # five polls on each worker, each seeing the call
            assert not [e for e in events if e["type"] == "call.ringing"]
            await redis.start()

            def ringing() -> list[dict[str, Any]]:
                return [e["call"] for e in events if e["type"] == "call.ringing"]

            rung = await until(ringing, 15, "the call ringing once Redis is back", every=0.1)
            owner = next(w for w in (a, b) if w.worker_id == rung[0]["owner"])
            status, answered = await post(
                session, owner.base, "/call/answer", {"callID": rung[0]["callID"]}
            )
            assert status == 200 and answered["state"] == "active", answered
            assert fake.calls[inbound].answered
            for bridge in (a, b):

                async def listed(base: str = bridge.base) -> list[dict[str, Any]] | None:
                    status, listing = await get(session, base, "/call/status")
                    return listing["calls"] if status == 200 else None  # its lease back yet?

                calls = await until(listed, 10, "the cluster's calls", every=0.1)
                inbound_calls = [c["callID"] for c in calls if c["direction"] == "inbound"]
                assert inbound_calls == [rung[0]["callID"]], calls
            assert len(ringing()) == 1
        finally:
            if redis.proc is None:
                await redis.start()  # for the fixture's stop
            logs = await asyncio.gather(a.stop(), b.stop())
            await fake.stop()
    said = [line for log in logs for line in log.splitlines() if "not taken yet" in line]
    assert len(said) == 2, said  # once on each worker, however many polls


async def test_a_ringing_call_whose_claim_redis_lost_rings_once_on_its_worker(
    redis, session, tmp_path, aiohttp_server
) -> None:
    """A polled call rings on A, and Redis restarts empty (no persistence): the call's claim is
    gone. Before, B, polling then, saw a new ringing call and claimed it in the empty Redis:
    rung on B as well, two bridge calls for one WhatsApp call. Now B claims nothing where
    Redis lost its heartbeat, nor for a heartbeat TTL once Redis is back (every worker writes
    its calls again meanwhile), and a call's record naming the engine call is its claim: the
    call rings once, on A, and is answered there, its audio heard."""
    from ..fakes.zuckzapgo import FakeZuckZapGo

    fake = FakeZuckZapGo()
    await fake.start()
    async with webhook_events(aiohttp_server) as (hook_url, events):
        env = polled_env(fake.url, hook_url)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Bridge(redis, tmp_path / "a", env=env)
        # B polls when the engine's webhooks say so (below), never on its own meanwhile.
        b_env = {**env, "BRIDGE_ENGINE_POLL_INTERVAL": "60", "BRIDGE_LOG_LEVEL": "info"}
        b = Bridge(redis, tmp_path / "b", env=b_env)
        rtc: RtcClient | None = None
        log_b: list[str] = []
        reading: asyncio.Task[None] | None = None

        def ringing() -> list[dict[str, Any]]:
            return [e["call"] for e in events if e["type"] == "call.ringing"]

        try:
            await start_bridges(session, a, b)
            inbound = fake.ring_inbound("5511988887777")
            [rung] = await until(ringing, 10, "the call ringing on A", every=0.05)
            assert rung["owner"] == a.worker_id, rung
            await redis.stop()
            await redis.start()  # empty
            reading = asyncio.create_task(read_log_until(b, ("the directory back",), log_b))
            latency = {"type": "v1.call.relay_latency", "data": {"callId": inbound}}

            async def decided() -> bool:
                async with session.post(b.base + "/engine/webhook", json=latency) as resp:
                    assert resp.status == 200, await resp.text()  # B polls the engine now
                return reading.done() or len(ringing()) > 1

            await until(decided, 15, "B to decide on the call", every=0.2)
            assert [c["owner"] for c in ringing()] == [a.worker_id], ringing()
            reading.result()
            assert "another worker's" in log_b[-1], log_b[-1]
            status, answered = await post(
                session, a.base, "/call/answer", {"callID": rung["callID"]}
            )
            assert status == 200 and answered["state"] == "active", answered
            assert fake.calls[inbound].answered
            rtc = RtcClient(Http(session, a.base), rung["callID"], freq=440.0)
            await rtc.offer()
            await asyncio.wait_for(rtc.connected.wait(), 10)
            await rtc.recorder.tone_arrives(fake.tone_hz)  # the WhatsApp side heard on A
            assert len(ringing()) == 1
        finally:
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            if rtc is not None:
                await rtc.close()
            await asyncio.gather(a.stop(), b.stop())
            await fake.stop()


@contextlib.asynccontextmanager
async def paused(redis: Redis) -> AsyncIterator[Callable[[], None]]:
    """Redis stops answering (SIGSTOP of the server this test started: a host that stalls,
    each command waiting out its timeout); yields its resume (called on the way out at the
    latest)."""
    assert redis.proc is not None
    stopped = [redis.proc.pid]
    os.kill(stopped[0], signal.SIGSTOP)

    def resume() -> None:
        if stopped:
            os.kill(stopped.pop(), signal.SIGCONT)

    try:
        yield resume
    finally:
        resume()


async def read_log_until(bridge: Bridge, texts: tuple[str, ...], into: list[str]) -> None:
    """Read ``bridge``'s log (its stderr) into ``into`` up to the first line holding one of
    ``texts`` (what its ``stop()`` returns is the rest)."""
    assert bridge.proc is not None and bridge.proc.stderr is not None
    async with asyncio.timeout(15):
        while line := (await bridge.proc.stderr.readline()).decode():
            into.append(line)
            if any(text in line for text in texts):
                return
    raise AssertionError(f"the log of {bridge.base} ended saying none of {texts}")


def logged_at(line: str) -> float:
    """When a bridge's log line was said (its clock, seconds)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


async def test_cloud_api_webhooks_while_redis_is_paused(
    redis, session, tmp_path, aiohttp_server
) -> None:
    """Two workers on Meta's Cloud API (the fake, written from its spec), Redis stalled. Two
    users call, posted to A: both calls ring there for the app (its webhooks). Before, each
    call's desk route read (Redis's) failed as an ERROR with its traceback; now the calls
    ring without their route, said once at WARNING, as the first rings (its read waited out
    Redis's 2 s timeout first: now it asks the directory, which knows Redis away). Each
    webhook handled there unrouted was a WARNING of its own: now one while it lasts, and its
    end once, when a third user's call (Redis back) goes to B, the emptier. Meta's terminate
    of a call one worker carries, posted to the other, was answered 200 and dropped there, the
    call left up: now 503 (said once), and Meta's delivery of it again once Redis is back ends
    the call on its worker."""
    from ..fakes.cloudapi import FakeMeta

    meta = FakeMeta()
    await meta.start()
    async with webhook_events(aiohttp_server) as (hook_url, events):
        env = {f"BRIDGE_{k.upper()}": str(v) for k, v in meta.bridge_settings().items()}
        env["BRIDGE_WEBHOOK_URL"] = hook_url
        env["BRIDGE_WEBHOOK_SECRET"] = "whsec_" + base64.b64encode(b"k" * 32).decode()
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Bridge(redis, tmp_path / "a", env={**env, "BRIDGE_LOG_LEVEL": "info"})
        b = Bridge(redis, tmp_path / "b", env=env)
        to_a = Http(session, a.base)
        log_a: list[str] = []

        def ringing(count: int) -> Callable[[], list[dict[str, Any]] | None]:
            def rung() -> list[dict[str, Any]] | None:
                calls = [e["call"] for e in events if e["type"] == "call.ringing"]
                return calls if len(calls) == count else None

            return rung

        try:
            await start_bridges(session, a, b)
            status, made = await post(session, a.base, "/call/make", {"phone": "15550002222"})
            assert status == 201, made
            owner, other = (a, b) if made["owner"] == a.worker_id else (b, a)
            outbound = next(iter(meta.meta_calls.values()))
            answered = meta.envelope(meta.answer_event(outbound))
            assert (await meta.post(Http(session, owner.base), answered)).status == 200
            await wait_call(session, owner.base, made["callID"], "active")
            hung_up = json.dumps(meta.envelope(meta.terminate_event(outbound))).encode()
            async with paused(redis):
                await meta.user_calls(to_a, "15550001111")
                await meta.user_calls(to_a, "15550001112")
                rung = await until(ringing(2), 10, "both users' calls ringing", every=0.1)
                assert [c["owner"] for c in rung] == [a.worker_id] * 2, rung
                for _ in range(2):  # Meta delivers it, and again later
                    resp = await meta.post(Http(session, other.base), hung_up)
                    assert resp.status == 503 and "Retry-After" in resp.headers, resp.status
                read = await wait_call(session, owner.base, made["callID"], "active")
                assert read["endReason"] is None
                await read_log_until(a, ("route not run", ":route failed"), log_a)
                # Said as the call rang: its route's read asked the directory's lease, which
                # knew Redis away (the call's webhook had found it so), and did not wait out
                # the Redis client's 2 s timeout first (as it did, each call of an outage).
                skipped = next(line for line in log_a if "route not run" in line)
                call_id = skipped.split("call ", 1)[1].split(":", 1)[0]
                rang = next(line for line in log_a if f"call {call_id}: inbound" in line)
                assert "is ringing" in rang, rang
                assert logged_at(skipped) - logged_at(rang) < OP_TIMEOUT / 2, (rang, skipped)

            async def ready() -> bool:
                return (await get(session, a.base, "/readyz"))[0] == 200

            await until(ready, 15, "A's /readyz to say 200 again", every=0.1)
            resp = await meta.post(Http(session, other.base), hung_up)  # Meta's next try
            assert resp.status == 200, await resp.text()
            ended = await wait_call(session, owner.base, made["callID"], "ended")
            assert ended["endReason"] == "remote_hangup", ended
            await meta.user_calls(to_a, "15550001113")
            rung = await until(ringing(3), 10, "the third user's call ringing", every=0.1)
            assert rung[2]["owner"] == b.worker_id, rung
        finally:
            logs = await asyncio.gather(a.stop(), b.stop())
            await meta.stop()
    log_a.append(logs[0])
    said = "".join(log_a)
    assert "ERROR" not in said and "Traceback" not in said, said
    assert said.count("route not run") == 1, said
    assert said.count(" handled here: ") == 1, said  # a WARNING per webhook before
    assert said.count("engine webhooks routed again: 2 were handled here") == 1, said
    refused = said if other is a else logs[1]  # the webhook's 503s, said once
    assert refused.count("503 directory_unavailable") == 1, refused
