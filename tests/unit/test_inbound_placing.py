"""A new inbound call one worker claimed and placed on a less loaded one (``POST /call/adopt``,
``api/placing.py`` ``inbound_placer``): when the other worker's answer does not come in time,
the call rings here only if that worker did not take it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from bridge.api import placing
from bridge.calls import Call, CallState, Direction
from bridge.cluster import WorkerInfo

from ..support.ports import free_port


class _Directory:
    """The shared directory as the placing worker sees it: the other worker ``t1`` is the
    least loaded; the new call's claim is the placer's, handed on by compare-and-set."""

    shared = True
    worker_id = "placer"

    def __init__(self, url: str) -> None:
        self.url = url
        self.claims = {"n1:E7": "placer"}

    async def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo("placer", "", 3, 10), WorkerInfo("t1", self.url, 0, 10)]

    async def swap_engine_claim(
        self, engine_call_id: str, held: str, next_: str, *, again: bool = False
    ) -> str:
        was = self.claims.get(engine_call_id, "")
        if was == held:
            self.claims[engine_call_id] = next_
        return was


async def _placed_on(port: int, adopt: Any, directory: _Directory, answer: asyncio.Event) -> bool:
    """What ``inbound_placer`` answers for engine call E7 offered to a stub of the other
    worker on ``port`` whose ``POST /call/adopt`` is ``adopt`` (``answer`` set at the end:
    its held answer let go)."""
    app = web.Application()
    app.router.add_post("/call/adopt", adopt)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            place: Any = placing.inbound_placer(directory, http, "secret")  # type: ignore[arg-type]
            return await place("E7", "15550001111", "n1")
    finally:
        answer.set()
        await runner.cleanup()


async def test_a_call_the_other_worker_took_but_answered_too_late_is_not_rung_here(
    monkeypatch,
) -> None:
    """The other worker took the call (it rings there, the claim its own) but its
    answer came after the request's timeout (a slow Redis under its admission and flush).
    Ringing it here as well rang one WhatsApp call as two bridge calls on two workers."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    port = free_port()
    directory = _Directory(f"http://127.0.0.1:{port}")
    answer = asyncio.Event()

    async def adopt(request: web.Request) -> web.Response:
        body = await request.json()
        call = Call(
            id="c7",
            peer=body["peer"],
            direction=Direction.INBOUND,
            owner="t1",
            engine_call_id=body["engineCallID"],
            state=CallState.RINGING,
            number_id=body["numberID"],
        )
        assert await directory.swap_engine_claim("n1:E7", body["token"], "t1") == body["token"]
        await answer.wait()  # its answer held up past the placer's timeout
        return web.json_response(call.snapshot(), status=201)

    assert await _placed_on(port, adopt, directory, answer) is True


async def test_a_call_the_other_worker_did_not_take_rings_here(monkeypatch) -> None:
    """The other worker never answered and never took the call: it rings here (as before)."""
    monkeypatch.setattr(placing, "ADOPT_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    port = free_port()
    directory = _Directory(f"http://127.0.0.1:{port}")
    answer = asyncio.Event()

    async def adopt(request: web.Request) -> web.Response:
        await answer.wait()
        return web.json_response({}, status=503)

    assert await _placed_on(port, adopt, directory, answer) is False
    assert directory.claims["n1:E7"] == "placer"  # taken back: the other can take it no more
