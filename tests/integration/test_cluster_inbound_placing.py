"""A new inbound call one worker claimed and placed on the emptier one (``POST /call/adopt``),
whose adoption fails after it took the call's claim: the call is not lost. The worker it was
placed on gives the claim back, and the finder rings the call itself (or declines it ``busy``
when it has no room either); never a call rung by nobody, nor a claim left with a worker that
did not ring it.

In-process workers on a real ``redis-server`` (``test_cluster_ownership``'s), the target
behind a real HTTP server with the API's own error answers; the fake engine, strict, records
its hang-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ResponseError

from bridge.api import placing
from bridge.api.errors import error_middleware
from bridge.calls import Call, InboundCalls
from bridge.calls.inbound import settled_claim
from bridge.cluster import redis as redis_directory
from bridge.cluster.redis_writes import P
from bridge.engines import EngineEvent, EngineEventKind
from bridge.errors import DirectoryUnavailable
from bridge.numbers.model import engine_key

from ..support.cluster import require_redis
from ..support.ports import free_port
from ..support.waits import until
from .test_cluster_ownership import Worker, carrying, workers

require_redis()

pytestmark = pytest.mark.timeout(30)

KEY = engine_key("n1", "E7")


@contextlib.asynccontextmanager
async def target_at(port: int, ws: dict[str, Worker]) -> AsyncIterator[None]:
    """Worker t1's ``POST /call/adopt`` on ``port``, as the API serves it (its error answers)."""

    async def adopt(request: web.Request) -> web.Response:
        body = await request.json()
        call = await ws["t1"].inbound.adopt(
            body["engineCallID"],
            body["peer"],
            body["numberID"],
            token=body.get("token", ""),
            ring_within=body.get("ringWithin"),
        )
        return web.json_response(call.snapshot(), status=201)

    app = web.Application(middlewares=[error_middleware()])
    app.router.add_post("/call/adopt", adopt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def found_by_s(ws: dict[str, Worker], http: aiohttp.ClientSession) -> None:
    """Worker s's engine reports the new inbound call E7: s claims it and places it on t1."""
    finder = ws["s"]
    policy = InboundCalls(
        finder.manager,
        claim=finder.directory.claim_engine_call,
        place=placing.inbound_placer(finder.directory, http, "secret"),
        swap=finder.directory.swap_engine_claim,
    )
    await policy.incoming(
        EngineEvent(EngineEventKind.INCOMING, "E7", peer="15550001111", number_id="n1")
    )


async def claim_holder(redis_url: str) -> str | None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        return await client.get(f"{P}claim:{KEY}")  # type: ignore[no-any-return]
    finally:
        await client.aclose()


def ringing(worker: Worker) -> list[Call]:
    return [c for c in worker.manager.live_calls() if c.engine_call_id == "E7"]


@contextlib.asynccontextmanager
async def placed_and_failed(
    redis_url: str, fail: Callable[[Worker, Callable[..., Awaitable[str]]], Any]
) -> AsyncIterator[dict[str, Worker]]:
    """s finds E7 and places it on t1, whose claim step is wrapped by ``fail(t1, swap)``; the
    workers as they are then."""
    port = free_port()
    ws: dict[str, Worker] = {}
    async with (
        workers(redis_url, "s", "t1", url=f"http://127.0.0.1:{port}") as started,
        target_at(port, ws),
        aiohttp.ClientSession() as http,
    ):
        ws.update(started)
        await carrying(ws["s"], "busy")  # s is the more loaded of the two: t1 gets the call
        t1 = ws["t1"]
        t1.inbound._swap = fail(t1, t1.directory.swap_engine_claim)
        await found_by_s(ws, http)
        yield ws


def rung_by_the_finder(ws: dict[str, Worker], caplog: Any) -> None:
    """E7 rings on s alone, nobody hung it up, and each worker said its side once."""
    assert [c.owner for c in ringing(ws["s"])] == ["s"]
    assert ringing(ws["t1"]) == []
    assert ws["t1"].engine.hung_up == [] and ws["s"].engine.hung_up == []
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == len(set(said)) == 2, said  # t1's refusal, s's "ringing it here"
    assert "declining" not in " ".join(said)


def shutting_down(t1: Worker) -> None:
    t1.manager.shutting_down = True  # a SIGTERM


def filled_up(t1: Worker) -> None:
    t1.manager.admission.max_calls = len(t1.manager.live_calls())  # another call came in


@pytest.mark.parametrize("meanwhile", [shutting_down, filled_up])
async def test_a_target_that_cannot_ring_the_call_it_took_gives_it_back(
    redis, caplog, meanwhile: Callable[[Worker], None]
) -> None:
    """t1 took the call's claim and, while its take waited on Redis, began to shut down (or
    filled up). Before, it declined the call on the engine (the WhatsApp caller hung up on;
    shutting down, not even a ``call.ended`` or a record) and answered 201, so s took the
    call for placed although it could ring it. Now t1 refuses it and gives the claim back,
    and s rings the call itself."""

    def then(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def take(key: str, held: str, next_: str, **kw: Any) -> str:
            answer = await swap(key, held, next_, **kw)
            meanwhile(t1)
            return answer

        return take

    async with placed_and_failed(redis.url, then) as ws:
        rung_by_the_finder(ws, caplog)
        assert await claim_holder(redis.url) == "s"  # not left with t1


async def test_a_target_whose_claim_answer_was_lost_leaves_the_call_to_its_finder(
    redis, caplog
) -> None:
    """t1's take of the claim landed in Redis, but its reply was lost and Redis stays out of
    t1's reach (it cannot give the claim back): t1 answers 503. Before, s found the claim
    t1's, took the call for rung there and let it be: rung by nobody, and nobody said so. Now
    an answer that is not 201 is a call not rung there, whoever holds the claim: s takes the
    claim back and rings the call."""

    def reply_lost(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def landed_then_away(key: str, held: str, next_: str, **kw: Any) -> str:
            if held != t1.name:
                await swap(key, held, next_)  # the take lands; its reply does not come
            raise DirectoryUnavailable(
                "the call directory (Redis) is unreachable: timeout", sent=True
            )

        return landed_then_away

    async with placed_and_failed(redis.url, reply_lost) as ws:
        rung_by_the_finder(ws, caplog)
        assert await claim_holder(redis.url) == "s"


@pytest.mark.parametrize("meanwhile", [shutting_down, filled_up])
async def test_a_call_refused_after_its_finder_stopped_waiting_is_ended_not_lost(
    redis, caplog, monkeypatch, meanwhile: Callable[[Worker], None]
) -> None:
    """t1 took the call's claim, then stalled past s's request timeout: s found the claim
    t1's and left the call to it. Then t1 began to shut down (or filled up) and refused the
    call. Before, t1 gave the claim back to a token nobody waited on any more: the call was
    rung by nobody and ended by nobody, and nobody said so. Now s settles the claim on t1
    as it stops waiting (t1 can no longer give it back), and t1, the call its own, declines
    it on the engine with a ``call.ended`` saying why, said once."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    gate = asyncio.Event()

    def stalls(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def take(key: str, held: str, next_: str, **kw: Any) -> str:
            answer = await swap(key, held, next_, **kw)
            if next_ == t1.name:
                await gate.wait()  # s's request times out meanwhile
                meanwhile(t1)
            return answer

        return take

    async with placed_and_failed(redis.url, stalls) as ws:
        t1 = ws["t1"]
        ended: list[Call] = []
        t1.manager.events.observe(lambda e, c: ended.append(c) if e.type == "call.ended" else None)
        assert ringing(ws["s"]) == []  # s left it to t1
        gate.set()
        await until(lambda: ended, 5, "the call's end on t1")
        assert [c.engine_call_id for c in ended] == ["E7"]
        assert ended[0].end_reason in ("busy", "shutdown")
        assert t1.engine.hung_up == ["E7"] and ws["s"].engine.hung_up == []
        assert ringing(ws["s"]) == [] and ringing(t1) == []
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([m for m in said if "15550001111" in m]) == 1, said


async def test_a_target_cut_off_from_redis_refuses_at_once_and_its_finder_rings_the_call(
    redis, caplog
) -> None:
    """t1 is cut off from Redis already (its heartbeat not lapsed yet): its take of the claim
    is refused before it is sent. Before, t1 then tried to give back a claim it never took,
    again and again for the retry window (``AGAIN_WITHIN``), before it answered 503. A take
    never sent cannot have landed: t1 refuses at once, without a give-back, and s takes the
    claim back and rings the call."""
    swaps: list[tuple[str, str]] = []

    def cut_off(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def away() -> None:
            raise ConnectionError("Connection refused")

        t1.directory._lease.beat = away  # type: ignore[method-assign]
        t1.directory._lease.mark_down(ConnectionError("Connection refused"))

        async def counted(key: str, held: str, next_: str, **kw: Any) -> str:
            swaps.append((held, next_))
            return await swap(key, held, next_, **kw)

        return counted

    async with placed_and_failed(redis.url, cut_off) as ws:
        assert [next_ for _, next_ in swaps] == ["t1"]  # its take; no give-back
        assert [c.owner for c in ringing(ws["s"])] == ["s"] and ringing(ws["t1"]) == []
        assert await claim_holder(redis.url) == "s"
        assert ws["t1"].engine.hung_up == [] and ws["s"].engine.hung_up == []
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("did not take it (503" in m for m in said), said


LOADING = "LOADING Redis is loading the dataset in memory"


async def test_a_target_whose_take_reply_and_give_back_redis_refused_rings_the_call(
    redis, caplog, monkeypatch
) -> None:
    """t1's take of the claim lands in Redis, but Redis refuses its reply with an error, and
    then t1's give-back (t1's directory is down); meanwhile s stopped waiting and settled the
    claim on t1. Before, t1 answered 503 to nobody: the call rang nowhere, and nothing said
    so. Now t1 tries its give-back again once Redis answers, finds the claim settled on it,
    and rings the call."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))

    def refused_reply(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        owner = t1.directory._owner
        real = owner.swap_claim

        async def take(key: str, held: str, next_: str) -> str:
            answer = await real(key, held, next_)
            if next_ == t1.name:
                settled = settled_claim(t1.name)
                await until(lambda: _holds(redis.url, settled), 5, "s settling on t1", 0.05)
                raise ResponseError(LOADING)
            return answer

        owner.swap_claim = take  # type: ignore[method-assign]
        return swap

    async with placed_and_failed(redis.url, refused_reply) as ws:
        t1 = ws["t1"]
        await until(lambda: ringing(t1), 5, "the call ringing on t1")
        assert [c.owner for c in ringing(t1)] == ["t1"] and ringing(ws["s"]) == []
        assert await claim_holder(redis.url) == settled_claim("t1")
        assert t1.engine.hung_up == [] and ws["s"].engine.hung_up == []


async def _holds(redis_url: str, holder: str) -> bool:
    return await claim_holder(redis_url) == holder


async def test_a_finder_that_cannot_settle_rings_the_call_its_target_rings_no_more(
    redis, caplog, monkeypatch
) -> None:
    """t1 took the call's claim and stalled past s's request timeout; s's settle then finds
    Redis refusing every command of its, for longer than it waits. Before, s left the call,
    since t1 might ring it: when t1 did not (its give-back refused too, or it gave up), the
    call rang nowhere. Now t1 rings a placed call only within ``ringWithin`` of its placing
    (half s's timeout), so s, once its timeout is over, rings the call itself; t1, back past
    that, gives the claim back and rings nothing: rung once, on s."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    monkeypatch.setattr(redis_directory, "AGAIN_WITHIN", 0.4, raising=False)
    gate = asyncio.Event()

    def stalls(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def take(key: str, held: str, next_: str, **kw: Any) -> str:
            answer = await swap(key, held, next_, **kw)
            if next_ == t1.name:
                await gate.wait()  # s's request times out meanwhile
            return answer

        return take

    port = free_port()
    ws: dict[str, Worker] = {}
    async with (
        workers(redis.url, "s", "t1", url=f"http://127.0.0.1:{port}") as started,
        target_at(port, ws),
        aiohttp.ClientSession() as http,
    ):
        ws.update(started)
        s, t1 = ws["s"], ws["t1"]
        await carrying(s, "busy")
        t1.inbound._swap = stalls(t1, t1.directory.swap_engine_claim)
        owner = s.directory._owner
        real = owner.swap_claim

        async def refused_settle(key: str, held: str, next_: str) -> str:
            if held != s.name:  # the settle's steps; placing (s → token) goes through
                raise ResponseError(LOADING)
            return await real(key, held, next_)

        owner.swap_claim = refused_settle  # type: ignore[method-assign]
        await found_by_s(ws, http)
        assert [c.owner for c in ringing(s)] == ["s"]
        gate.set()

        async def given_back() -> bool:
            return await claim_holder(redis.url) not in ("t1", settled_claim("t1"))

        await until(given_back, 5, "t1 giving the claim back", 0.05)
        assert ringing(t1) == [] and [c.owner for c in ringing(s)] == ["s"]
        assert s.engine.hung_up == [] and t1.engine.hung_up == []
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([m for m in said if "ringing it here" in m]) == 1, said


async def test_a_settle_whose_answer_redis_lost_leaves_the_call_to_its_target(
    redis, caplog, monkeypatch
) -> None:
    """t1 took the call's claim and stalled past s's request timeout and past its own
    ``ringWithin``; s found the claim t1's and settled it there, but Redis lost the answer and
    then refused s's tries. s cannot tell whether its settle landed (then t1 rings the call),
    so it leaves the call, said once; t1, back, finds the claim settled on it and rings the
    call although its ``ringWithin`` is over: rung once, on t1."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    monkeypatch.setattr(redis_directory, "AGAIN_WITHIN", 0.4, raising=False)
    gate = asyncio.Event()

    def stalls(t1: Worker, swap: Callable[..., Awaitable[str]]) -> Any:
        async def take(key: str, held: str, next_: str, **kw: Any) -> str:
            answer = await swap(key, held, next_, **kw)
            if next_ == t1.name:
                await gate.wait()  # s's request times out, and t1's ringWithin passes
            return answer

        return take

    port = free_port()
    ws: dict[str, Worker] = {}
    async with (
        workers(redis.url, "s", "t1", url=f"http://127.0.0.1:{port}") as started,
        target_at(port, ws),
        aiohttp.ClientSession() as http,
    ):
        ws.update(started)
        s, t1 = ws["s"], ws["t1"]
        await carrying(s, "busy")
        t1.inbound._swap = stalls(t1, t1.directory.swap_engine_claim)
        owner = s.directory._owner
        real = owner.swap_claim

        async def settle_answer_lost(key: str, held: str, next_: str) -> str:
            if next_ == settled_claim(t1.name):
                if await claim_holder(redis.url) == t1.name:
                    await real(key, held, next_)  # it lands; its answer does not come
                raise ResponseError(LOADING)
            return await real(key, held, next_)

        owner.swap_claim = settle_answer_lost  # type: ignore[method-assign]
        await found_by_s(ws, http)
        assert ringing(s) == []
        assert await claim_holder(redis.url) == settled_claim("t1")
        gate.set()
        await until(lambda: ringing(t1), 5, "the call ringing on t1")
        assert [c.owner for c in ringing(t1)] == ["t1"] and ringing(s) == []
        assert s.engine.hung_up == [] and t1.engine.hung_up == []
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([m for m in said if "not rung here" in m]) == 1, said
