"""Calls move to another worker instead of ending (issue 26): a deploy's SIGTERM hands them
over, a crash (SIGKILL) has a survivor adopt them.

Real processes: two bridge instances on a real ``redis-server``, the fake ZuckZapGo engine
(exactly as strict as its API documentation: a second media socket is accepted and takes the
call's one inbound sink), and an aiortc browser that sends a new offer for the same callID
when ``call.moved`` reaches it, as the bundled JS client does. Assertions are on the audio
(which tone each side hears) and on the engine (its call never ends). The audio gap each way
is measured and printed (``HANDOVER-GAP`` lines), never asserted beyond generous sanity
bounds: the numbers of this machine are in the issue's closing note.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import signal
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from bridge.audio import rms_dbfs, tone

from ..fakes.openai_realtime import FakeOpenAIRealtime
from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.cluster import (
    Bridge,
    Http,
    bridge_env,
    get,
    post,
    require_redis,
    sse_events,
    start_bridges,
    wait_call,
)
from ..support.ports import free_port, free_ports
from ..support.processes import spawn_bridge
from ..support.rtc_client import RtcClient
from ..support.spectrum import band_energy
from ..support.waits import until

require_redis()

pytestmark = pytest.mark.timeout(90)

ENGINE_HZ = 700.0
BROWSER_HZ = 440.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeZuckZapGo]:
    engine = FakeZuckZapGo(tone_hz=ENGINE_HZ)
    await engine.start()
    yield engine
    await engine.stop()


def engine_env(fake: FakeZuckZapGo, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_ENGINE": "zuckzapgo",
        "BRIDGE_ENGINE_URL": fake.url,
        "BRIDGE_ENGINE_TOKEN": "ztok",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
        "BRIDGE_SHUTDOWN_CALLS": "handover",
        "BRIDGE_LOG_LEVEL": "info",
        **extra,
    }


class Events:
    """Every SSE event of one instance, collected in the background."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.seen: list[dict] = []
        self._task = asyncio.ensure_future(self._run(session, base))

    async def _run(self, session: aiohttp.ClientSession, base: str) -> None:
        with contextlib.suppress(aiohttp.ClientError):
            async for event in sse_events(session, base):
                self.seen.append(json.loads(event["data"]))

    async def wait(self, type_: str, timeout: float = 15.0) -> dict:
        def found() -> dict | None:
            return next((e for e in self.seen if e["type"] == type_), None)

        return await until(found, timeout, f"{type_} (events: {len(self.seen)})", every=0.02)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class ForkApp:
    """An app's WebSocket server a media fork connects to: each connection's JSON events."""

    def __init__(self) -> None:
        self.connections: list[list[dict]] = []
        self.webhooks: list[dict] = []
        self.model = FakeOpenAIRealtime(api_key="sk-moved")
        """A realtime model an agent on the call talks to (OpenAI's protocol)."""
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/media", self._serve)
        app.router.add_post("/hook", self._hook)
        app.router.add_get("/v1/realtime", self.model.handler)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        events: list[dict] = []
        self.connections.append(events)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                events.append(json.loads(msg.data))
        return ws

    async def _hook(self, request: web.Request) -> web.Response:
        self.webhooks.append(await request.json())
        return web.Response(status=204)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def inbound(self, connection: int) -> np.ndarray:
        """The inbound track's PCM a connection carried."""
        payloads = [
            base64.b64decode(e["media"]["payload"])
            for e in self.connections[connection]
            if e.get("event") == "media" and e["media"]["track"] == "inbound"
        ]
        return np.frombuffer(b"".join(payloads), dtype="<i2")


def tone_times(chunks: list[np.ndarray], times: list[float], rate: int, freq: float) -> list[float]:
    """Arrival times of the chunks that carry ``freq`` (loud, and mostly that tone)."""
    found = []
    for chunk, t in zip(chunks, times, strict=True):
        x = np.asarray(chunk, dtype=np.float64)
        if x.size >= 160 and np.sqrt(np.mean(x**2)) > 300 and band_energy(x, rate, freq) > 0.5:
            found.append(t)
    return found


def largest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch within ``[start, end]`` with no tone."""
    inside = [start] + [t for t in times if start <= t <= end] + [end]
    return max(b - a for a, b in itertools.pairwise(inside))


def wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def holds(path: Path, freq: float) -> bool:
    pcm = wav(path).astype(np.float64)
    loud = pcm[np.abs(pcm) > 0]
    return loud.size > 16_000 * 0.5 and band_energy(pcm, 16_000, freq) > 0.3


async def start_call(session, owner: Bridge, fake: FakeZuckZapGo) -> tuple[str, str]:
    status, made = await post(session, owner.base, "/call/make", {"phone": "5521999999999"})
    assert status == 201 and made["owner"] == owner.worker_id, made
    await wait_call(session, owner.base, made["callID"], "active")
    engine_id = next(c.id for c in fake.calls.values() if c.state == "active")
    return made["callID"], engine_id


async def hears(rtc: RtcClient, freq: float, seconds: float = 1.0) -> float:
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    return band_energy(rtc.recorder.since(t0), rtc.recorder.rate, freq)


def engine_heard_since(fake: FakeZuckZapGo, engine_id: str, t0: float) -> np.ndarray:
    call = fake.calls[engine_id]
    frames = [f for f, t in zip(call.received, call.received_at, strict=True) if t >= t0]
    return np.frombuffer(b"".join(frames), dtype="<i2")


def gaps(
    fake: FakeZuckZapGo, engine_id: str, old: RtcClient, new: RtcClient, t0: float, t1: float
) -> tuple[float, float]:
    """The audio gap each way between ``t0`` (before the move) and ``t1`` (after it):
    engine → browser (across both peer connections) and browser → engine."""
    rec_old, rec_new = old.recorder, new.recorder
    down = tone_times(
        rec_old.chunks + rec_new.chunks,
        rec_old.times + rec_new.times,
        rec_old.rate,
        ENGINE_HZ,
    )
    call = fake.calls[engine_id]
    frames = [np.frombuffer(f, dtype="<i2") for f in call.received]
    up = tone_times(frames, call.received_at, 16_000, BROWSER_HZ)
    return largest_gap(sorted(down), t0, t1), largest_gap(up, t0, t1)


async def test_sigterm_hands_a_live_zuckzapgo_call_to_the_other_worker_without_ending_it(
    redis, session, fake, tmp_path
) -> None:
    data = tmp_path / "data"  # shared storage: both segments of the recording side by side
    data.mkdir()
    fork_app = ForkApp()  # also the app's webhook receiver
    await fork_app.start()
    env = engine_env(
        fake,
        BRIDGE_FORK_URL_ALLOW="127.0.0.1",
        BRIDGE_WEBHOOK_URL=f"http://127.0.0.1:{fork_app.port}/hook",
        BRIDGE_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    a = Bridge(redis, data, env=env)
    b = Bridge(redis, data, env=env)
    await start_bridges(session, a, b)
    events = Events(session, b.base)
    old = new = None
    try:
        call_id, engine_id = await start_call(session, a, fake)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status in (200, 201)
        status, stream = await post(
            session, a.base, f"/call/{call_id}/streams", {"url": fork_app.url, "channel": "both"}
        )
        assert status == 201, stream
        model_url = f"ws://127.0.0.1:{fork_app.port}/v1/realtime"
        agent = {"provider": "openai-realtime", "url": model_url, "apiKey": "sk-moved"}
        status, started = await post(session, a.base, f"/call/{call_id}/agents", agent)
        assert status == 201, started
        old = RtcClient(Http(session, a.base), call_id, freq=BROWSER_HZ)
        await old.offer()
        await asyncio.wait_for(old.connected.wait(), 10)
        await old.recorder.tone_arrives(ENGINE_HZ)
        assert await hears(old, ENGINE_HZ) > 0.5
        assert (
            band_energy(
                engine_heard_since(fake, engine_id, time.monotonic() - 1), 16_000, BROWSER_HZ
            )
            > 0.5
        )

        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        moved = await events.wait("call.moved")
        assert moved["from"] == a.worker_id and moved["to"] == b.worker_id
        assert moved["reason"] == "drain" and moved["call"]["owner"] == b.worker_id
        # The browser offers again for the same callID, as the JS client does (its page
        # talks to the load balancer: here the instance that stays).
        new = RtcClient(Http(session, b.base), call_id, freq=BROWSER_HZ)
        await new.offer()
        await asyncio.wait_for(new.connected.wait(), 10)
        await new.recorder.tone_arrives(ENGINE_HZ)
        assert await hears(new, ENGINE_HZ) > 0.5
        t_after = time.monotonic()
        await asyncio.sleep(1.0)
        heard = engine_heard_since(fake, engine_id, t_after)
        assert band_energy(heard, 16_000, BROWSER_HZ) > 0.5
        t1 = time.monotonic()

        # The call stays active under B; the engine's call never ended, and for a while both
        # workers had the engine's media socket open (make-before-break).
        call = await wait_call(session, b.base, call_id, "active")
        assert call["owner"] == b.worker_id
        assert fake.calls[engine_id].state == "active"
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
        assert fake.calls[engine_id].max_open >= 2
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0

        down, up = gaps(fake, engine_id, old, new, t0, t1)
        print(f"HANDOVER-GAP drain down={down:.3f} up={up:.3f}")
        assert down < 10 and up < 10  # sanity only

        # The recording goes on: segment 1 on A, segment 2 on B, each with both sides.
        status, stopped = await post(session, b.base, "/call/record/stop", {"callID": call_id})
        assert status == 200, stopped
        calls_dir = next(p.parent for p in data.rglob(f"{call_id}-inbound.wav"))
        for name in (call_id, f"{call_id}-seg2"):
            assert holds(calls_dir / f"{name}-inbound.wav", ENGINE_HZ), name
            assert holds(calls_dir / f"{name}-outbound.wav", BROWSER_HZ), name
        types = [e["type"] for e in events.seen]
        assert "call.ended" not in types
        # The media fork: A's connection ended without "stop"; B connected again with the
        # same stream id and a start that says it resumed, and carries the engine's audio.
        assert len(fork_app.connections) == 2, [len(c) for c in fork_app.connections]
        first, second = fork_app.connections
        assert [e["event"] for e in first][:2] == ["connected", "start"]
        assert "stop" not in [e["event"] for e in first]
        start = next(e for e in second if e["event"] == "start")
        assert start["resumed"] is True and start["stream_id"] == stream["streamId"]
        assert band_energy(fork_app.inbound(1), 16_000, ENGINE_HZ) > 0.5
        # The agent: B opened the model's socket again (key and session as asked), same
        # agent id, and the engine's audio reaches the model from B.
        model = fork_app.model
        assert model.connections == 2 and len(model.sessions) == 2 and model.errors == []
        assert model.headers[1]["Authorization"] == "Bearer sk-moved"
        assert call["agents"][0]["agentID"] == started["agentID"]
        assert call["agents"][0]["state"] == "connected"
        connected = [e for e in events.seen if e["type"] == "agent.connected"]
        assert [e.get("resumed", False) for e in connected][-1] is True  # A's first, then B's
        assert connected[-1]["agentID"] == started["agentID"]
        assert "sk-moved" not in json.dumps(events.seen)
        assert band_energy(model.heard[-24_000:], 24_000, ENGINE_HZ) > 0.5
        # The app's webhook got call.moved too (sent by A before it exited).
        hooked = [w for w in fork_app.webhooks if w["type"] == "call.moved"]
        assert len(hooked) == 1 and hooked[0]["to"] == b.worker_id, fork_app.webhooks[-3:]
        # Metrics: B measured the gap; the move is counted on A (gone now).
        async with session.get(b.base + "/metrics") as r:
            text = await r.text()
        assert 'bridge_handover_audio_gap_seconds_count{reason="drain"} 1.0' in text
        await _the_report_moved_with_the_call(session, b.base, data / "reports", call_id)
    finally:
        await events.close()
        for rtc in (old, new):
            if rtc is not None:
                await rtc.close()
        await fork_app.stop()
        log_a = await a.stop()
        await b.stop()
        print(log_a[-3000:])


async def _the_report_moved_with_the_call(
    session: aiohttp.ClientSession, base: str, reports: Path, call_id: str
) -> None:
    """A moved call's report: the old worker stored what it saw as its runtime closed (the call
    going on elsewhere: no end yet), the new owner's runtime opened a report of its own (its
    browser's rows), and the new owner's record replaces the old one when the call ends."""
    left = json.loads((reports / f"{call_id}.report.json").read_text())
    assert left["summary"]["endReason"] is None
    assert "call.moved" in [e["type"] for e in left["events"]]
    status, live = await get(session, base, f"/call/{call_id}/report")
    assert status == 200 and live["summary"]["endReason"] is None, live
    assert any(r["leg"].startswith("browser:") for r in live["timeline"]), live["timeline"]
    status, _ = await post(session, base, "/call/hangup", {"callID": call_id})
    assert status == 200

    def stored() -> dict[str, Any] | None:
        record: dict[str, Any] = json.loads((reports / f"{call_id}.report.json").read_text())
        return record if record["summary"]["endReason"] else None

    ended = await until(stored, 10, "the new owner's record", every=0.2)
    assert ended["events"][-1]["type"] == "call.ended"
    assert any(r["leg"].startswith("browser:") for r in ended["timeline"])


async def test_sigterm_without_another_worker_with_room_hangs_up_as_today_with_a_warning(
    redis, session, fake, tmp_path
) -> None:
    a = Bridge(redis, tmp_path, env=engine_env(fake))
    await a.start(session)
    try:
        call_id, engine_id = await start_call(session, a, fake)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status == 201
        a.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0
        assert fake.calls[engine_id].state == "ended"
        assert [r for r in fake.requests if r[1] == "/call/hangup"]
        # The recording the move did not take ends with the call, announced (in the event log:
        # this worker's event stream closed as it shut down).
        told = segments_announced(await logged_events(redis.url), call_id)
        assert told == segments_on_disk(tmp_path, call_id) and len(told) == 3, told
    finally:
        log = await a.stop()
    assert "not handed over (no other live worker has room" in log, log[-2000:]


async def test_sigkill_of_the_owner_a_survivor_adopts_the_call_and_the_browser_comes_back(
    redis, session, fake, tmp_path
) -> None:
    env = engine_env(fake, BRIDGE_ADOPT_OFFER_TIMEOUT="10")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    await start_bridges(session, a, b)
    events = Events(session, b.base)
    old = new = None
    try:
        call_id, engine_id = await start_call(session, a, fake)
        old = RtcClient(Http(session, a.base), call_id, freq=BROWSER_HZ)
        await old.offer()
        await asyncio.wait_for(old.connected.wait(), 10)
        await old.recorder.tone_arrives(ENGINE_HZ)
        assert await hears(old, ENGINE_HZ) > 0.5

        t0 = time.monotonic()
        a.proc.kill()
        moved = await events.wait("call.moved", timeout=15)
        t_moved = time.monotonic()
        assert moved["reason"] == "crash" and moved["to"] == b.worker_id
        assert moved["from"] == a.worker_id
        new = RtcClient(Http(session, b.base), call_id, freq=BROWSER_HZ)
        await new.offer()
        await asyncio.wait_for(new.connected.wait(), 10)
        await new.recorder.tone_arrives(ENGINE_HZ)
        assert await hears(new, ENGINE_HZ) > 0.5
        t_after = time.monotonic()
        await asyncio.sleep(1.0)
        assert band_energy(engine_heard_since(fake, engine_id, t_after), 16_000, BROWSER_HZ) > 0.5
        t1 = time.monotonic()
        call = await wait_call(session, b.base, call_id, "active")
        assert call["owner"] == b.worker_id
        assert fake.calls[engine_id].state == "active"
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
        assert "call.ended" not in [e["type"] for e in events.seen]
        down, up = gaps(fake, engine_id, old, new, t0, t1)
        print(f"HANDOVER-GAP crash down={down:.3f} up={up:.3f} noticed_after={t_moved - t0:.3f}")
        assert down < 20 and up < 20  # sanity only: the heartbeat TTL is 2 s
    finally:
        await events.close()
        for rtc in (old, new):
            if rtc is not None:
                await rtc.close()
        await a.stop()
        await b.stop()


async def test_an_adopted_call_no_browser_comes_back_to_ends_as_worker_lost(
    redis, session, fake, tmp_path
) -> None:
    env = engine_env(fake, BRIDGE_ADOPT_OFFER_TIMEOUT="2")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    await start_bridges(session, a, b)
    try:
        call_id, engine_id = await start_call(session, a, fake)
        a.proc.kill()
        ended = await wait_call(session, b.base, call_id, "ended", timeout=20)
        assert ended["endReason"] == "failed" and ended["endDetail"] == "worker_lost"
        await asyncio.sleep(0.5)
        assert fake.calls[engine_id].state == "ended"  # hung up as before
    finally:
        await a.stop()
        await b.stop()


MODEL_HZ = 1000.0


async def model_heard_on_the_engine(fake, engine_id: str, model, since: float) -> np.ndarray:
    """The model says 1 s of ``MODEL_HZ``: the loud part of what the engine (the WhatsApp user)
    received since ``since``."""
    await model.say(tone(MODEL_HZ, 24_000, 24_000, 0.25))

    def loud() -> list[np.ndarray]:
        pcm = engine_heard_since(fake, engine_id, since)
        frames = pcm[: pcm.size - pcm.size % 320].reshape(-1, 320)
        voiced = frames[np.abs(frames).max(axis=1) > 1000]
        return [voiced.ravel()] if voiced.shape[0] >= 45 else []

    return (await until(loud, 10, "the model's voice at the engine"))[0]


async def logged_events(url: str) -> list[dict]:
    """The events in the cluster's event log (what SSE replays and follows), oldest first."""
    client = aioredis.from_url(url, decode_responses=True)
    try:
        return [json.loads(fields["d"]) for _, fields in await client.xrange("bridge:events")]
    finally:
        await client.aclose()


async def redis_text(url: str) -> str:
    """Every value Redis holds (strings, sets, streams), as one text."""
    client = aioredis.from_url(url, decode_responses=True)
    parts = []
    try:
        async for key in client.scan_iter("*"):
            kind = await client.type(key)
            if kind == "string":
                parts.append(await client.get(key))
            elif kind == "set":
                parts.extend(await client.smembers(key))
            elif kind == "stream":
                parts.extend(json.dumps(fields) for _, fields in await client.xrange(key))
    finally:
        await client.aclose()
    return "\n".join(parts)


async def test_sigkill_of_the_owner_the_adopter_resumes_the_agent_forks_and_recording(
    redis, session, fake, tmp_path
) -> None:
    """A crash adoption re-opens what the call's directory record kept: the agent (a new
    session on the model, with the key the app gave, sealed in Redis meanwhile), the media
    fork (same stream id, ``resumed``) and the recording (its next segment)."""
    data = tmp_path / "data"  # shared storage, as the drain test
    data.mkdir()
    fork_app = ForkApp()
    await fork_app.start()
    env = engine_env(fake, BRIDGE_FORK_URL_ALLOW="127.0.0.1", BRIDGE_ADOPT_OFFER_TIMEOUT="10")
    a = Bridge(redis, data, env=env)
    b = Bridge(redis, data, env=env)
    await start_bridges(session, a, b)
    events = Events(session, b.base)
    model = fork_app.model
    try:
        call_id, engine_id = await start_call(session, a, fake)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status in (200, 201)
        status, stream = await post(
            session,
            a.base,
            f"/call/{call_id}/streams",
            {"url": fork_app.url + "?token=tok-moved", "channel": "both"},  # the app's token
        )
        assert status == 201, stream
        model_url = f"ws://127.0.0.1:{fork_app.port}/v1/realtime"
        agent = {"provider": "openai-realtime", "url": model_url, "apiKey": "sk-moved"}
        status, started = await post(session, a.base, f"/call/{call_id}/agents", agent)
        assert status == 201, started
        before = await model_heard_on_the_engine(fake, engine_id, model, time.monotonic())
        assert band_energy(before, 16_000, MODEL_HZ) > 0.9

        # The record keeps the agent for an adopter, its key sealed: nowhere in Redis as such.
        async def sealed() -> dict | None:
            raw = json.loads(await redis_text_of_call(redis.url, call_id))
            agents = (raw.get("attachments") or {}).get("agents") or []
            return agents[0] if agents else None

        kept = await until(sealed, 5, "the agent in the call's record")
        assert kept["agentID"] == started["agentID"] and kept["sealedKey"].startswith("v1.")
        assert "apiKey" not in kept
        assert "sk-moved" not in await redis_text(redis.url)
        assert "tok-moved" not in await redis_text(redis.url)  # the fork's URL sealed too

        killed = time.monotonic()
        a.proc.kill()
        moved = await events.wait("call.moved", timeout=15)
        assert moved["reason"] == "crash" and moved["to"] == b.worker_id
        # The agent: B opened a new session on the model with the app's key, same agent id.
        await until(lambda: model.connections == 2 and len(model.sessions) == 2, 10, "session 2")
        assert model.headers[1]["Authorization"] == "Bearer sk-moved"
        print(f"HANDOVER-GAP crash agent_session_after={time.monotonic() - killed:.3f}")
        connected = await until(
            lambda: [e for e in events.seen if e["type"] == "agent.connected" and e.get("resumed")],
            5,
            "agent.connected (resumed)",
        )
        assert [e["agentID"] for e in connected] == [started["agentID"]]
        t_back = time.monotonic()
        after = await model_heard_on_the_engine(fake, engine_id, model, t_back)
        assert band_energy(after, 16_000, MODEL_HZ) > 0.9
        assert rms_dbfs(after) == pytest.approx(rms_dbfs(before), abs=1.0)
        # The caller reaches the model again from B (the engine's tone, at 24 kHz).
        await until(lambda: model.heard.size > 48_000, 5, "the caller at the model")
        assert band_energy(model.heard[-12_000:], 24_000, ENGINE_HZ) > 0.5
        assert model.errors == []
        # The fork: a second connection, same stream id, a start that says it resumed.
        await until(lambda: len(fork_app.connections) == 2, 10, "the fork's new connection")
        start = await until(
            lambda: next((e for e in fork_app.connections[1] if e["event"] == "start"), None),
            5,
            "its start",
        )
        assert start["resumed"] is True and start["stream_id"] == stream["streamId"]
        await until(lambda: fork_app.inbound(1).size >= 16_000, 5, "the fork's audio")
        assert band_energy(fork_app.inbound(1), 16_000, ENGINE_HZ) > 0.5
        # The recording: segment 2 on B, both sides (the model's voice is what WhatsApp heard).
        status, stopped = await post(session, b.base, "/call/record/stop", {"callID": call_id})
        assert status == 200, stopped
        calls_dir = next(p.parent for p in data.rglob(f"{call_id}-seg2-inbound.wav"))
        assert holds(calls_dir / f"{call_id}-seg2-inbound.wav", ENGINE_HZ)
        assert holds(calls_dir / f"{call_id}-seg2-outbound.wav", MODEL_HZ)
        call = await wait_call(session, b.base, call_id, "active")
        assert call["agents"][0]["state"] == "connected"
        assert "call.ended" not in [e["type"] for e in events.seen]
        assert "sk-moved" not in json.dumps(events.seen)
    finally:
        await events.close()
        await fork_app.stop()
        await a.stop()
        log_b = await b.stop()
    assert "sk-moved" not in log_b


async def recording_kept(redis: Any, call_id: str) -> None:
    """Wait until the call's record in the directory carries its recording (what an adopter
    reads to take the recording on)."""

    async def kept() -> bool:
        raw = json.loads(await redis_text_of_call(redis.url, call_id))
        return bool((raw.get("attachments") or {}).get("recording"))

    await until(kept, 5, "the recording in the call's record")


async def redis_text_of_call(url: str, call_id: str) -> str:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        return str(await client.get(f"bridge:call:{call_id}") or "{}")
    finally:
        await client.aclose()


async def cloud_pair(redis, session, tmp_path, meta, **extra: str) -> tuple[Bridge, Bridge]:
    env = {f"BRIDGE_{name.upper()}": str(value) for name, value in meta.bridge_settings().items()}
    env.update(BRIDGE_SHUTDOWN_CALLS="handover", BRIDGE_LOG_LEVEL="info", **extra)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    await start_bridges(session, a, b)
    return a, b


async def cloud_call_on_b(session, meta, a: Bridge, b: Bridge) -> tuple[str, object]:
    status, made = await post(session, b.base, "/call/make", {"phone": "15550002222"})
    assert status == 201 and made["owner"] == b.worker_id, made
    outbound = next(iter(meta.meta_calls.values()))
    resp = await meta.post(Http(session, a.base), meta.envelope(meta.answer_event(outbound)))
    assert resp.status == 200
    await wait_call(session, a.base, made["callID"], "active")
    return made["callID"], outbound


async def test_sigterm_keeps_serving_a_cloud_api_call_until_it_ends_and_takes_no_new_one(
    redis, session, tmp_path
) -> None:
    """A Cloud API call cannot move (Meta's media session ends at the worker's address): the
    draining worker serves it (audio, Meta's webhooks forwarded to it) until it ends, takes
    no new call meanwhile, and exits once it has none."""
    from ..fakes.cloudapi import FakeMeta

    meta = FakeMeta()
    await meta.start()
    a, b = await cloud_pair(redis, session, tmp_path, meta, BRIDGE_DRAIN_TIMEOUT="60")
    rtc = None
    try:
        call_id, outbound = await cloud_call_on_b(session, meta, a, b)
        rtc = RtcClient(Http(session, b.base), call_id, freq=BROWSER_HZ)
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        # Twice, 2 ms apart, as systemd and a supervisor both pass it on: the same stop.
        b.proc.send_signal(signal.SIGTERM)
        time.sleep(0.002)  # noqa: ASYNC251 (blocking on purpose: a loop turn may be late)
        b.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(2.0)
        assert b.proc.returncode is None  # still serving its call
        assert await hears(rtc, meta.user_tone_hz) > 0.5
        status, again = await post(session, b.base, "/call/make", {"phone": "15550003333"})
        assert status == 201 and again["owner"] == a.worker_id, again  # placed on A
        call = await wait_call(session, a.base, call_id, "active")
        assert call["owner"] == b.worker_id
        # Meta ends it (its webhook reaches A, which forwards it to the draining B).
        resp = await meta.post(Http(session, a.base), meta.envelope(meta.terminate_event(outbound)))
        assert resp.status == 200
        ended = await wait_call(session, a.base, call_id, "ended")
        assert ended["endReason"] == "remote_hangup"
        assert await asyncio.wait_for(b.proc.wait(), 15) == 0
    finally:
        if rtc is not None:
            await rtc.close()
        log_b = await b.stop()
        await a.stop()
        await meta.stop()
    assert "cannot move to another worker" in log_b, log_b[-2000:]


async def test_sigterm_hangs_up_a_cloud_api_call_still_live_at_the_drain_timeout(
    redis, session, tmp_path
) -> None:
    from ..fakes.cloudapi import FakeMeta

    meta = FakeMeta()
    await meta.start()
    a, b = await cloud_pair(redis, session, tmp_path, meta, BRIDGE_DRAIN_TIMEOUT="2")
    try:
        call_id, _outbound = await cloud_call_on_b(session, meta, a, b)
        b.proc.send_signal(signal.SIGTERM)
        # Unmovable, it is served while b drains (BRIDGE_DRAIN_TIMEOUT), then ended.
        assert (await wait_call(session, a.base, call_id, "active"))["state"] == "active"
        assert await asyncio.wait_for(b.proc.wait(), 20) == 0
        ended = await wait_call(session, a.base, call_id, "ended")
        assert ended["endReason"] == "shutdown"
    finally:
        await b.stop()
        await a.stop()
        await meta.stop()


async def test_a_rolling_restart_of_one_of_two_workers_loses_none_of_its_20_calls(
    redis, session, fake, tmp_path
) -> None:
    """The issue's target: 20 live calls on the worker a deploy restarts, none lost. Two of
    them have a browser (which offers again on call.moved); all 20 keep their engine call."""
    env = engine_env(fake, BRIDGE_LOG_LEVEL="warning")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    await a.start(session)
    browsers: list[RtcClient] = []
    events = None
    try:
        made = []
        for i in range(20):
            status, call = await post(session, a.base, "/call/make", {"phone": f"55219999{i:05d}"})
            assert status == 201 and call["owner"] == a.worker_id, call
            made.append(call["callID"])
        for call_id in made:
            await wait_call(session, a.base, call_id, "active")
        for call_id in made[:2]:
            rtc = RtcClient(Http(session, a.base), call_id, freq=BROWSER_HZ)
            await rtc.offer()
            await asyncio.wait_for(rtc.connected.wait(), 10)
            browsers.append(rtc)
        await b.start(session)  # the worker that stays (the other pod)
        events = Events(session, b.base)
        await asyncio.sleep(0.5)
        a.proc.send_signal(signal.SIGTERM)
        seen = events.seen

        def all_moved() -> bool:
            return {e["callID"] for e in seen if e["type"] == "call.moved"} >= set(made)

        await until(all_moved, 30.0, "every call.moved", every=0.1)
        for call_id in made[:2]:
            rtc = RtcClient(Http(session, b.base), call_id, freq=BROWSER_HZ)
            await rtc.offer()
            await asyncio.wait_for(rtc.connected.wait(), 10)
            browsers.append(rtc)
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0
        _status, listing = await get(session, b.base, "/call/status")
        live = {c["callID"]: c for c in listing["calls"]}
        lost = [c for c in made if c not in live or live[c]["owner"] != b.worker_id]
        print(f"HANDOVER-LOST rolling-restart calls=20 lost={len(lost)}")
        for call_id in lost:  # what became of it, for a failure's report
            print(call_id, [e for e in seen if e.get("callID") == call_id])
        assert not lost
        assert all(c.state == "active" for c in fake.calls.values())
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
        await asyncio.sleep(1.0)
        for rtc in browsers[2:]:
            assert await hears(rtc, ENGINE_HZ) > 0.5
    finally:
        if events is not None:
            await events.close()
        for rtc in browsers:
            await rtc.close()
        for name, bridge in (("a", a), ("b", b)):
            print(f"--- bridge {name}'s log\n{await bridge.stop()}")


async def test_sigterm_hands_a_live_wadial_call_over_too(redis, session, tmp_path) -> None:
    """The other PCM engine: WADial's media socket (Float32LE, JSON control frames) is opened
    again by the new owner before the old one closes its own; the call never ends."""
    from ..fakes.wadial import FakeWadial

    wadial = FakeWadial(tone_hz=600.0)
    await wadial.start()
    env = {
        "BRIDGE_ENGINE": "wadial",
        "BRIDGE_ENGINE_URL": wadial.url,
        "BRIDGE_ENGINE_TOKEN": "wkey",
        "BRIDGE_ENGINE_SESSION": "s1",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
        "BRIDGE_SHUTDOWN_CALLS": "handover",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    await start_bridges(session, a, b)
    events = Events(session, b.base)
    browsers: list[RtcClient] = []
    try:
        status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
        assert status == 201 and made["owner"] == a.worker_id, made
        call_id = made["callID"]
        await wait_call(session, a.base, call_id, "active")
        engine_id = next(iter(wadial.calls))
        old = RtcClient(Http(session, a.base), call_id, freq=BROWSER_HZ)
        browsers.append(old)
        await old.offer()
        await asyncio.wait_for(old.connected.wait(), 10)
        await old.recorder.tone_arrives(600.0)
        assert await hears(old, 600.0) > 0.5
        a.proc.send_signal(signal.SIGTERM)
        moved = await events.wait("call.moved")
        assert moved["to"] == b.worker_id and moved["reason"] == "drain"
        new = RtcClient(Http(session, b.base), call_id, freq=BROWSER_HZ)
        browsers.append(new)
        await new.offer()
        await asyncio.wait_for(new.connected.wait(), 10)
        await new.recorder.tone_arrives(600.0)
        assert await hears(new, 600.0) > 0.5
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        call = wadial.calls[engine_id]
        heard = np.frombuffer(
            b"".join(f for f, t in zip(call.received, call.received_at, strict=True) if t >= t0),
            dtype="<f4",
        )
        assert band_energy(heard, 16_000, BROWSER_HZ) > 0.5
        assert call.state == "active" and call.max_open >= 2
        assert not [r for r in wadial.requests if r[1].endswith("/hangup")]
        assert (await wait_call(session, b.base, call_id, "active"))["owner"] == b.worker_id
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0
    finally:
        await events.close()
        for rtc in browsers:
            await rtc.close()
        await a.stop()
        await b.stop()
        await wadial.stop()


async def test_a_pod_of_two_workers_terminated_moves_every_call_to_the_other_pod(
    redis, session, fake, tmp_path
) -> None:
    """The Kubernetes shape: SIGTERM to a pod's supervisor reaches both its workers at once;
    neither may take the other's calls (both drain), so every call goes to the other pod."""
    port, internal = free_port(), free_ports(2)  # the two workers' internal ports
    (tmp_path / "pod").mkdir()
    (tmp_path / "b").mkdir()
    env = bridge_env(
        redis, port, internal, tmp_path / "pod", BRIDGE_WORKERS="2", **engine_env(fake)
    )
    supervisor = await spawn_bridge(env)
    base = f"http://127.0.0.1:{port}"
    b = Bridge(redis, tmp_path / "b", env=engine_env(fake))
    fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    events = None
    try:
        made: dict[str, str] = {}
        # Both workers up and taking calls: a bound against a hang (one worker alone after
        # 30 s once, on a host loaded to 9).
        deadline = time.monotonic() + 45
        while len(set(made.values())) < 2 or len(made) < 6:  # calls on both workers
            assert time.monotonic() < deadline, made
            try:
                status, call = await post(fresh, base, "/call/make", {"phone": "5521999999999"})
            except aiohttp.ClientConnectionError:
                status = 0
            if status == 201:
                made[call["callID"]] = call["owner"]
            else:
                await asyncio.sleep(0.2)
        for call_id in made:
            await wait_call(fresh, base, call_id, "active")
        await b.start(session)
        events = Events(session, b.base)
        await asyncio.sleep(0.5)
        supervisor.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(supervisor.communicate(), 40)
        log = err.decode()
        assert supervisor.returncode == 0, log[-3000:]
        moved = [e for e in events.seen if e["type"] == "call.moved"]
        assert {e["callID"] for e in moved} == set(made), log[-3000:]
        assert all(e["to"] == b.worker_id for e in moved)
        _status, listing = await get(session, b.base, "/call/status")
        assert {c["callID"] for c in listing["calls"]} == set(made)
        assert all(c.state == "active" for c in fake.calls.values())
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
    finally:
        await fresh.close()
        if events is not None:
            await events.close()
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
        await b.stop()


async def drain_a_to_b(session, a: Bridge, b: Bridge, events: Events, call_id: str) -> None:
    """SIGTERM A (a deploy): the call moves to B, A exits cleanly, the call is B's."""
    a.proc.send_signal(signal.SIGTERM)
    moved = await events.wait("call.moved")
    assert moved["callID"] == call_id and moved["to"] == b.worker_id, moved
    assert await asyncio.wait_for(a.proc.wait(), 20) == 0
    call = await wait_call(session, b.base, call_id, "active")
    assert call["owner"] == b.worker_id


async def test_a_recording_that_cannot_go_on_costs_the_recording_not_the_handover(
    redis, session, fake, tmp_path
) -> None:
    """The new owner cannot write the recording's next segment (a disk error: here a directory
    where its file goes, which fails as root too, where a read-only directory would not): the
    call moves all the same, the recording ends there with its reason said once at WARNING,
    and its first segment is finished whole by the old worker. It once failed the handover (the new
    owner answered 500, the old one hung the call up at its shutdown); then the app was told
    nothing (now ``recording.failed`` for the second segment, ``recording.ready`` for the first)."""
    a, b = await bridges_sharing_storage(redis, session, fake, tmp_path)
    data = tmp_path / "data"  # the two workers' storage
    events = Events(session, b.base)
    log_b = ""
    try:
        call_id, engine_id = await start_call(session, a, fake)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status == 201
        calls_dir = next(p.parent for p in data.rglob(f"{call_id}-inbound.wav"))
        (calls_dir / f"{call_id}-seg2-inbound.wav").mkdir()  # the next segment's file: EISDIR
        await asyncio.sleep(0.5)  # half a second in the first segment

        await drain_a_to_b(session, a, b, events, call_id)
        assert fake.calls[engine_id].state == "active"
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
        status, body = await post(session, b.base, "/call/record/stop", {"callID": call_id})
        assert status == 409, body  # no recording goes on here
        # The first segment was finished by A as it let go: whole WAVs (headers written) as
        # long as it recorded, its sidecar beside each.
        for kind in ("inbound", "outbound", "mixed"):
            first = calls_dir / f"{call_id}-{kind}.wav"
            assert wav(first).size >= 16_000 * 0.4 and first.with_suffix(".json").is_file()
        assert not (calls_dir / f"{call_id}-seg2-outbound.wav").exists()  # none left half-made
        # The app is told: the first segment is ready, the recording went no further.
        failed = [e for e in events.seen if e["type"] == "recording.failed"]
        assert len(failed) == 1, [e["type"] for e in events.seen]
        assert failed[0]["segment"] == 2 and failed[0]["reason"] == "storage_failed"
        assert "Is a directory" in failed[0]["message"]
        told = await until(
            lambda: segments_announced(events.seen, call_id), 5, "the first segment announced"
        )
        assert told == segments_on_disk(data, call_id) and len(told) == 3
    finally:
        await events.close()
        await a.stop()
        log_b = await b.stop()
    said = [ln for ln in log_b.splitlines() if "recording" in ln and "Is a directory" in ln]
    assert len(said) == 1 and "WARNING" in said[0], log_b[-3000:]


def segments_announced(seen: list[dict], call_id: str) -> dict[str, str]:
    """Every recording file the app was told of (``recording.ready`` among the events
    ``seen``), path → recordingId; a file announced twice fails."""
    told: dict[str, str] = {}
    for event in seen:
        if event["type"] != "recording.ready" or event["callID"] != call_id:
            continue
        for rec in event["recordings"]:
            assert rec["path"] not in told, f"{rec['path']} announced twice"
            told[rec["path"]] = rec["recordingId"]
    return told


def segments_on_disk(data: Path, call_id: str) -> dict[str, str]:
    """Every finished recording file of a call on the shared disk, path → recordingId (its
    sidecar's)."""
    return {
        json.loads(meta.read_text())["path"]: json.loads(meta.read_text())["recordingId"]
        for meta in data.rglob(f"{call_id}*.json")
        if meta.with_suffix(".wav").is_file()
    }


async def test_every_segment_of_a_moved_recording_is_announced_once(
    redis, session, fake, tmp_path
) -> None:
    """A recording moved with its call: the app hears ``recording.ready`` once for each file on
    disk, the old worker's segment too. The old worker's events were silenced before it closed
    the recording, so its segment was finished on disk and never announced."""
    a, b = await bridges_sharing_storage(redis, session, fake, tmp_path)
    data = tmp_path / "data"  # the two workers' storage
    events = Events(session, b.base)
    try:
        call_id, _ = await start_call(session, a, fake)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status == 201
        await asyncio.sleep(0.5)  # half a second in the first segment
        await drain_a_to_b(session, a, b, events, call_id)
        status, stopped = await post(session, b.base, "/call/record/stop", {"callID": call_id})
        assert status == 200, stopped

        on_disk = segments_on_disk(data, call_id)
        assert len(on_disk) == 6, on_disk  # two segments, three files each

        def every_file_told() -> dict[str, str] | None:
            told = segments_announced(events.seen, call_id)
            return told if len(told) >= len(on_disk) else None

        told = await until(every_file_told, 5, "every segment announced")
        assert told == on_disk
        ready = [e for e in events.seen if e["type"] == "recording.ready"]
        assert [e["segment"] for e in ready] == [1, 2]
    finally:
        await events.close()
        await a.stop()
        await b.stop()


async def bridges_sharing_storage(redis, session, fake, tmp_path) -> tuple[Bridge, Bridge]:
    """Two workers on the fake engine with one data directory (an audio asset uploaded to one
    is there for the other, as on shared storage), both up."""
    data = tmp_path / "data"
    data.mkdir()
    env = engine_env(fake)
    a = Bridge(redis, data, env=env)
    b = Bridge(redis, data, env=env)
    await start_bridges(session, a, b)
    return a, b


async def upload_tone(session, bridge: Bridge, hz: float, seconds: float) -> dict:
    """A WAV of a ``hz`` tone uploaded as an audio asset (``POST /call/audio-assets``)."""
    from ..support.audio_files import make

    form = aiohttp.FormData()
    form.add_field("audio", make("wav", hz, seconds), filename=f"{hz:.0f}.wav")
    async with session.post(bridge.base + "/call/audio-assets", data=form) as r:
        assert r.status == 201, await r.text()
        return dict(await r.json())


MUSIC_HZ = 1000.0


async def test_a_call_on_hold_with_music_is_on_hold_with_music_on_its_new_worker(
    redis, session, fake, tmp_path
) -> None:
    """A held call's music moves with it: the WhatsApp user hears the same music, as loud,
    from the new owner (it once heard silence there: the call came back held, its music not)."""
    a, b = await bridges_sharing_storage(redis, session, fake, tmp_path)
    events = Events(session, b.base)
    try:
        asset = (await upload_tone(session, a, MUSIC_HZ, 2.0))["assetId"]
        call_id, engine_id = await start_call(session, a, fake)
        status, held = await post(
            session, a.base, "/call/hold", {"callID": call_id, "held": True, "music": asset}
        )
        assert status == 200 and held["held"] is True, held

        def music_since(t0: float) -> list[np.ndarray]:
            """Half a second of what the engine heard since ``t0``, if it is the music."""
            pcm = engine_heard_since(fake, engine_id, t0)[-8_000:]
            loud = pcm.size == 8_000 and band_energy(pcm, 16_000, MUSIC_HZ) > 0.9
            return [pcm] if loud else []

        t0 = time.monotonic()
        (before,) = await until(lambda: music_since(t0), 5, "the music on A")

        await drain_a_to_b(session, a, b, events, call_id)
        call = await wait_call(session, b.base, call_id, "active")
        assert call["held"] is True
        t1 = time.monotonic()  # A is gone: what the engine hears now is B's
        (after,) = await until(lambda: music_since(t1), 5, "the music on B")
        assert rms_dbfs(after) == pytest.approx(rms_dbfs(before), abs=1.0)
    finally:
        await events.close()
        await a.stop()
        await b.stop()


PROMPT_HZ = 1200.0


async def test_a_prompt_playing_at_a_move_plays_on_and_other_playbacks_end_said(
    redis, session, fake, tmp_path
) -> None:
    """``POST /call/play`` playbacks still playing when the call moves. An audio asset (a
    prompt) plays on from the new owner, from where it was, under the same playbackId: its one
    ``playback.finished`` comes from there when it has played out (``framesPlayed``: the file's
    frames once, not again from its start). Audio given as bytes cannot move: it ends with
    ``playback.finished {reason: "moved"}``. Before, both went silent at the move and the app
    heard of neither's end."""
    from ..support.audio_files import make

    a, b = await bridges_sharing_storage(redis, session, fake, tmp_path)
    events = Events(session, b.base)
    try:
        # Long enough to be still playing once the drain is over on a loaded host (a 3 s
        # prompt played out on A during a 2.5 s drain there, and B had nothing to go on with).
        asset = await upload_tone(session, a, PROMPT_HZ, 6.0)
        call_id, engine_id = await start_call(session, a, fake)
        play = {"callID": call_id, "assetId": asset["assetId"]}
        status, prompt = await post(session, a.base, "/call/play", play)
        assert status == 201, prompt
        raw = base64.b64encode(make("wav", MUSIC_HZ, 20.0)).decode()
        play = {"callID": call_id, "audioBase64": raw}
        status, sent = await post(session, a.base, "/call/play", play)
        assert status == 201, sent
        await asyncio.sleep(0.5)  # both play on A

        await drain_a_to_b(session, a, b, events, call_id)
        t1 = time.monotonic()  # A is gone: what the engine hears now is B's

        def prompt_since() -> list[np.ndarray]:
            pcm = engine_heard_since(fake, engine_id, t1)[-4_000:]
            heard = pcm.size == 4_000 and band_energy(pcm, 16_000, PROMPT_HZ) > 0.5
            return [pcm] if heard else []

        await until(prompt_since, 5, "the prompt from B")

        def finished(playback_id: str) -> list[dict]:
            return [
                e
                for e in events.seen
                if e["type"] == "playback.finished" and e["playbackId"] == playback_id
            ]

        (ended,) = await until(lambda: finished(prompt["playbackId"]), 10, "the prompt's end")
        assert ended["reason"] == "played" and ended["call"]["owner"] == b.worker_id
        assert ended["framesPlayed"] == -(-asset["durationMs"] // 20)  # once through
        restarted = [
            e
            for e in events.seen
            if e["type"] == "playback.started" and e["playbackId"] == prompt["playbackId"]
        ]
        assert [e.get("resumed", False) for e in restarted] == [False, True]
        (cut,) = finished(sent["playbackId"])
        assert cut["reason"] == "moved"
    finally:
        await events.close()
        await a.stop()
        await b.stop()


async def test_every_segment_of_a_recording_adopted_after_a_crash_is_announced_once(
    redis, session, fake, tmp_path
) -> None:
    """A recorded call adopted after its worker crashed: the adopter's segment was announced,
    but the dead worker's own was left as the crash left it (its WAV headers unwritten, no
    mixed file, no sidecar: not in the index, never announced). The adopter finishes it, as
    a restart's repair would, and announces it: ``recording.ready`` once for each file."""
    a, b = await bridges_sharing_storage(redis, session, fake, tmp_path)
    data = tmp_path / "data"  # the two workers' storage
    events = Events(session, b.base)
    rtc = None
    try:
        call_id, _ = await start_call(session, a, fake)
        rtc = RtcClient(Http(session, a.base), call_id, freq=BROWSER_HZ)  # the call's audio
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await rtc.recorder.tone_arrives(ENGINE_HZ)
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status == 201
        await recording_kept(redis, call_id)
        await asyncio.sleep(1.0)  # a second in the first segment
        a.proc.kill()
        moved = await events.wait("call.moved", timeout=15)
        assert moved["reason"] == "crash" and moved["to"] == b.worker_id
        await events.wait("recording.started")
        await asyncio.sleep(0.2)  # a moment in the adopter's segment
        status, stopped = await post(session, b.base, "/call/record/stop", {"callID": call_id})
        assert status == 200, stopped

        def every_file_told() -> dict[str, str] | None:
            told = segments_announced(events.seen, call_id)
            return told if len(told) >= 6 else None  # two segments, three files each

        told = await until(every_file_told, 5, "every segment announced")
        assert told == segments_on_disk(data, call_id)
        ready = [e for e in events.seen if e["type"] == "recording.ready"]
        assert sorted(e["segment"] for e in ready) == [1, 2]
        # The dead worker's segment, finished by the adopter: whole WAVs with its audio.
        calls_dir = next(p.parent for p in data.rglob(f"{call_id}-inbound.wav"))
        print("SIZES", sorted((p.name[-20:], p.stat().st_size) for p in calls_dir.iterdir()), ready)
        assert holds(calls_dir / f"{call_id}-inbound.wav", ENGINE_HZ)
        assert holds(calls_dir / f"{call_id}-outbound.wav", BROWSER_HZ)
        first = next(e for e in ready if e["segment"] == 1)["recordings"][0]["recordingId"]
        async with session.get(f"{b.base}/call/recordings/{first}") as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"  # in the index
    finally:
        await events.close()
        if rtc is not None:
            await rtc.close()
        await a.stop()
        await b.stop()


async def test_the_recording_of_a_crashed_workers_call_that_cannot_move_is_announced(
    redis, session, tmp_path
) -> None:
    """A recorded call that cannot move (here the simulator's) ends ``worker_lost`` when its
    worker crashes: its recording's segment, left open by the crash, was never finished nor
    announced. The survivor that ends the call finishes it and sends its ``recording.ready``."""
    data = tmp_path / "data"  # shared storage
    data.mkdir()
    a, b = Bridge(redis, data), Bridge(redis, data)
    await start_bridges(session, a, b)
    events = Events(session, b.base)
    try:
        status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
        assert status == 201 and made["owner"] == a.worker_id, made
        call_id = made["callID"]
        await wait_call(session, a.base, call_id, "active")
        status, _ = await post(session, a.base, "/call/record", {"callID": call_id})
        assert status == 201
        await recording_kept(redis, call_id)
        a.proc.kill()
        ended = await wait_call(session, b.base, call_id, "ended", timeout=15)
        assert ended["endDetail"] == "worker_lost"

        def every_file_told() -> dict[str, str] | None:
            told = segments_announced(events.seen, call_id)
            return told if len(told) >= 3 else None

        told = await until(every_file_told, 5, "the dead worker's segment announced")
        assert told == segments_on_disk(data, call_id)
        ready = [e for e in events.seen if e["type"] == "recording.ready"]
        assert [e["segment"] for e in ready] == [1]
    finally:
        await events.close()
        await a.stop()
        await b.stop()
