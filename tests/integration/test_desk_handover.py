"""A call ringing agents moves with a deploy's drain: two workers (in-process apps) on one real
Redis, each the other's peer at its own address, and the fake ZuckZapGo (its calls can move).
The worker carrying the call hands it over; the new owner's desk resumes the call's route from
the ring the store kept, and the agent who accepts takes the call there."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import wave
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import DESK, HANDOVER, MANAGER
from bridge.app import create_app
from bridge.calls.letting_go import standing_still
from bridge.config.loader import settings_for_tests
from bridge.desk.handoffs import LEG_LOOK

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.calls import wait_state
from ..support.ports import free_port
from ..support.requires import require
from ..support.sipp import Sipp, tools_missing
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes
from .test_desk import Agent
from .test_desk_leg import LegAgent

pytestmark = pytest.mark.timeout(30)

SECRET = "s" * 32


@pytest.fixture
async def fake() -> AsyncIterator[FakeZuckZapGo]:
    engine = FakeZuckZapGo(token="ztok")
    await engine.start()
    yield engine
    await engine.stop()


async def worker(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, name: str, url: str, **extra: Any
) -> Any:
    """A worker of the cluster on the fake engine: its internal address is its test server's
    (``extra``: more settings)."""
    port = free_port()
    monkeypatch.setenv("BRIDGE_WORKER_ID", name)
    settings = settings_for_tests(
        **{
            "directory": redis.url,
            "internal_secret": SECRET,
            "internal_url": f"http://127.0.0.1:{port}",
            "engine": "zuckzapgo",
            "engine_url": url,
            "engine_token": "ztok",
            "engine_poll_interval": 0.1,
            **extra,
        }
    )
    return await aiohttp_client(create_app(settings), server_kwargs={"port": port})


async def test_a_drained_ringing_call_rings_its_agents_again_on_the_new_owner(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """The desk resumed a moved call's route on ``call.moved`` alone, which in a drain only
    the old worker publishes: on the new owner the call rang nobody any more, and an accept
    reached no route. It follows ``call.carried`` now, told where the call is carried on."""
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url)
    steps = [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    ann = await Agent.connect(a, "ann")
    engine_id = fake.ring_inbound("5521988880005")
    call_id = (await ann.next("ringing"))["callID"]
    old, new = (a, b) if a.app[MANAGER].find_runtime(call_id) else (b, a)
    await old.app[HANDOVER].drain()
    assert old.app[MANAGER].find_runtime(call_id) is None  # handed over
    assert new.app[MANAGER].find_runtime(call_id) is not None
    await ann.next("ringing.stopped")
    assert (await ann.next("ringing"))["callID"] == call_id  # rung again, by the new owner
    await ann.send(type="accept", callID=call_id)
    assert (await ann.next("accepted"))["callID"] == call_id
    snapshot = await wait_state(new, call_id, "active")
    assert snapshot["owner"] == new.app[MANAGER].owner
    assert fake.calls[engine_id].state == "active"
    await ann.ws.close()


async def test_a_ringing_call_moved_as_its_hours_end_rings_on_its_in_hours_steps_there(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """The new owner resumed a moved ringing call on its route's steps for the time of the
    move: a call that began ringing in opening hours and moved just after they ended jumped
    from ringing ann to the steps for closed hours (a hang-up here). The list a call began
    on is kept with its ring now: the new owner rings ann again, and her accept answers."""
    now = [datetime(2025, 1, 6, 16, 59, 59, tzinfo=UTC).timestamp()]  # Monday 17:59:59 Paris
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url)
    for client in (a, b):
        client.app[DESK].clock = lambda: now[0]
    steps = [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
    hours = {"timezone": "Europe/Paris", "weekly": {"mon": [["09:00", "18:00"]]}}
    body = {"name": "main", "numbers": "default", "steps": steps}
    resp = await a.post("/routes", json={**body, "hours": {**hours, "closed": [{"hangup": {}}]}})
    assert resp.status == 201, await resp.text()
    ann = await Agent.connect(a, "ann")
    engine_id = fake.ring_inbound("5521988880012")
    call_id = (await ann.next("ringing"))["callID"]
    old, new = (a, b) if a.app[MANAGER].find_runtime(call_id) else (b, a)
    now[0] += 2.0  # 18:00:01: closed
    await old.app[HANDOVER].drain()
    assert new.app[MANAGER].find_runtime(call_id) is not None
    await ann.next("ringing.stopped")
    assert (await ann.next("ringing"))["callID"] == call_id  # its in-hours step, there
    await ann.send(type="accept", callID=call_id)
    assert (await ann.next("accepted"))["callID"] == call_id
    assert (await wait_state(new, call_id, "active"))["owner"] == new.app[MANAGER].owner
    assert fake.calls[engine_id].state == "active"
    await ann.ws.close()


async def heard(agent: Agent, last: str) -> list[str]:
    """The types of what ``agent`` hears, up to and including the first ``last``."""
    types: list[str] = []
    try:
        async with asyncio.timeout(5.0):
            while not types or types[-1] != last:
                types.append(json.loads((await agent.ws.receive()).data)["type"])
    except TimeoutError:
        raise AssertionError(f"no {last} within 5 s; heard {types}") from None
    return types


async def ringing_two(aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: Any) -> Any:
    """Two workers, a route ringing ann (on the first) and bob (on the second) at once, and a
    call ringing them: the call's old (its owner) and new worker, the agents, its ids."""
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url)
    steps = [{"ring": {"agents": ["ann", "bob"], "strategy": "simultaneous", "timeoutS": 30}}]
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    ann, bob = await Agent.connect(a, "ann"), await Agent.connect(b, "bob")
    engine_id = fake.ring_inbound("5521988880006")
    call_id = (await ann.next("ringing"))["callID"]
    await bob.next("ringing")
    old, new = (a, b) if a.app[MANAGER].find_runtime(call_id) else (b, a)
    return old, new, ann, bob, call_id, engine_id


async def accept_as_it_moves(old: Any, ann: Agent, call_id: str, refused: Any = None) -> None:
    """Drain ``old``, held where it hands the call over while ann accepts, until her accept
    reached the old worker's run (on the bus); ``refused``: the target's answer instead of
    the real one (the call stays)."""
    handover, run = old.app[HANDOVER], old.app[DESK].run_of(call_id)
    assert run is not None
    sending, go = asyncio.Event(), asyncio.Event()
    send, offer = handover._send, run.offer
    offered: list[dict[str, Any]] = []

    async def held(target: Any, moved: Any) -> Any:
        sending.set()
        await go.wait()
        return refused or await send(target, moved)

    def counted(message: dict[str, Any]) -> None:
        offered.append(message)
        offer(message)

    handover._send, run.offer = held, counted
    drain = asyncio.create_task(handover.drain())
    await sending.wait()
    await ann.send(type="accept", callID=call_id)
    await until(lambda: offered, 5.0, "the accept on the bus, at the old worker's run")
    with suppress(AssertionError):  # before the fix, the old run took it here
        await until(lambda: run.winner is not None, 0.5)
    go.set()
    await drain


async def taken_once(
    carrier: Any, fake: FakeZuckZapGo, ann: Agent, bob: Agent, call_id: str, engine_id: str
) -> None:
    """The call is active on ``carrier``, answered once, ann told once she has it, bob that
    it is taken; hung up."""
    snapshot = await wait_state(carrier, call_id, "active")
    assert snapshot["owner"] == carrier.app[MANAGER].owner
    resp = await carrier.post("/call/hangup", json={"callID": call_id})
    assert resp.status == 200, await resp.text()
    # Everything the takes said reached ann before the end the carrier's run tells her.
    assert (await heard(ann, "call.ended")).count("accepted") == 1
    assert "call.taken" in await heard(bob, "call.taken")
    answers = [r for r in fake.requests if r[1] == "/call/answer"]
    assert [r[2].get("callId") for r in answers] == [engine_id]
    await ann.ws.close()
    await bob.ws.close()


async def test_an_accept_landing_as_a_drain_moves_the_call_is_acted_on_once(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """Both workers ran the ringing call's route while it moved: the old one until it let
    go, the new one from the ``call.carried`` before that. An accept landing then won the
    round's claim, and each run acted on it — the old one from the bus, the new one finding
    the claim as it resumed: two ``accepted``, the engine's call answered twice. The old
    run stands still from the move's start now, and the run that carries the call on acts."""
    old, new, ann, bob, call_id, engine_id = await ringing_two(
        aiohttp_client, redis, monkeypatch, fake
    )
    await accept_as_it_moves(old, ann, call_id)
    assert old.app[MANAGER].find_runtime(call_id) is None  # handed over
    await taken_once(new, fake, ann, bob, call_id, engine_id)


async def test_an_accept_landing_as_a_move_fails_is_taken_where_the_call_stays(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """The route standing still while its call moves goes on when the move fails (the
    target refuses the call): the accept that landed meanwhile is taken there, once."""
    old, _, ann, bob, call_id, engine_id = await ringing_two(
        aiohttp_client, redis, monkeypatch, fake
    )
    await accept_as_it_moves(old, ann, call_id, refused=(503, "no room after all"))
    await taken_once(old, fake, ann, bob, call_id, engine_id)


async def answered_by_ann(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: Any, bob_groups: list[str]
) -> Any:
    """Two workers, a route ringing ann (on the first); bob (``bob_groups``) on the second; a
    call ann answered: its old (its owner) and new worker, the agents, the call's id."""
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url)
    steps = [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    ann = await Agent.connect(a, "ann")
    bob = await Agent.connect(b, "bob", bob_groups)
    fake.ring_inbound("5521988880007")
    call_id = (await ann.next("ringing"))["callID"]
    await ann.send(type="accept", callID=call_id)
    await ann.next("accepted")
    assert (await ann.next("presence"))["state"] == "busy"
    old, new = (a, b) if a.app[MANAGER].find_runtime(call_id) else (b, a)
    await wait_state(old, call_id, "active")
    return old, new, ann, bob, call_id


async def ended_and_free(new: Any, fake: FakeZuckZapGo, ann: Agent, call_id: str) -> None:
    """The call, hung up on ``new``, ends for ann, who is free again: rung for the next call."""
    resp = await new.post("/call/hangup", json={"callID": call_id})
    assert resp.status == 200, await resp.text()
    assert (await ann.next("call.ended"))["callID"] == call_id
    assert (await ann.next("presence"))["state"] == "available"
    fake.ring_inbound("5521988880008")
    assert (await ann.next("ringing"))["callID"] != call_id


async def test_an_answered_call_drained_keeps_its_agent_on_the_new_owner(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """The new owner resumed a moved call's route only while it rang: for an answered call
    no run was there, so the agent on it heard none of its events, not even its end, and
    stayed busy. The new owner binds the agent the ring record names now. An event of the
    call while the new owner still read that record (a clean-clone run under load: the mute
    right after the drain) was told to nobody, the agent not known yet; it is kept until it
    is, and told then."""
    old, new, ann, bob, call_id = await answered_by_ann(
        aiohttp_client, redis, monkeypatch, fake, []
    )
    store, reading, read = new.app[DESK].store, asyncio.Event(), asyncio.Event()
    ring = store.ring

    async def held(call: str) -> Any:  # the new owner's read of the record it carries on
        reading.set()
        await read.wait()
        return await ring(call)

    monkeypatch.setattr(store, "ring", held)
    await old.app[HANDOVER].drain()
    assert new.app[MANAGER].find_runtime(call_id) is not None
    await reading.wait()
    resp = await new.post("/call/mute", json={"callID": call_id, "muted": True})
    assert resp.status == 200, await resp.text()
    read.set()
    assert (await ann.next("call.muted"))["callID"] == call_id  # the call's events, from new
    await ended_and_free(new, fake, ann, call_id)
    await ann.ws.close()
    await bob.ws.close()


async def test_a_transfer_ringing_as_its_call_drains_fails_cleanly_on_the_new_owner(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """A transfer to a group ringing when the call moved was lost: the caller stayed held,
    the agent who asked was never told, nor freed at the end. The new owner closes the
    transfer's ring (an accept that won it takes the call; none here): the group hears
    ``ringing.stopped``, the caller is off hold, the agent told ``transfer.failed`` keeps
    the call."""
    old, new, ann, bob, call_id = await answered_by_ann(
        aiohttp_client, redis, monkeypatch, fake, ["support"]
    )
    await ann.send(type="transfer", callID=call_id, group="support", timeoutS=30)
    assert (await bob.next("ringing"))["callID"] == call_id
    await old.app[HANDOVER].drain()
    assert (await bob.next("ringing.stopped"))["callID"] == call_id
    assert (await ann.next("transfer.failed"))["callID"] == call_id
    assert (await wait_state(new, call_id, "active"))["held"] is False
    await bob.send(type="accept", callID=call_id)  # too late: the new owner closed the round
    assert (await bob.next("call.taken"))["callID"] == call_id
    await ended_and_free(new, fake, ann, call_id)
    await ann.ws.close()
    await bob.ws.close()


async def test_a_transfer_asked_as_its_call_moves_is_refused_409_moving(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """A transfer asked of the old worker while the call moves began there after its run was
    saved for the new owner, and was lost with the old worker's copy: 202, then nothing.
    Refused now (``409 moving``: ask again); the agent keeps the call on the new owner."""
    old, new, ann, bob, call_id = await answered_by_ann(
        aiohttp_client, redis, monkeypatch, fake, ["support"]
    )
    handover = old.app[HANDOVER]
    sending, go = asyncio.Event(), asyncio.Event()
    send = handover._send

    async def held(target: Any, moved: Any) -> Any:
        sending.set()
        await go.wait()
        return await send(target, moved)

    handover._send = held
    drain = asyncio.create_task(handover.drain())
    await sending.wait()
    resp = await old.post("/call/transfer", json={"callID": call_id, "group": "support"})
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "moving"
    go.set()
    await drain
    await ended_and_free(new, fake, ann, call_id)
    await ann.ws.close()
    await bob.ws.close()


def received(sipp: Sipp) -> list[tuple[str, str]]:
    """The requests SIPp received, in order: (method, Call-ID)."""
    found = re.findall(
        r"message received.*?\n\s*([A-Z]+) sip:.*?\nCall-ID:\s*(\S+)",
        sipp.sent_and_received(),
        re.S | re.I,
    )
    return [(method, call) for method, call in found]


@pytest.mark.parametrize("moves", [True, False], ids=["moved", "move_failed"])
async def test_a_phone_a_sip_step_rings_as_its_call_drains_is_rung_by_one_worker_at_a_time(
    aiohttp_client, redis, monkeypatch, fake, tmp_path, moves
) -> None:
    """The new owner began the step again while the old worker's phone still rang (its
    CANCEL came only as the old worker let go): the phone rang twice at once. The old
    worker's ring ends before the call's state leaves (its CANCEL answered 487, ACKed), and
    only then does the new owner ring the phone, once; the call's hang-up there cancels it.
    A move that fails (the target refuses): the old worker rings the phone again itself."""
    require(not tools_missing(), tools_missing(), "make system-deps (Debian sip-tester)")
    sipp = Sipp(tmp_path, "pbx_phone_no_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1", calls=2)
    listen = {"sip_trunk_listen": "127.0.0.1:0"}
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url, **listen)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url, **listen)
    body = {"name": "pbx", "uri": f"sip:127.0.0.1:{sipp.port};transport=udp", "keepalive": 0}
    resp = await a.post("/trunks", json={**body, "codecs": ["PCMU"]})
    assert resp.status == 201, await resp.text()
    trunk_id = (await resp.json())["trunkID"]

    async def known_on_b() -> bool:
        return (await b.get(f"/trunks/{trunk_id}")).status == 200

    await until(known_on_b, 5.0, "the trunk on worker B")
    steps = [{"sip": {"uri": "sip:2002@127.0.0.1", "trunkID": trunk_id, "timeoutS": 20}}]
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    try:
        fake.ring_inbound("5521988880009")
        await until(lambda: len(received(sipp)) == 1, 5.0, "the phone rung")
        old, new = (a, b) if a.app[MANAGER].live_calls() else (b, a)
        call_id = old.app[MANAGER].live_calls()[0].id
        handover = old.app[HANDOVER]
        send = handover._send

        async def slow_to_let_go(target: Any, moved: Any) -> Any:
            """The old worker lets go only once the new owner rang the phone (as when it
            relays a browser, up to 10 s): before, the phone rang from both at once."""
            if not moves:
                return 503, "no room after all"
            answer = await send(target, moved)
            invites = lambda: [m for m, _ in received(sipp)].count("INVITE")  # noqa: E731
            await until(lambda: invites() == 2, 5.0, "the new owner's INVITE")
            return answer

        handover._send = slow_to_let_go
        await handover.drain()
        carrier = new if moves else old
        assert carrier.app[MANAGER].find_runtime(call_id) is not None
        await until(lambda: len(received(sipp)) == 4, 5.0, "the phone rung again")
        resp = await carrier.post("/call/hangup", json={"callID": call_id})
        assert resp.status == 200, await resp.text()
        assert await sipp.finish(10.0) == 0, sipp.report()
    finally:
        await sipp.stop()
    (first, _), (cancel, first_cancelled), (ack, _), (second, _) = received(sipp)[:4]
    assert (first, cancel, ack, second) == ("INVITE", "CANCEL", "ACK", "INVITE")
    assert [m for m, _ in received(sipp)] == ["INVITE", "CANCEL", "ACK"] * 2
    assert first_cancelled == received(sipp)[0][1] != received(sipp)[3][1]


async def test_an_agents_leg_follows_its_answered_call_to_the_new_owner(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """ann's connected leg (her socket on B) was lent to the call on A; A drained, the call
    moved to B, and A's stream to her leg closed with A's copy of the call: her leg parked,
    and she heard nothing more of the caller. The new owner lends it to the call again once
    it is idle: she hears the caller's 700 Hz (the fake engine's tone) from B."""
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url)
    # B looks at the engine's calls seldom: the call rings on A.
    b = await worker(
        aiohttp_client, redis, monkeypatch, "worker-b", fake.url, engine_poll_interval=5
    )
    steps = [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    ann = LegAgent(await Agent.connect(b, "ann"))
    await ann.offer()
    try:
        fake.ring_inbound("5521988880010")
        call_id = (await ann.agent.next("ringing"))["callID"]
        assert a.app[MANAGER].find_runtime(call_id) is not None
        await ann.agent.send(type="accept", callID=call_id)
        assert (await ann.agent.next("accepted"))["leg"] is True
        await wait_state(a, call_id, "active")
        await a.app[HANDOVER].drain()
        runtime = b.app[MANAGER].find_runtime(call_id)
        assert runtime is not None
        # B begins to move the call on at once (a rolling drain): what B's run saves for the
        # next owner says whether her leg is on the call, and stays true while it stands still
        # (before, her leg was lent after that save: the next owner never brought it back).
        run, store = b.app[DESK].run_of(call_id), b.app[DESK].store
        # (Her leg may have joined already, if A let go of it first: then the save says so.)
        async with standing_still(runtime):
            lent = run.leg_lent
            await asyncio.sleep(3 * LEG_LOOK)
            assert (await store.ring(call_id))["leg"] is run.leg_lent is lent
        moved = time.monotonic()  # it stays on B: her leg joins it here

        def hears_the_caller() -> None:
            heard = ann.recorder.since(moved + 0.3)
            assert len(heard) >= ann.recorder.rate * 0.4, "not enough heard yet"
            assert abs(dominant_frequency(heard, ann.recorder.rate) - fake.tone_hz) < 15
            assert np.sqrt(np.mean(np.square(heard / 32768.0))) > 0.01

        await until_passes(hears_the_caller, 5.0)
        resp = await b.post("/call/hangup", json={"callID": call_id})
        assert resp.status == 200, await resp.text()
        assert (await ann.agent.next("call.ended"))["callID"] == call_id
    finally:
        await ann.close()
        await ann.agent.ws.close()


def tone_wav(seconds: float, hz: float = 440.0) -> bytes:
    """An audio asset: ``seconds`` of a tone, 16 kHz mono WAV."""
    n = int(16000 * seconds)
    pcm = (np.sin(2 * np.pi * hz * np.arange(n) / 16000) * 8000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


async def answered_by_its_route(
    aiohttp_client: Any,
    redis: Any,
    monkeypatch: Any,
    fake: Any,
    tmp_path: Any,
    steps: Any,
    each: Any = None,
) -> Any:
    """Two workers sharing a data directory (the assets, the recordings), a route of
    ``steps`` (``"ASSET"`` in them: a 1.5 s asset's id) and a call it rings (``each``: called
    with each worker first): the call's old (its owner) and new worker, its id, its engine
    id, and the events the new one says."""
    data = {"data_dir": str(tmp_path / "data")}
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url, **data)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url, **data)
    resp = await a.post("/call/audio-assets", data={"audio": tone_wav(1.5)})
    assert resp.status == 201, await resp.text()
    steps = json.loads(json.dumps(steps).replace("ASSET", (await resp.json())["assetId"]))
    resp = await a.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    said: dict[Any, list[tuple[str, dict[str, Any]]]] = {a: [], b: []}
    for client in (a, b):
        if each is not None:
            each(client)
        client.app[MANAGER].events.observe(
            lambda event, _, to=said[client]: to.append((event.type, event.data))
        )
    engine_id = fake.ring_inbound("5521988880011")
    live = lambda: [c for c in (a, b) if c.app[MANAGER].live_calls()]  # noqa: E731
    [old] = await until(live, 5.0, "the call on a worker")
    new = b if old is a else a
    call_id = old.app[MANAGER].live_calls()[0].id
    return old, new, call_id, engine_id, said[new]


async def test_a_play_step_under_way_as_its_call_drains_goes_on_to_the_next_step_there(
    aiohttp_client, redis, monkeypatch, fake, tmp_path
) -> None:
    """The playback moved with the call and played out on the new owner, but nothing ran the
    route's next step there: the caller sat on a silent answered call. The new owner's run
    waits for the playback it carries on, then runs the next step (a hang-up here)."""
    old, new, call_id, engine_id, said = await answered_by_its_route(
        aiohttp_client,
        redis,
        monkeypatch,
        fake,
        tmp_path,
        [{"play": {"assetId": "ASSET"}}, {"hangup": {}}],
    )
    runtime = old.app[MANAGER].find_runtime(call_id)
    await until(lambda: runtime.attached("playback"), 5.0, "the asset playing")
    await old.app[HANDOVER].drain()
    assert new.app[MANAGER].find_runtime(call_id) is not None
    await until(lambda: fake.calls[engine_id].state == "ended", 5.0, "the next step's hang-up")
    finished = [data for type_, data in said if type_ == "playback.finished"]
    assert [f["reason"] for f in finished] == ["played"]  # played out there, then the step


async def test_a_voicemail_recording_as_its_call_drains_ends_at_its_max_there_whole(
    aiohttp_client, redis, monkeypatch, fake, tmp_path
) -> None:
    """The recording moved with the call (its next segment, on the new owner), but nothing
    there ended the voicemail at its ``maxS`` nor said ``call.voicemail``: the caller was
    recorded until they hung up, and the message was lost. The new owner ends it at the
    original deadline, and ``call.voicemail`` names the whole message: the segment recorded
    before the move and the one after, joined (the caller's 700 Hz in both parts)."""
    old, new, call_id, engine_id, said = await answered_by_its_route(
        aiohttp_client, redis, monkeypatch, fake, tmp_path, [{"voicemail": {"maxS": 2}}]
    )
    runtime = old.app[MANAGER].find_runtime(call_id)
    await until(lambda: runtime.attached("recorder"), 5.0, "the voicemail recording")
    await asyncio.sleep(0.6)  # the caller's first words, recorded on the old worker
    await old.app[HANDOVER].drain()
    assert new.app[MANAGER].find_runtime(call_id) is not None
    voicemail = lambda: [d for t, d in said if t == "call.voicemail"]  # noqa: E731
    [message] = await until(voicemail, 5.0, "call.voicemail from the new owner")
    await until(lambda: fake.calls[engine_id].state == "ended", 5.0, "the hang-up at maxS")
    assert 1700 <= message["durationMs"] <= 2600, message  # maxS, not what followed the move
    resp = await new.get(f"/call/recordings/{message['recordingID']}")
    assert resp.status == 200, await resp.text()
    with wave.open(io.BytesIO(await resp.read())) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    for part in (pcm[3200:8000], pcm[-9600:-1600]):  # before the move, and after it
        assert abs(dominant_frequency(part, 16000) - fake.tone_hz) < 15
        assert np.sqrt(np.mean(np.square(part / 32768.0))) > 0.01


async def test_a_step_answering_as_its_call_drains_answers_once(
    aiohttp_client, redis, monkeypatch, fake, tmp_path
) -> None:
    """A ``play`` step answered outside the run's turns: a drain beginning while the answer
    was on its way saved the call ringing, the new owner ran the step again and answered it a
    second time. The answer is in the step's first turn now, which the move waits for: the
    call moves answered and playing, answered once, and the step goes on there."""
    held, go = asyncio.Event(), asyncio.Event()

    def hold_first_answer(client: Any) -> None:
        manager = client.app[MANAGER]
        answer = manager.answer

        async def answering(call_id: str, **kwargs: Any) -> Any:
            if not held.is_set():
                held.set()
                await go.wait()
            return await answer(call_id, **kwargs)

        monkeypatch.setattr(manager, "answer", answering)

    steps = [{"play": {"assetId": "ASSET"}}, {"hangup": {}}]
    old, new, call_id, engine_id, _ = await answered_by_its_route(
        aiohttp_client, redis, monkeypatch, fake, tmp_path, steps, hold_first_answer
    )
    await held.wait()
    run, handover = old.app[DESK].run_of(call_id), old.app[HANDOVER]
    send, sending = handover._send, asyncio.Event()

    async def watched(target: Any, moved: Any) -> Any:
        sending.set()
        await go.wait()
        return await send(target, moved)

    handover._send = watched
    drain = asyncio.create_task(handover.drain())

    def waiting() -> bool:  # for the answer's turn (the fix), or sending the call on (before)
        return sending.is_set() or (run.turns.still and run.turns._acting.locked())

    await until(waiting, 5.0, "the move waiting for the answer, or sending the call on")
    go.set()
    await drain
    assert new.app[MANAGER].find_runtime(call_id) is not None
    await until(lambda: fake.calls[engine_id].state == "ended", 5.0, "the next step's hang-up")
    answers = [r for r in fake.requests if r[1] == "/call/answer"]
    assert [r[2].get("callId") for r in answers] == [engine_id]


async def test_a_drain_beginning_as_a_calls_route_is_read_rings_its_agents_once_there(
    aiohttp_client, redis, monkeypatch, fake, tmp_path
) -> None:
    """A ringing call's run was attached only once its route was read from the store: a
    drain moving the call during that read found no run to wait for, and handed the call
    over with no ring kept; the new owner rang nobody (and the old worker, its read back,
    could ring the agents of a call it was letting go of). The run is attached before the
    read now, the read its first turn: the move waits for it and carries the run, the new
    owner rings ann once, and her accept answers the call there."""
    reading, read = asyncio.Event(), asyncio.Event()

    def hold_the_read(client: Any) -> None:
        routes = client.app[DESK].routes
        of = routes.of

        async def held(call: Any) -> Any:
            reading.set()
            await read.wait()
            return await of(call)

        monkeypatch.setattr(routes, "of", held)

    steps = [{"ring": {"agents": ["ann"], "strategy": "simultaneous", "timeoutS": 30}}]
    old, new, call_id, engine_id, _ = await answered_by_its_route(
        aiohttp_client, redis, monkeypatch, fake, tmp_path, steps, hold_the_read
    )
    await reading.wait()
    ann = await Agent.connect(new, "ann")
    handover = old.app[HANDOVER]
    send, sending = handover._send, asyncio.Event()

    async def watched(target: Any, moved: Any) -> Any:
        sending.set()
        return await send(target, moved)

    def waiting() -> bool:  # for the read's turn (the fix), or sending the call on (before)
        run = old.app[DESK].run_of(call_id)
        return sending.is_set() or (run is not None and run.turns.still)

    handover._send = watched
    drain = asyncio.create_task(handover.drain())
    await until(waiting, 5.0, "the move waiting for the route's read, or sending the call on")
    read.set()
    await drain
    assert new.app[MANAGER].find_runtime(call_id) is not None
    types = await heard(ann, "ringing")
    await ann.send(type="accept", callID=call_id)
    types += await heard(ann, "accepted")
    assert types.count("ringing") == 1, types
    assert (await wait_state(new, call_id, "active"))["owner"] == new.app[MANAGER].owner
    answers = [r for r in fake.requests if r[1] == "/call/answer"]
    assert [r[2].get("callId") for r in answers] == [engine_id]
    await ann.ws.close()


async def test_a_call_moved_on_again_as_its_route_resumes_rings_once_on_the_third_owner(
    aiohttp_client, redis, monkeypatch, fake
) -> None:
    """A rolling deploy: the ringing call moved A → B, and B drained while its desk still
    read the call's ring from the store (the run was attached only after that read): B's move
    found no run to hold still, and its read, back as the call left, rang ann from B while
    A, carrying the call on again, rang her too. The run is attached before the read now,
    the read its first turn: B's move waits for it and saves the run; ann hears the ring
    stop and is rung once, by A, and her accept answers the call there."""
    first, second, ann, bob, call_id, engine_id = await ringing_two(
        aiohttp_client, redis, monkeypatch, fake
    )
    store, reading, read = second.app[DESK].store, asyncio.Event(), asyncio.Event()
    ring = store.ring

    async def held(call: str) -> Any:  # the second owner's read of the ring it resumes
        reading.set()
        await read.wait()
        return await ring(call)

    monkeypatch.setattr(store, "ring", held)
    call = first.app[MANAGER].find_runtime(call_id).call
    assert await first.app[HANDOVER].move(call, "drain")  # A → B (A stays up, with room)
    await reading.wait()
    handover = second.app[HANDOVER]
    send, sending = handover._send, asyncio.Event()

    def held_still() -> bool:
        run = second.app[DESK].run_of(call_id)
        return run is not None and run.turns.still

    async def watched(target: Any, moved: Any) -> Any:
        sending.set()  # before the fix, B's read went on here: B rang ann as the call left
        await until(lambda: held_still() or rang(), 5.0, "B's run still, or ringing from B")
        return await send(target, moved)

    def rang() -> bool:
        run = second.app[DESK].run_of(call_id)
        return run is not None and run.round > 1

    handover._send = watched
    drain = asyncio.create_task(handover.drain())  # B → A
    await until(lambda: sending.is_set() or held_still(), 5.0, "B's move waiting for the read")
    read.set()
    await drain
    assert first.app[MANAGER].find_runtime(call_id) is not None
    assert await heard(ann, "ringing") == ["ringing.stopped", "ringing"]  # A's round, once
    await ann.send(type="accept", callID=call_id)
    assert await heard(ann, "accepted") == ["accepted"]
    assert (await wait_state(first, call_id, "active"))["owner"] == first.app[MANAGER].owner
    answers = [r for r in fake.requests if r[1] == "/call/answer"]
    assert [r[2].get("callId") for r in answers] == [engine_id]
    await ann.ws.close()
    await bob.ws.close()
