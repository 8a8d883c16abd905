"""Two bridge instances on one real Redis (Debian's redis-server on loopback): any instance
serves any call, events reach every instance, a dead owner's calls end, Redis can go away.

Each instance is a real ``python -m bridge`` process with its own public and internal port,
as on two machines; the browser is a real aiortc peer; assertions are on the audio it hears
and on the PCM the WebSocket carries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.calls.recovery import ORPHAN_RECHECK
from bridge.timefmt import parse_iso_utc

from ..support.cluster import (
    Bridge,
    Http,
    Redis,
    bridge_env,
    get,
    post,
    require_redis,
    sse_events,
    start_bridges,
    wait_call,
    worker_lease,
)
from ..support.ports import free_port, free_ports
from ..support.processes import spawn_bridge
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

require_redis()

pytestmark = pytest.mark.timeout(120)


async def start_pair(redis: Redis, session, tmp_path, **env: str) -> tuple[Bridge, Bridge]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=dict(env))
    b = Bridge(redis, tmp_path / "b", env=dict(env))
    await start_bridges(session, a, b)
    return a, b


@pytest.fixture
async def pair(redis, session, tmp_path) -> AsyncIterator[tuple[Bridge, Bridge]]:
    a, b = await start_pair(redis, session, tmp_path)
    yield a, b
    await asyncio.gather(a.stop(), b.stop())


async def inbound_calls(session, base: str, timeout: float = 10) -> list[dict]:
    """The cluster's live inbound calls, once there is one."""

    async def ringing() -> list[dict]:
        _status, listing = await get(session, base, "/call/status")
        return [c for c in listing["calls"] if c["direction"] == "inbound"]

    return await until(ringing, timeout, "an inbound call", every=0.1)


async def hear(rtc: RtcClient, seconds: float = 1.0) -> float:
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    return dominant_frequency(rtc.recorder.since(t0), rtc.recorder.rate)


async def test_a_call_made_through_a_is_read_offered_answered_and_hung_up_through_b(
    pair, session
) -> None:
    a, b = pair
    status, call = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
    assert status == 201 and call["owner"] == a.worker_id  # a tie stays where it landed
    call_id = call["callID"]
    # Read through B: the owner's snapshot.
    read = await wait_call(session, b.base, call_id, "active")
    assert read["owner"] == a.worker_id and read["callID"] == call_id
    # Offer through B: A terminates the media; the browser hears the sim's echo of its tone.
    rtc = RtcClient(Http(session, b.base), call_id, freq=440.0)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await asyncio.sleep(0.5)
    assert await hear(rtc) == pytest.approx(440, abs=5)
    # The PCM WebSocket opened on B carries the call's audio: 20 ms frames of 16 kHz s16le.
    ws_url = b.base.replace("http://", "ws://") + f"/call/{call_id}/stream"
    frames: list[bytes] = []
    async with session.ws_connect(ws_url) as ws:
        deadline = time.monotonic() + 10
        while len(frames) < 75 and time.monotonic() < deadline:
            msg = await ws.receive(timeout=5)
            if msg.type is aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
    assert len(frames) == 75 and {len(f) for f in frames} == {640}
    pcm = np.frombuffer(b"".join(frames[25:]), dtype="<i2")
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=5)
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300  # audible, not silence
    # Hang up through B.
    status, ended = await post(session, b.base, "/call/hangup", {"callID": call_id})
    assert status == 200 and ended["state"] == "ended" and ended["endReason"] == "hangup"
    await rtc.close()
    # Both instances agree, and an ended call of A is still readable on B.
    for base in (a.base, b.base):
        final = await wait_call(session, base, call_id, "ended")
        assert final["endReason"] == "hangup" and final["owner"] == a.worker_id


async def test_an_inbound_call_of_a_is_answered_through_b(pair, session) -> None:
    a, b = pair
    status, call = await post(session, a.base, "/call/sim/incoming", {"phone": "5511988887777"})
    assert status == 201 and call["owner"] == a.worker_id and call["state"] == "ringing"
    status, answered = await post(session, b.base, "/call/answer", {"callID": call["callID"]})
    assert status == 200 and answered["state"] == "active", answered
    # A malformed request about the call gets B's own 400, never a forward.
    status, body = await post(session, b.base, "/call/mute", {"callID": call["callID"], "muted": 3})
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = await post(session, b.base, "/call/hangup", {"callID": "nosuchcall"})
    assert status == 404 and body["error"]["code"] == "call_not_found"
    # Every live call of the cluster, from either instance.
    for base in (a.base, b.base):
        status, listing = await get(session, base, "/call/status")
        assert [c["callID"] for c in listing["calls"]] == [call["callID"]]


async def wait_for_event(seen: list, match, timeout: float = 10) -> None:
    """Until an event collected in ``seen`` matches (events arrive on another task)."""
    # The list is filled by a reader task.
    await until(lambda: any(match(e) for e in seen), timeout, f"an event among {seen}", every=0.05)


def stream_id(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


async def test_sse_on_b_carries_a_calls_events_in_order_and_resumes_after_last_event_id(
    pair, session
) -> None:
    a, b = pair
    seen: list[dict[str, str]] = []

    async def collect() -> None:
        async for event in sse_events(session, b.base):
            seen.append(event)

    reader = asyncio.create_task(collect())
    await asyncio.sleep(0.5)
    _status, call = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
    call_id = call["callID"]
    await wait_call(session, a.base, call_id, "active")
    await post(session, a.base, "/call/hangup", {"callID": call_id})
    await wait_for_event(seen, lambda e: e["event"] == "call.ended")
    reader.cancel()
    mine = [e for e in seen if json.loads(e["data"])["callID"] == call_id]
    types = [e["event"] for e in mine]
    # call.report (the call's record, stored once it ended) may follow call.ended.
    lifecycle = [t for t in types if t != "call.report"]
    assert lifecycle[0] == "call.created" and lifecycle[-1] == "call.ended", types
    assert types.index("call.active") < types.index("call.ended")
    assert all(json.loads(e["data"])["call"]["owner"] == a.worker_id for e in mine)
    ids = [stream_id(e["id"]) for e in mine]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Reconnect as if the connection dropped right after call.created: the rest, in order.
    resumed: list[dict[str, str]] = []

    async def resume() -> None:
        async for event in sse_events(session, b.base, {"Last-Event-ID": mine[0]["id"]}):
            resumed.append(event)
            if event["event"] == "call.ended":
                return

    await asyncio.wait_for(resume(), 10)
    assert [e["id"] for e in resumed] == [e["id"] for e in mine[1 : types.index("call.ended") + 1]]


async def test_kill_9_of_the_owner_ends_its_calls_as_worker_lost_within_the_heartbeat_ttl(
    pair, session
) -> None:
    a, b = pair
    ttl = 2.0
    _status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
    assert made["owner"] == a.worker_id
    _status, ringing = await post(session, a.base, "/call/sim/incoming", {"phone": "5511988887777"})
    assert ringing["owner"] == a.worker_id
    ids = {made["callID"], ringing["callID"]}
    await wait_call(session, b.base, made["callID"], "active")
    seen: list[dict] = []

    async def collect() -> None:
        async for event in sse_events(session, b.base):
            seen.append(json.loads(event["data"]) | {"type": event["event"]})

    reader = asyncio.create_task(collect())
    await asyncio.sleep(0.5)
    assert a.proc is not None
    killed_at = time.time()
    a.proc.kill()
    await a.proc.wait()
    for call_id in ids:
        ended = await wait_call(session, b.base, call_id, "ended", timeout=ttl + 5)
        assert ended["endReason"] == "failed" and ended["endDetail"] == "worker_lost", ended
        # Judged by when B ended it (its clock), not by this test's polling.
        assert parse_iso_utc(ended["endedAt"]) - killed_at <= ttl + 3.0, ended
    _status, listing = await get(session, b.base, "/call/status")
    assert not ids & {c["callID"] for c in listing["calls"]}
    for call_id in ids:
        await wait_for_event(
            seen, lambda e, c=call_id: e["type"] == "call.ended" and e["callID"] == c
        )
    reader.cancel()
    assert all(e["call"]["endDetail"] == "worker_lost" for e in seen if e["type"] == "call.ended")


async def test_redis_stopped_during_a_call_keeps_its_audio_and_refuses_new_calls_until_back(
    pair, redis, session
) -> None:
    a, b = pair
    status, call = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
    call_id = call["callID"]
    await wait_call(session, a.base, call_id, "active")
    rtc = RtcClient(Http(session, a.base), call_id, freq=440.0)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await asyncio.sleep(0.5)
    await redis.stop()
    # Media never waits for the directory.
    assert await hear(rtc, 1.5) == pytest.approx(440, abs=5)
    status, body = await post(session, b.base, "/call/make", {"phone": "5521999999999"})
    assert status == 503 and body["error"]["code"] == "directory_unavailable", body
    assert "Redis" in body["error"]["message"]
    for bridge in (a, b):

        async def not_ready(base: str = bridge.base) -> dict | None:
            status, ready = await get(session, base, "/readyz")
            return ready if status == 503 else None

        ready = await until(not_ready, 5.0, "/readyz to say 503", every=0.1)
        assert any("Redis" in reason for reason in ready["reasons"]), ready
        assert ready["directory"]["up"] is False
    assert await hear(rtc, 1.0) == pytest.approx(440, abs=5)
    # Back, empty (no persistence): both re-register by themselves; A re-registers its call.
    await redis.start()
    for bridge in (a, b):

        async def ready_again(base: str = bridge.base) -> bool:
            return (await get(session, base, "/readyz"))[0] == 200

        await until(ready_again, 10.0, "/readyz to say 200 again", every=0.1)
    status, made = await post(session, b.base, "/call/make", {"phone": "5521999999999"})
    assert status == 201, made
    read = await wait_call(session, b.base, call_id, "active")
    assert read["owner"] == a.worker_id
    assert await hear(rtc, 1.0) == pytest.approx(440, abs=5)
    await rtc.close()


async def test_capacity_spreads_six_calls_over_two_instances_and_refuses_the_seventh(
    redis, session, tmp_path
) -> None:
    a, b = await start_pair(redis, session, tmp_path, BRIDGE_MAX_CALLS="3")
    try:
        owners = []
        for i in range(6):
            entry = (a, b)[i % 2]
            status, call = await post(session, entry.base, "/call/make", {"phone": "5521999999999"})
            assert status == 201, (i, call)
            owners.append(call["owner"])
        assert sorted(owners) == sorted([a.worker_id] * 3 + [b.worker_id] * 3)
        status, body = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
        assert status == 503 and body["error"]["code"] == "at_capacity", body
    finally:
        await asyncio.gather(a.stop(), b.stop())


def children_of(pid: int) -> set[int]:
    """The direct children of a process this test started (by its pid, from /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(p) for p in text}
    return found


async def test_two_workers_share_the_port_and_a_killed_worker_is_replaced(redis, tmp_path) -> None:
    port, internal = free_port(), free_ports(2)  # the two workers' internal ports
    env = bridge_env(redis, port, internal, tmp_path, BRIDGE_WORKERS="2")
    supervisor = await spawn_bridge(env)
    base = f"http://127.0.0.1:{port}"
    # A new connection per request, as clients behind a load balancer: a kept-alive connection
    # to the killed worker would be reset.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        deadline = time.monotonic() + 30
        await until(
            lambda: len(children_of(supervisor.pid)) >= 2 or supervisor.returncode is not None,
            30.0,
            "two workers",
            every=0.1,
        )
        assert supervisor.returncode is None
        # Two calls: the second goes to the less loaded worker, so both workers own one.
        owners: dict[str, str] = {}
        while len(set(owners.values())) < 2:
            assert time.monotonic() < deadline, owners
            try:
                status, call = await post(session, base, "/call/make", {"phone": "5521999999999"})
            except aiohttp.ClientConnectionError:
                status = 0  # not listening yet
            if status == 201:
                owners[call["callID"]] = call["owner"]
            else:
                await asyncio.sleep(0.2)  # a worker not registered yet
        workers = children_of(supervisor.pid)
        victim_call, victim = next(iter(owners.items()))
        victim_pid = int(victim.rpartition(":")[2].partition(".")[0])  # host:pid.boot
        assert victim_pid in workers
        os.kill(victim_pid, signal.SIGKILL)
        ended = await wait_call(session, base, victim_call, "ended", timeout=10)
        assert ended["endDetail"] == "worker_lost" and ended["endReason"] == "failed"
        survivor_call = next(c for c, owner in owners.items() if owner != victim)
        assert (await wait_call(session, base, survivor_call, "active"))["owner"] != victim
        # The supervisor started a replacement, which takes the next call (it is the emptier).
        deadline = time.monotonic() + 20
        replacements = await until(
            lambda: children_of(supervisor.pid) - workers, 20.0, "a replacement worker", every=0.1
        )
        new_pid = replacements.pop()
        while True:
            try:
                status, call = await post(session, base, "/call/make", {"phone": "5521999999999"})
            except aiohttp.ClientConnectionError as exc:
                status, call = 0, {"error": repr(exc)}  # reached the dead worker's socket
            if status == 201 and f":{new_pid}." in call["owner"]:
                break
            assert time.monotonic() < deadline, call
            await asyncio.sleep(0.3)
        supervisor.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(supervisor.communicate(), 30)
        log = err.decode()
        assert supervisor.returncode == 0, log
        assert "Traceback" not in log, log
    finally:
        await session.close()
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()


async def test_polled_engine_one_worker_claims_a_new_inbound_call_and_places_it_on_the_emptier(
    redis, session, tmp_path
) -> None:
    """Both instances poll the same ZuckZapGo engine (a fake written from its spec): a new
    inbound call becomes exactly one call, on the instance with fewer calls; a call of A is no
    orphan to B starting up; answering through either instance reaches the owner."""
    from ..fakes.zuckzapgo import FakeZuckZapGo

    fake = FakeZuckZapGo()
    await fake.start()
    env = {
        "BRIDGE_ENGINE": "zuckzapgo",
        "BRIDGE_ENGINE_URL": fake.url,
        "BRIDGE_ENGINE_TOKEN": "ztok",
        "BRIDGE_ENGINE_POLL_INTERVAL": "0.2",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    try:
        await a.start(session)
        status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
        assert status == 201 and made["owner"] == a.worker_id
        await wait_call(session, a.base, made["callID"], "active")
        # B starts while A carries a call on the same engine: not an orphan of B's.
        await b.start(session)
        await asyncio.sleep(ORPHAN_RECHECK + 1.0)  # past B's start-up sweep, a few polls
        engine_id = next(c.id for c in fake.calls.values() if c.direction == "outbound")
        assert fake.calls[engine_id].state == "active"
        assert not [r for r in fake.requests if r[1] == "/call/hangup"]
        # A new inbound call: both poll it, one claims it, the emptier (B) gets it.
        inbound = fake.ring_inbound("5511988887777")
        await inbound_calls(session, a.base)
        await asyncio.sleep(1.0)  # more polls on both: still exactly one call
        _status, listing = await get(session, b.base, "/call/status")
        ringing = [c for c in listing["calls"] if c["direction"] == "inbound"]
        assert len(ringing) == 1 and ringing[0]["owner"] == b.worker_id, listing
        # Answer it through A: forwarded to B, which answers on the engine.
        status, answered = await post(
            session, a.base, "/call/answer", {"callID": ringing[0]["callID"]}
        )
        assert status == 200 and answered["state"] == "active", answered
        assert fake.calls[inbound].answered
        # The browser on A's port hears the engine's 700 Hz through B.
        rtc = RtcClient(Http(session, a.base), ringing[0]["callID"], freq=440.0)
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await rtc.recorder.tone_arrives(700)
        assert await hear(rtc, 1.0) == pytest.approx(700, abs=5)
        await rtc.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())
        await fake.stop()


async def test_cloud_api_webhooks_reach_the_owner_and_a_new_call_lands_on_the_emptier(
    redis, session, tmp_path
) -> None:
    """Two instances on Meta's Cloud API (a fake written from the spec): Meta posts every
    webhook to A; those about B's calls are forwarded to B (which checks the signature on the
    same raw body), and a user's new call goes to the emptier instance."""
    from ..fakes.cloudapi import FakeMeta

    meta = FakeMeta()
    await meta.start()
    env = {f"BRIDGE_{name.upper()}": str(value) for name, value in meta.bridge_settings().items()}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Bridge(redis, tmp_path / "a", env=env)
    b = Bridge(redis, tmp_path / "b", env=env)
    to_a = Http(session, a.base)
    permission_on_b: asyncio.Task[dict] | None = None
    try:
        await start_bridges(session, a, b)

        async def first_permission_event() -> dict:
            async for event in sse_events(session, b.base):
                if event["event"] == "call.permission":
                    return json.loads(event["data"])
            raise AssertionError("the SSE stream ended")

        permission_on_b = asyncio.create_task(first_permission_event())
        # Outbound through B: B owns it; Meta's answer (posted to A) reaches B.
        status, made = await post(session, b.base, "/call/make", {"phone": "15550002222"})
        assert status == 201 and made["owner"] == b.worker_id, made
        outbound = next(iter(meta.meta_calls.values()))
        resp = await meta.post(to_a, meta.envelope(meta.answer_event(outbound)))
        assert resp.status == 200
        await wait_call(session, a.base, made["callID"], "active")
        # A user calls: posted to A, placed on A (B carries one call, A none).
        user = await meta.user_calls(to_a, "15550001111")
        ringing = await inbound_calls(session, b.base)
        assert ringing[0]["owner"] == a.worker_id and ringing[0]["state"] == "ringing"
        # Answered through B (forwarded to A): Meta gets accept; the browser on B hears the user.
        status, answered = await post(
            session, b.base, "/call/answer", {"callID": ringing[0]["callID"]}
        )
        assert status == 200 and answered["state"] == "active", answered
        assert "accept" in user.actions
        rtc = RtcClient(Http(session, b.base), ringing[0]["callID"], freq=440.0)
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await rtc.recorder.tone_arrives(meta.user_tone_hz)
        assert await hear(rtc, 1.0) == pytest.approx(meta.user_tone_hz, abs=5)
        await rtc.close()
        # Meta ends B's outbound call with a webhook sent to A: B ends it.
        resp = await meta.post(to_a, meta.envelope(meta.terminate_event(outbound)))
        assert resp.status == 200
        ended = await wait_call(session, a.base, made["callID"], "ended")
        assert ended["endReason"] == "remote_hangup" and ended["owner"] == b.worker_id
        # A user's call permission (a messages webhook, about no call) posted to A: its
        # call.permission event reaches SSE readers on B through the shared directory.
        grant = meta.envelope(meta.perms.callback_grant("15550003333"), field="messages")
        assert (await meta.post(to_a, grant)).status == 200
        event = await asyncio.wait_for(permission_on_b, 10)
        assert (event["type"], event["phone"], event["response"]) == (
            "call.permission",
            "15550003333",
            "accept",
        )
        assert "callID" not in event and event["source"] == "automatic"
    finally:
        if permission_on_b is not None:
            permission_on_b.cancel()
        await asyncio.gather(a.stop(), b.stop())
        await meta.stop()


async def test_a_stalled_owner_that_comes_back_after_being_reaped_ends_its_own_calls(
    pair, session
) -> None:
    """A worker frozen past the heartbeat TTL (SIGSTOP: a partition or a stall) is taken for
    dead; when it runs again it agrees, ending its calls instead of writing them back live."""
    a, b = pair
    status, made = await post(session, a.base, "/call/make", {"phone": "5521999999999"})
    assert status == 201 and made["owner"] == a.worker_id
    call_id = made["callID"]
    await wait_call(session, a.base, call_id, "active")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    try:
        reaped = await wait_call(session, b.base, call_id, "ended", timeout=10)
        assert reaped["endDetail"] == "worker_lost"
    finally:
        a.proc.send_signal(signal.SIGCONT)
    # A, running again, ends the call itself (its own view, not the directory's).
    own = await wait_call(session, a.base, call_id, "ended", timeout=10)
    assert own["endReason"] == "failed" and own["endDetail"] == "worker_lost"
    # And the cluster still sees it ended, not revived.
    await asyncio.sleep(1.0)
    _status, listing = await get(session, b.base, "/call/status")
    assert call_id not in {c["callID"] for c in listing["calls"]}
    status, again = await get(session, b.base, f"/call/{call_id}")
    assert status == 200 and again["state"] == "ended"


async def dead_worker_with_calls(client: Any, ids: list[str]) -> None:
    """A worker ``dead`` listed in ``client``'s Redis with an active outbound call of each id
    (engine call ``e<id>``), as its records stood when it stopped beating."""
    from bridge.calls import Call, CallState, Direction
    from bridge.cluster.directory import CallRecord
    from bridge.cluster.redis_writes import WORKERS, queue_record

    async with client.pipeline(transaction=False) as pipe:
        for call_id in ids:
            snapshot = Call(
                id=call_id,
                peer="1@s.whatsapp.net",
                direction=Direction.OUTBOUND,
                owner="dead",
                engine_call_id="e" + call_id,
                state=CallState.ACTIVE,
            ).snapshot()
            queue_record(pipe, CallRecord(call_id, "dead", "", "e" + call_id, snapshot), "dead", 60)
        pipe.sadd(WORKERS, "dead")
        await pipe.execute()


def survivor_reaper(client: Any, worker_id: str, lost_call: Any) -> Any:
    """A live worker's reaper on ``client``'s Redis (heartbeat TTL 1 s, always settled, no
    directory writes of its own to wait for) that hands a dead worker's calls to ``lost_call``."""
    from bridge.cluster.redis_reaper import Reaper

    async def flush(timeout: float) -> None:
        pass

    return Reaper(
        client,
        worker_id=worker_id,
        heartbeat_ttl=1.0,
        ended_ttl=60,
        settled=lambda: True,
        down=lambda exc: None,
        flush=flush,
        end_lost_call=lost_call,
    )


async def test_a_dead_workers_calls_are_reaped_side_by_side(redis) -> None:
    """An adoption waits for what it re-opens (a model's session set-up, seconds when the model
    is far or away): one call's must not hold up the dead worker's other calls. Here each
    adoption waits for the other to have begun: one after the other, the first never gets
    there (it gives up after 10 s, the test's bound, not a timing)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis.url, decode_responses=True)
    ids = ["call-1", "call-2"]
    await dead_worker_with_calls(client, ids)
    begun: list[str] = []
    adopted: list[str] = []
    both = asyncio.Event()

    async def lost_call(call: Any, attachments: Any) -> None:
        begun.append(call.id)
        if len(begun) == len(ids):
            both.set()
        await asyncio.wait_for(both.wait(), 10)
        adopted.append(call.id)

    reaper = survivor_reaper(client, "alive", lost_call)
    try:
        await reaper.reap_once()
    finally:
        await client.aclose()
    assert sorted(adopted) == ids


async def test_a_long_reap_keeps_its_claim_so_no_second_survivor_reaps(redis, monkeypatch) -> None:
    """A survivor's claim on a dead worker is renewed while it reaps: a reap that outlasts the
    claim's time (an adoption waiting on a slow engine, a Redis that stalls) is not raced by a
    second survivor ending the same calls again. Here the claim lasts 0.6 s and the first
    survivor's adoption 1.5 s; the second survivor tries at 0.9 s and 1.2 s."""
    import redis.asyncio as aioredis

    from bridge.cluster import redis_reaper

    monkeypatch.setattr(redis_reaper, "REAP_CLAIM_MS", 600)
    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["slow"])
    ended: list[str] = []

    def survivor(name: str, takes: float) -> Any:
        async def lost_call(call: Any, attachments: Any) -> None:
            await asyncio.sleep(takes)
            ended.append(name)

        return survivor_reaper(client, name, lost_call)

    try:
        first = asyncio.create_task(survivor("first", 1.5).reap_once())
        second = survivor("second", 0.0)
        for wait in (0.9, 0.3):  # at 0.9 s and 1.2 s: the claim's own time long past
            await asyncio.sleep(wait)
            await second.reap_once()
            assert await client.get(f"{redis_reaper.P}reap:dead") == "first"
        await asyncio.wait_for(first, 5)
        assert ended == ["first"], ended
        assert not await client.exists(f"{redis_reaper.P}reap:dead")  # released when done
    finally:
        await client.aclose()


async def test_the_heartbeat_goes_on_when_ending_a_fenced_workers_calls_fails(
    redis, caplog
) -> None:
    """A worker taken for dead ends its own calls at its next beat; a bug in that ending (a
    callback of the calls' side) is logged and the beat goes on, ending them again at the next
    one. Before, it ended the heartbeat loop: the live worker stayed dead to the others for good
    while it still took calls (each reaped by a survivor a TTL later)."""
    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import P, worker_key

    client = aioredis.from_url(redis.url, decode_responses=True)
    endings: list[int] = []

    async def end_local_calls() -> None:
        endings.append(len(endings))
        if len(endings) == 1:
            raise RuntimeError("a bug in ending the calls")

    lease = worker_lease(client, 0.6, end_local_calls=end_local_calls)
    await client.set(f"{P}reaped:w1", "a-survivor")
    beating = asyncio.ensure_future(lease.run())
    try:
        await until(lambda: len(endings) == 2, what="the calls ended again at a later beat")

        async def unfenced() -> bool:
            return not await client.exists(f"{P}reaped:w1")

        await until(unfenced, what="the fence taken off by the second ending")
        await client.delete(worker_key("w1"))
        await until(lambda: client.exists(worker_key("w1")), what="a beat after the fence")
        assert not beating.done()
        assert [r.levelno for r in caplog.records if "heartbeat failed" in r.getMessage()] == [
            logging.ERROR
        ]
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
        await client.aclose()


async def test_an_event_that_is_not_json_costs_that_write_only(redis, caplog) -> None:
    """The directory's writer serialises each event when it writes it: one that is not JSON
    (a bug where it was made) is dropped and logged, and the writes behind it go on. Before,
    its ``TypeError`` ended the writer: no event or record of this worker reached Redis again."""
    import redis.asyncio as aioredis

    from bridge.calls.events import CallEvent
    from bridge.cluster.redis_writes import EVENTS, WriteQueue

    client = aioredis.from_url(redis.url, decode_responses=True)
    writes = WriteQueue(
        client,
        worker_id="w1",
        ended_ttl=60,
        backlog=100,
        up=lambda: True,
        down=print,
        stopping=lambda: False,
    )
    writes.push(CallEvent("call.bad", {}, "2026-01-01T00:00:00Z", {"x": object()}), None)
    writes.push(CallEvent("call.good", {}, "2026-01-01T00:00:00Z", {"n": 1}), None)
    writing = asyncio.ensure_future(writes.run())
    try:

        async def written() -> list[str]:
            return [fields["t"] for _, fields in await client.xrange(EVENTS)]

        assert await until(written, what="the event behind the bad one written") == ["call.good"]
        assert not writing.done()
        assert [r.levelno for r in caplog.records if "dropped" in r.getMessage()] == [logging.ERROR]
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await client.aclose()


async def test_a_record_queued_before_a_handover_does_not_give_the_call_back(redis) -> None:
    """The old owner queued a write of the call's record (an event of the call, its owner still
    itself) while the call moved; the new owner's ``take_over`` landed first. The late write
    must not name the old owner again: the directory would list the call there, and the
    reaper end it with that worker (the rolling-restart test lost calls this way). An ended
    record of the dead owner's, written by the survivor that ends it, still lands."""
    import redis.asyncio as aioredis

    from bridge.calls import Call, CallState, Direction
    from bridge.cluster.directory import CallRecord
    from bridge.cluster.redis_writes import call_key, owned_key, queue_record

    def record(owner: str, state: CallState) -> CallRecord:
        call = Call(
            id="moving",
            peer="1@s.whatsapp.net",
            direction=Direction.OUTBOUND,
            owner=owner,
            engine_call_id="e-moving",
            state=state,
        )
        return CallRecord("moving", owner, "", "e-moving", call.snapshot())

    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        async with client.pipeline(transaction=False) as pipe:
            queue_record(pipe, record("a", CallState.ACTIVE), "a", 60)
            await pipe.execute()
        async with client.pipeline(transaction=True) as pipe:  # b's take_over
            queue_record(pipe, record("b", CallState.ACTIVE), "b", 60, take_over=True)
            pipe.srem(owned_key("a"), "moving")
            await pipe.execute()
        for state in (CallState.ACTIVE, CallState.ENDED):  # a's late writes
            async with client.pipeline(transaction=False) as pipe:
                queue_record(pipe, record("a", state), "a", 60)
                assert await pipe.execute() == [0]
        stored = CallRecord.from_json(await client.get(call_key("moving")))
        assert (stored.owner, stored.live) == ("b", True)
        assert await client.smembers(owned_key("a")) == set()
        assert await client.smembers(owned_key("b")) == {"moving"}
        assert await client.ttl(call_key("moving")) == -1
        # b dies; the survivor ends the call as b's: written, with the ended TTL.
        async with client.pipeline(transaction=False) as pipe:
            queue_record(pipe, record("b", CallState.ENDED), "survivor", 60)
            assert await pipe.execute() == [1]
        stored = CallRecord.from_json(await client.get(call_key("moving")))
        assert (stored.owner, stored.live) == ("b", False)
        assert await client.smembers(owned_key("b")) == set()
        assert 0 < await client.ttl(call_key("moving")) <= 60
    finally:
        await client.delete(
            call_key("moving"), owned_key("a"), owned_key("b"), "bridge:engine:e-moving"
        )
        await client.aclose()


async def test_a_reap_cut_short_by_redis_is_taken_up_again_by_its_survivor(
    redis, monkeypatch
) -> None:
    """Redis stops answering while a survivor reaps a dead worker (here it is frozen after the
    first call is handed on): the reap fails and the survivor's claim stays, as it must (no
    second survivor races it). Once Redis answers again the same survivor takes its reap up
    again and ends the calls it had not reached. Before, its own claim refused it (``SET NX``)
    for the claim's five minutes: the dead worker's other calls stayed live, unreachable, that
    long."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from bridge.cluster import redis_reaper
    from bridge.cluster.redis_writes import FAILURES, WORKERS, owned_key

    monkeypatch.setattr(redis_reaper, "REAP_AT_ONCE", 1)  # one call after the other
    # Short timeouts, no retry: a frozen Redis is a failed command at once.
    client = aioredis.from_url(
        redis.url, decode_responses=True, socket_timeout=0.3, retry=Retry(NoBackoff(), 0)
    )
    ids = ["call-1", "call-2"]
    await dead_worker_with_calls(client, ids)
    ended: list[str] = []
    assert redis.proc is not None

    async def lost_call(call: Any, attachments: Any) -> None:
        if not ended:
            redis.proc.send_signal(signal.SIGSTOP)  # Redis stops answering mid-reap
        ended.append(call.id)

    reaper = survivor_reaper(client, "alive", lost_call)
    try:
        with pytest.raises(FAILURES):
            await reaper.reap_once()
        redis.proc.send_signal(signal.SIGCONT)
        assert len(ended) == 1
        assert await client.get(f"{redis_reaper.P}reap:dead") == "alive"  # still its own
        await survivor_reaper(client, "another", lost_call).reap_once()
        assert len(ended) == 1  # no second survivor
        await reaper.reap_once()  # the same survivor, Redis back
        assert set(ended) == set(ids), ended
        assert not await client.exists(owned_key("dead"), f"{redis_reaper.P}reap:dead")
        assert "dead" not in await client.smembers(WORKERS)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
        await client.aclose()


async def test_a_call_that_ended_while_its_end_could_not_be_written_leaves_no_ghost(redis) -> None:
    """While Redis is away a worker's directory writes wait in a bounded queue, the oldest
    dropped past 10,000: a call that ended meanwhile may lose its end. When Redis answered
    again the worker wrote its live calls back, but the directory still listed the ended one
    as this worker's, live, for good: in every ``GET /call/status``, against its tenant's
    ``maxCalls``. Coming back, the worker now takes off what it lists that is not live here."""
    import redis.asyncio as aioredis

    from bridge.calls import Call, CallState, Direction
    from bridge.cluster.directory import CallRecord
    from bridge.cluster.redis import RedisDirectory
    from bridge.cluster.redis_writes import call_key, owned_key, queue_record, tenant_calls_key

    def call(call_id: str) -> Call:
        return Call(
            id=call_id,
            peer="1@s.whatsapp.net",
            direction=Direction.OUTBOUND,
            owner="w1",
            engine_call_id="e" + call_id,
            state=CallState.ACTIVE,
            tenant_id="ten_acme",
        )

    live, ghost = call("live"), call("ghost")
    client = aioredis.from_url(redis.url, decode_responses=True)
    async with client.pipeline(transaction=False) as pipe:  # as written before Redis went
        for c in (live, ghost):
            queue_record(pipe, CallRecord(c.id, "w1", "", c.engine_call_id, c.snapshot()), "w1", 60)
        await pipe.execute()

    async def nothing(*args: Any) -> None:
        return None

    directory = RedisDirectory(
        redis.url,
        worker_id="w1",
        internal_url="http://127.0.0.1:1",
        heartbeat_ttl=1.5,
        ended_ttl=60,
        backlog=100,
        max_calls=10,
        local_calls=lambda: [live],  # "ghost" ended here; its end was never written
        end_lost_call=nothing,
        end_local_calls=nothing,
    )
    await directory.start()  # Redis answers: the worker catches up
    try:
        assert directory.available
        assert await client.smembers(owned_key("w1")) == {"live"}
        assert await client.smembers(tenant_calls_key("ten_acme")) == {"live"}
        assert 0 < await client.ttl(call_key("ghost")) <= 60
        assert [s["callID"] for s in await directory.live_snapshots()] == ["live"]
        assert await directory.tenant_calls("ten_acme") == {"live"}
        # An id whose record is gone, or live but listed by no worker (a dead worker's call its
        # reap could not end), is dropped once it is verified.
        stray = call("stray")
        stray.owner = "dead"
        async with client.pipeline(transaction=False) as pipe:
            queue_record(
                pipe, CallRecord("stray", "dead", "", "estray", stray.snapshot()), "dead", 60
            )
            await pipe.execute()
        await client.delete(owned_key("dead"))  # the reap forgot the dead worker
        await client.sadd(tenant_calls_key("ten_acme"), "gone")
        assert await directory.tenant_calls("ten_acme") == {"live", "gone", "stray"}
        assert await directory.tenant_calls("ten_acme", True) == {"live"}
        assert await client.smembers(tenant_calls_key("ten_acme")) == {"live"}
    finally:
        await directory.close()
        await client.aclose()
