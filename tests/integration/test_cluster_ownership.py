"""One carrier for a call however the workers' answers to each other are lost: who carries a
call moving between workers is decided by compare-and-set in the Redis directory
(``cluster/redis_owner.py``), not by whether an answer came in time.

In-process workers, each with its own ``RedisDirectory`` on a real ``redis-server`` and its
own calls (the fake engine, strict, records its hang-ups); the handover's request between them
is a direct call whose answer the test loses, as a request timeout loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ResponseError

from bridge.api import placing
from bridge.calls import Call, CallState, Direction, InboundCalls, Recovery
from bridge.calls.handover import MovedCall
from bridge.cluster import redis as redis_directory
from bridge.cluster.directory import CallRecord
from bridge.cluster.handover import Handover
from bridge.cluster.redis import RedisDirectory
from bridge.cluster.redis_owner import moving_key
from bridge.cluster.redis_writes import P, call_key, owned_key
from bridge.errors import DirectoryUnavailable, NotOwner
from bridge.numbers.model import engine_key

from ..fakes.engine import FakeEngine, MovableEngine, calls_for_tests
from ..support.cluster import require_redis
from ..support.ports import free_port
from ..support.waits import until
from .test_cluster import dead_worker_with_calls, survivor_reaper

require_redis()

pytestmark = pytest.mark.timeout(30)


@dataclass
class Worker:
    """One worker: its calls on its own fake engine, its directory, its handover."""

    name: str
    engine: FakeEngine
    manager: Any
    directory: RedisDirectory
    handover: Handover
    inbound: InboundCalls


async def _nothing(*args: Any) -> None:
    return None


@contextlib.asynccontextmanager
async def workers(
    redis_url: str,
    *names: str,
    send: Any = None,
    url: str = "http://127.0.0.1:1",
    heartbeat_ttl: float = 5.0,
) -> AsyncIterator[dict[str, Worker]]:
    """Workers ``names`` sharing the Redis at ``redis_url``, started, closed on the way out;
    ``send`` is the first one's way to hand a call to another (``Handover``'s). Their own
    reapers act only once up for ``heartbeat_ttl`` (and end nothing)."""
    started: dict[str, Worker] = {}
    try:
        for name in names:
            engine = MovableEngine()  # its calls can move, as a PCM engine's
            engine.calls.update({"E1": "active", "E7": "ringing"})  # the WhatsApp calls
            manager = calls_for_tests(engine).manager
            manager.owner = name
            directory = RedisDirectory(
                redis_url,
                worker_id=name,
                internal_url=url,
                heartbeat_ttl=heartbeat_ttl,
                ended_ttl=60,
                backlog=100,
                max_calls=10,
                local_calls=manager.live_calls,
                end_lost_call=_nothing,
                end_local_calls=_nothing,
            )
            manager.events.observe(directory.observe)
            handover = Handover(manager, directory, manager.metrics, send=send)
            inbound = InboundCalls(manager, swap=directory.swap_engine_claim)
            await manager.start()
            await directory.start()
            started[name] = Worker(name, engine, manager, directory, handover, inbound)
        yield started
    finally:
        for worker in started.values():
            await worker.directory.close()
            await worker.manager.close()


async def carrying(worker: Worker, call_id: str = "c1") -> Call:
    """An active call of ``worker`` (engine call ``E1``), its record in the directory."""
    call = Call(
        id=call_id,
        peer="5521999999999@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner=worker.name,
        engine_call_id="E1",
        state=CallState.CALLING,
    )
    call.transition(CallState.ACTIVE)
    worker.manager.adopt_moved(call)
    worker.manager.events.publish("call.active", call)
    await worker.directory.flush(2.0)
    return call


async def stored(redis_url: str, call_id: str = "c1") -> tuple[str, set[str]]:
    """The call's record's owner, and the workers whose ``owned:`` set lists it."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.get(call_key(call_id))
        owner = CallRecord.from_json(raw).owner if raw else ""
        listing = set()
        for name in ("s", "t1", "t2", "dead"):
            if await client.sismember(owned_key(name), call_id):
                listing.add(name)
        return owner, listing
    finally:
        await client.aclose()


def carriers(*ws: Worker, call_id: str = "c1") -> list[str]:
    """The workers with a live runtime of the call."""
    return [w.name for w in ws if (r := w.manager.find_runtime(call_id)) and r.call.live]


async def test_a_target_that_takes_the_call_after_it_was_given_up_on_lets_go_of_it(redis) -> None:
    """The draining worker's request to t1 times out while t1's take-over is still on its way
    (a slow Redis, a stalled loop): the directory still names the old owner, so it hands the
    call to t2. Then t1's take-over lands. Before, it took the call all the same: t1 and t2
    both carried it (two engine sockets fighting over one WhatsApp call). Now t1's take-over
    finds the old owner's offer withdrawn and lets go without a word to the engine."""
    gate = asyncio.Event()
    t1_taking = asyncio.Event()
    adoptions: list[asyncio.Task[Call]] = []
    ws: dict[str, Worker] = {}  # filled once they are started

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        worker = ws[target.id]
        adoption = asyncio.create_task(worker.handover.adopt(MovedCall.from_json(moved.to_json())))
        adoptions.append(adoption)
        if target.id == "t1":
            await asyncio.wait_for(t1_taking.wait(), 5)
            raise TimeoutError  # the request's timeout: t1's answer never comes
        await adoption
        return 201, ""

    async with workers(redis.url, "s", "t1", "t2", send=send) as started:
        ws.update(started)
        take_over = ws["t1"].directory.take_over

        async def slow_take_over(call: Call, previous: str, token: str = "") -> None:
            t1_taking.set()
            await gate.wait()  # lands after the old owner gave up on t1
            await take_over(call, previous, token)

        ws["t1"].directory.take_over = slow_take_over  # type: ignore[method-assign]
        call = await carrying(ws["s"])
        assert await ws["s"].handover.move(call, "drain")
        gate.set()
        first, second = await asyncio.gather(*adoptions, return_exceptions=True)
        assert isinstance(first, NotOwner), first
        assert not isinstance(second, BaseException), second
        assert carriers(*ws.values()) == ["t2"]
        owner, listing = await stored(redis.url)
        assert (owner, listing) == ("t2", {"t2"})
        for worker in ws.values():
            assert worker.engine.hung_up == []  # nobody ended the WhatsApp call
        assert ws["t1"].engine.channels == []  # t1 never opened the engine's media


async def test_a_target_that_took_the_call_and_let_go_of_it_leaves_it_with_its_old_owner(
    redis,
) -> None:
    """t1 took the call over in the directory, then its adoption failed (the take-over's own
    answer from Redis was lost) and it let go of the call; its answer to the draining worker
    was lost too. Before, the draining worker saw t1 named in the directory, took the move for
    done and let go as well: the call was carried by nobody. Now t1 gives the record back
    while the old owner waits, and the old owner, still its owner, keeps carrying it."""
    ws: dict[str, Worker] = {}  # filled once they are started

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        with contextlib.suppress(TimeoutError):
            await ws[target.id].handover.adopt(MovedCall.from_json(moved.to_json()))
        raise TimeoutError  # its answer never comes

    async with workers(redis.url, "s", "t1", send=send) as started:
        ws.update(started)
        take_over = ws["t1"].directory.take_over

        async def lost_answer(call: Call, previous: str, token: str = "") -> None:
            await take_over(call, previous, token)
            raise TimeoutError("Redis's answer to the take-over was lost")

        ws["t1"].directory.take_over = lost_answer  # type: ignore[method-assign]
        call = await carrying(ws["s"])
        assert not await ws["s"].handover.move(call, "drain")
        assert carriers(*ws.values()) == ["s"]
        owner, listing = await stored(redis.url)
        assert (owner, listing) == ("s", {"s"})
        assert ws["s"].engine.hung_up == [] and ws["t1"].engine.hung_up == []


async def test_a_take_over_whose_answer_came_after_the_old_owner_let_go_is_carried_on(
    redis,
) -> None:
    """t1's take-over landed in Redis but its reply was late (it timed out), and meanwhile
    the draining worker's own request to t1 timed out: it found t1 named in the directory and
    let go of the call. Before, t1 let go too when its take-over failed: the call was carried
    by nobody. Now t1 asks the directory (its give-back finds the offer settled and the
    record its own) and carries the call on, its engine media open."""
    gate = asyncio.Event()
    taken = asyncio.Event()
    adoptions: list[asyncio.Task[Call]] = []
    ws: dict[str, Worker] = {}

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        offered = MovedCall.from_json(moved.to_json())
        adoptions.append(asyncio.create_task(ws[target.id].handover.adopt(offered)))
        await asyncio.wait_for(taken.wait(), 5)
        raise TimeoutError  # the draining worker's request times out too

    async with workers(redis.url, "s", "t1", send=send) as started:
        ws.update(started)
        take_over = ws["t1"].directory.take_over

        async def late_answer(call: Call, previous: str, token: str = "") -> None:
            await take_over(call, previous, token)
            taken.set()
            await gate.wait()
            raise TimeoutError("Redis's answer to the take-over came too late")

        ws["t1"].directory.take_over = late_answer  # type: ignore[method-assign]
        call = await carrying(ws["s"])
        assert await ws["s"].handover.move(call, "drain")  # t1 is named: it let go
        gate.set()
        adopted = await asyncio.wait_for(adoptions[0], 10)
        assert adopted.live and carriers(*ws.values()) == ["t1"]
        assert len(ws["t1"].engine.channels) == 1  # its engine media open
        owner, listing = await stored(redis.url)
        assert (owner, listing) == ("t1", {"t1"})
        assert ws["s"].engine.hung_up == [] and ws["t1"].engine.hung_up == []


async def test_a_draining_worker_whose_call_a_survivor_adopted_lets_go_of_it_quietly(
    redis,
) -> None:
    """While the draining worker offers its call to t1, a survivor (t2) adopts it: this
    worker was taken for dead through a stall. t1 must not take it (the record names t2 now),
    and the draining worker, finding t2 named, lets go of it without hanging it up: before, t1
    took it over all the same (two carriers), and a worker that found no taker hung the call
    up at its shutdown, ending it for the survivor too."""
    ws: dict[str, Worker] = {}
    outcomes: list[BaseException | Call] = []

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        adopted = Call.from_snapshot(moved.snapshot, moved.engine_call_id)
        adopted.owner = "t2"
        await ws["t2"].directory.take_over(adopted, "s")  # the survivor's adoption
        try:
            offered = MovedCall.from_json(moved.to_json())
            outcomes.append(await ws[target.id].handover.adopt(offered))
        except NotOwner as exc:
            outcomes.append(exc)
            return 409, exc.message
        return 201, ""

    async with workers(redis.url, "s", "t1", "t2", send=send) as started:
        ws.update(started)
        call = await carrying(ws["s"])
        assert await ws["s"].handover.move(call, "drain")
        assert isinstance(outcomes[0], NotOwner), outcomes
        assert carriers(ws["s"], ws["t1"]) == []
        owner, listing = await stored(redis.url)
        assert (owner, listing) == ("t2", {"t2"})
        assert ws["s"].engine.hung_up == [] and ws["t1"].engine.hung_up == []


async def test_an_inbound_call_taken_after_its_finder_rang_it_itself_is_not_rung_twice(
    redis, monkeypatch
) -> None:
    """The worker that found a new inbound call (its claim) places it on the emptier one,
    whose answer does not come in time: its record is not in the directory yet, so the finder
    rings the call itself. Before, the other worker's adoption then went on and rang it too:
    one WhatsApp call, two bridge calls. Now the finder takes its claim back first, and the
    other finds it gone and rings nothing."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    port = free_port()
    gate = asyncio.Event()
    outcomes: list[BaseException | Call] = []
    ws: dict[str, Worker] = {}  # filled once they are started

    async def adopt(request: web.Request) -> web.Response:
        body = await request.json()
        await gate.wait()  # the adoption outlasts the finder's request (a stalled worker)
        try:
            call = await ws["t1"].inbound.adopt(
                body["engineCallID"], body["peer"], body["numberID"], token=body.get("token", "")
            )
        except NotOwner as exc:
            outcomes.append(exc)
            raise web.HTTPConflict() from None
        outcomes.append(call)
        return web.json_response(call.snapshot(), status=201)

    app = web.Application()
    app.router.add_post("/call/adopt", adopt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with workers(redis.url, "s", "t1", url=f"http://127.0.0.1:{port}") as started:
            ws.update(started)
            finder = ws["s"]
            await carrying(finder, "busy")  # the finder is the more loaded of the two
            key = engine_key("n1", "E7")
            assert await finder.directory.claim_engine_call(key)
            async with aiohttp.ClientSession() as http:
                place = placing.inbound_placer(finder.directory, http, "secret")
                assert await place("E7", "15550001111", "n1") is False  # the finder rings it
            gate.set()
            await until(lambda: outcomes, 5, "the late adoption's outcome")
            assert isinstance(outcomes[0], NotOwner), outcomes
            assert ws["t1"].manager.live_calls() == []
            claim = aioredis.from_url(redis.url, decode_responses=True)
            try:
                assert await claim.get(f"{P}claim:{key}") == "s"  # the finder's again
            finally:
                await claim.aclose()
            assert ws["t1"].engine.hung_up == []  # nor declined at the engine
    finally:
        gate.set()
        await runner.cleanup()


@pytest.mark.parametrize("ending", ["accepted", "refused", "failed"])
async def test_a_handovers_offer_is_gone_as_soon_as_the_handover_ends(redis, ending: str) -> None:
    """The old owner's offer (``moving:{callID}``) is deleted when its handover ends, however
    it ends: t1 carries the call on (201), refuses it before taking it (409), or its request
    fails. Before, an accepted handover's offer (the call's record as it was, inside) stayed
    in Redis until it lapsed a minute later."""
    ws: dict[str, Worker] = {}

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        if ending == "refused":
            return 409, '{"error": {"code": "not_owner"}}'
        if ending == "failed":
            raise TimeoutError
        await ws[target.id].handover.adopt(MovedCall.from_json(moved.to_json()))
        return 201, ""

    async with workers(redis.url, "s", "t1", send=send) as started:
        ws.update(started)
        call = await carrying(ws["s"])
        assert await ws["s"].handover.move(call, "drain") is (ending == "accepted")
        client = aioredis.from_url(redis.url, decode_responses=True)
        try:
            assert await client.exists(moving_key("c1")) == 0
        finally:
            await client.aclose()
        owner, listing = await stored(redis.url)
        expected = "t1" if ending == "accepted" else "s"
        assert (owner, listing) == (expected, {expected})


async def test_a_crash_adoption_let_go_of_after_its_take_over_is_left_to_the_next_adopter(
    redis,
) -> None:
    """Survivor s adopts a dead worker's call: it takes the call over in the directory, then
    stops (its reap cancelled: its SIGTERM) while the engine opens the call's media. Before,
    the record went on naming s, listed in s's set, though s had let go of the call: no
    survivor of the dead worker found it again, and s, alive, was reaped by nobody — a live
    call carried by nobody. Now s gives the record back: it names the dead worker again, in
    its set, and the next survivor adopts the call."""
    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    opening = asyncio.Event()

    async def stuck(engine_call_id: str) -> Any:
        opening.set()
        await asyncio.Event().wait()  # a slow engine: the survivor stops meanwhile

    async with workers(redis.url, "s", "t2", heartbeat_ttl=60) as ws:
        recoveries = {}
        for worker in ws.values():
            recoveries[worker.name] = Recovery(worker.manager, adopt=worker.handover.adopt)
        ws["s"].engine.open_media = stuck  # type: ignore[method-assign]
        reap = asyncio.ensure_future(
            survivor_reaper(client, "s", recoveries["s"].lost_call).reap_once()
        )
        try:
            await asyncio.wait_for(opening.wait(), 5)
            assert (await stored(redis.url))[0] == "s"  # taken over
            reap.cancel()
            await asyncio.gather(reap, return_exceptions=True)
            assert carriers(*ws.values()) == []
            assert await stored(redis.url) == ("dead", {"dead"})  # given back
            assert not await client.exists(moving_key("c1"))
            await survivor_reaper(client, "t2", recoveries["t2"].lost_call).reap_once()
            assert carriers(*ws.values()) == ["t2"]
            assert await stored(redis.url) == ("t2", {"t2"})
            assert ws["s"].engine.hung_up == [] and ws["t2"].engine.hung_up == []
        finally:
            reap.cancel()
            await asyncio.gather(reap, return_exceptions=True)
            for recovery in recoveries.values():
                await recovery.close()
            await client.aclose()


async def test_a_crash_adoption_that_fails_after_its_take_over_ends_the_call_in_the_record(
    redis,
) -> None:
    """Survivor s's take-over of a dead worker's call lands in Redis but its reply is lost:
    its adoption fails, and recovery ends the call (``failed``/``worker_lost``). Before, that
    end was never written (the record named s, not the dead worker the end was about): the
    record stayed live, naming s and listed in its set, for good. Now the take-over is given
    back first, and the record says the call ended, listed by nobody."""
    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    async with workers(redis.url, "s", heartbeat_ttl=60) as ws:
        s = ws["s"]
        s.engine.calls["ec1"] = "active"
        recovery = Recovery(s.manager, adopt=s.handover.adopt)
        take_over = s.directory.take_over

        async def reply_lost(call: Call, previous: str, token: str = "") -> None:
            await take_over(call, previous, token)
            raise DirectoryUnavailable("the call directory (Redis) is unreachable: timeout")

        s.directory.take_over = reply_lost  # type: ignore[method-assign]
        try:
            await survivor_reaper(client, "s", recovery.lost_call).reap_once()
            await s.directory.flush(2.0)
            raw = await client.get(call_key("c1"))
            record = CallRecord.from_json(raw)
            assert not record.live and record.snapshot["endReason"] == "failed"
            assert (await stored(redis.url))[1] == set()
            await until(lambda: s.engine.hung_up == ["ec1"], 5, "the engine call's hang-up")
        finally:
            await recovery.close()
            await client.aclose()


async def test_a_crash_adoption_whose_take_over_and_give_back_redis_refused_ends_in_the_record(
    redis, caplog, monkeypatch
) -> None:
    """Survivor s's take-over of a dead worker's call lands in Redis, but Redis refuses its
    reply with an error, and then refuses s's give-back too: s lets go of the call and
    recovery ends it (``failed``/``worker_lost``). Before, the end's write was refused (the
    record names s, not the dead worker the end is about), and the record went on naming s,
    live and listed in s's set, though nobody carried the call. Now s's end is written where
    the directory names s: the record says the call ended, listed by nobody; the give-back's
    failure said once at WARNING."""
    monkeypatch.setattr(redis_directory, "AGAIN_WITHIN", 0.4)  # Redis refuses longer
    client = aioredis.from_url(redis.url, decode_responses=True)
    await dead_worker_with_calls(client, ["c1"])
    async with workers(redis.url, "s", heartbeat_ttl=60) as ws:
        s = ws["s"]
        s.engine.calls["ec1"] = "active"
        recovery = Recovery(s.manager, adopt=s.handover.adopt)
        owner = s.directory._owner
        take, give_back = owner.take, owner.give_back

        async def refused_reply(*args: Any) -> bool:
            await take(*args)
            raise ResponseError("LOADING Redis is loading the dataset in memory")

        async def refused(*args: Any) -> bool:
            raise ResponseError("LOADING Redis is loading the dataset in memory")

        owner.take, owner.give_back = refused_reply, refused  # type: ignore[method-assign]
        try:
            await survivor_reaper(client, "s", recovery.lost_call).reap_once()
            owner.take, owner.give_back = take, give_back  # type: ignore[method-assign]

            async def ended() -> CallRecord | None:
                record = CallRecord.from_json(await client.get(call_key("c1")))
                return None if record.live else record

            # (The end is written once a heartbeat finds Redis back: bounded generously, a
            # loaded host's beat comes late; it failed once beside other suites at 2 s.)
            record = await until(ended, 5, "the call's end in its record")
            assert record.snapshot["endReason"] == "failed"
            assert (await stored(redis.url))[1] == set()  # listed by nobody
            await until(lambda: s.engine.hung_up == ["ec1"], 5, "the engine call's hang-up")
            assert carriers(s) == []
            said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            # The directory's own "unreachable" comes again if a heartbeat found Redis back
            # between the refusals (the real Redis answers it: a flap, said each time it
            # goes; a loaded host's beat lands there); every other line once.
            once = [m for m in said if not m.startswith("call directory (Redis) unreachable")]
            assert len(once) == len(set(once)), said
            assert len([m for m in said if "given back" in m]) == 1, said
        finally:
            await recovery.close()
            await client.aclose()


def refuse_the_take_reply(
    redis_url: str, t1: Worker, *, then_refuse_give_backs: bool = False
) -> asyncio.Event:
    """t1's take-over lands in Redis, then waits until the old owner has settled its offer
    (its request timed out), and Redis refuses its reply with an error (t1's directory is
    down from then on until a beat finds it back); with ``then_refuse_give_backs`` every
    give-back of t1's is refused too. The event is set once the take-over landed."""
    owner = t1.directory._owner
    take = owner.take
    landed = asyncio.Event()

    async def refused_reply(*args: Any) -> bool:
        await take(*args)
        landed.set()
        client = aioredis.from_url(redis_url, decode_responses=True)
        try:
            await until(lambda: _gone(client, moving_key("c1")), 5, "the old owner's settle")
        finally:
            await client.aclose()
        raise ResponseError("LOADING Redis is loading the dataset in memory")

    async def refused(*args: Any) -> bool:
        raise ResponseError("LOADING Redis is loading the dataset in memory")

    owner.take = refused_reply  # type: ignore[method-assign]
    if then_refuse_give_backs:
        owner.give_back = refused  # type: ignore[method-assign]
    return landed


async def _gone(client: Any, key: str) -> bool:
    return not await client.exists(key)


@pytest.mark.parametrize("redis_back", [True, False])
async def test_a_take_over_whose_reply_and_give_back_redis_refused_is_carried_or_ended(
    redis, caplog, monkeypatch, redis_back: bool
) -> None:
    """At a drain, t1's take-over lands in Redis but Redis refuses its reply, and then t1's
    give-back (t1's directory is down); meanwhile the draining worker's request timed out, and
    its settle found t1 named: it let go. Before, t1 let go as well: a live call carried by
    nobody, and nobody said so. Now t1 tries the give-back again once Redis answers: it finds
    the offer settled and the record its own, and carries the call on. Redis refusing it for
    longer than that, t1 cannot tell who carries the call: it ends it (``failed``, hung up,
    ``call.ended``), said once at WARNING."""
    monkeypatch.setattr(redis_directory, "AGAIN_WITHIN", 3.0 if redis_back else 0.4, raising=False)
    adoptions: list[asyncio.Task[Call]] = []
    ws: dict[str, Worker] = {}
    landed = asyncio.Event()

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        offered = MovedCall.from_json(moved.to_json())
        adoptions.append(asyncio.create_task(ws[target.id].handover.adopt(offered)))
        await asyncio.wait_for(landed.wait(), 5)
        raise TimeoutError  # the draining worker's request times out

    # A heartbeat every 20 s: t1's next beat, which finds Redis back, comes as soon as the
    # refusal, not 20 s later.
    async with workers(redis.url, "s", "t1", send=send, heartbeat_ttl=60) as started:
        ws.update(started)
        t1 = ws["t1"]
        ended: list[Call] = []
        t1.manager.events.observe(lambda e, c: ended.append(c) if e.type == "call.ended" else None)
        landed = refuse_the_take_reply(redis.url, t1, then_refuse_give_backs=not redis_back)
        call = await carrying(ws["s"])
        assert await ws["s"].handover.move(call, "drain")  # t1 is named: s let go
        outcome = (await asyncio.gather(adoptions[0], return_exceptions=True))[0]
        assert ws["s"].engine.hung_up == []
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if redis_back:
            assert isinstance(outcome, Call) and outcome.live, outcome
            assert carriers(*ws.values()) == ["t1"]
            assert len(t1.engine.channels) == 1  # its engine media open
            assert await stored(redis.url) == ("t1", {"t1"})
            assert t1.engine.hung_up == [] and ended == []
            assert not [m for m in said if "given back" in m], said
        else:
            assert isinstance(outcome, DirectoryUnavailable), outcome
            assert carriers(*ws.values()) == []
            assert t1.engine.hung_up == ["E1"]
            assert [(c.id, c.end_reason) for c in ended] == [("c1", "failed")]
            assert len([m for m in said if "given back" in m]) == 1, said


async def test_a_target_cut_off_from_redis_before_its_take_over_lets_the_call_be(
    redis, monkeypatch
) -> None:
    """At a drain the target t1 is cut off from Redis already (its heartbeat not lapsed yet):
    its take-over is refused before it is sent, and so is every give-back. Nothing was taken:
    t1 lets go without a word to the engine and the draining worker keeps the call. A target
    that cannot tell whether its take-over landed ends the call; one that knows it was never
    sent must not hang up a call its old owner still carries."""
    monkeypatch.setattr(redis_directory, "AGAIN_WITHIN", 0.4)
    ws: dict[str, Worker] = {}
    outcomes: list[BaseException | Call] = []

    async def send(target: Any, moved: MovedCall) -> tuple[int, str]:
        offered = MovedCall.from_json(moved.to_json())
        try:
            outcomes.append(await ws[target.id].handover.adopt(offered))
        except DirectoryUnavailable as exc:
            outcomes.append(exc)
            return 503, exc.message
        return 201, ""

    async def away() -> None:
        raise ConnectionError("Connection refused")

    async with workers(redis.url, "s", "t1", send=send) as started:
        ws.update(started)
        t1 = ws["t1"]
        t1.directory._lease.beat = away  # type: ignore[method-assign]
        t1.directory._lease.mark_down(ConnectionError("Connection refused"))
        call = await carrying(ws["s"])
        assert not await ws["s"].handover.move(call, "drain")
        assert isinstance(outcomes[0], DirectoryUnavailable), outcomes
        assert carriers(*ws.values()) == ["s"]
        assert await stored(redis.url) == ("s", {"s"})
        assert t1.engine.hung_up == [] and ws["s"].engine.hung_up == []
