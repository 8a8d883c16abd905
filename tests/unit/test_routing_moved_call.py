"""A request about a call this worker has handed over (``cluster/handover.py``) goes to the
worker that carries it on, even while this one still holds the call for the browser's relay
(``api/routing.py``): two in-process workers on loopback, a directory that says who owns what.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.api.errors import error_middleware, error_response
from bridge.api.keys import DIRECTORY, INTERNAL_HTTP, MANAGER, METRICS, SWITCHBOARD
from bridge.api.routing import routing_middleware
from bridge.calls import Call, CallState, Direction
from bridge.calls.registry import InMemoryCallRegistry
from bridge.cluster import CallRecord, WorkerInfo
from bridge.engines import WebhookCalls
from bridge.errors import DirectoryUnavailable
from bridge.metrics import Metrics

from ..support.ports import free_port

SECRET = "internal-secret"


class _Directory:
    """Worker A's view: the call's record names B, alive, as after B's ``take_over``."""

    shared = True

    def __init__(self, worker_id: str, records: dict[str, CallRecord], workers: list) -> None:
        self.worker_id = worker_id
        self.url = ""
        self._records = records
        self._workers = workers

    async def record(self, call_id: str) -> CallRecord | None:
        return self._records.get(call_id)

    async def workers(self) -> list[WorkerInfo]:
        return self._workers

    async def flush(self, timeout: float) -> None:
        pass


class _Manager:
    def __init__(self, registry: InMemoryCallRegistry) -> None:
        self.registry = registry


def _worker(name: str) -> web.Application:
    """A worker whose ``/call/mute`` says which worker served it."""

    async def mute(request: web.Request) -> web.Response:
        return web.json_response({"servedBy": name})

    app = web.Application()
    app.router.add_post("/call/mute", mute)
    return app


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_request_about_a_call_handed_over_goes_to_its_new_owner(
    aiohttp_client: Any, aiohttp_server: Any, http: aiohttp.ClientSession
) -> None:
    """Between ``call.moved`` and letting go (up to the relay's 10 s, while the browser's new
    connection comes up on the new owner), the old worker still has the call in its registry
    and served every request about it itself: a browser's new offer over a kept-alive
    connection landed on the worker about to let go (and was closed with it), a mute or a
    hang-up acted on the copy that no longer carries the call."""
    b = await aiohttp_server(_worker("B"))
    call = Call(
        id="c1",
        peer="5521999999999@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="A",
        engine_call_id="E1",
        state=CallState.ACTIVE,
    )
    registry = InMemoryCallRegistry()
    registry.add(call)
    call.owner = "B"  # announce_move: B carries it on now
    record = CallRecord("c1", "B", str(b.make_url("")).rstrip("/"), "E1", call.snapshot())
    workers = [WorkerInfo("A", "", 1, 10, draining=True), WorkerInfo("B", record.url, 1, 10)]
    app = _worker("A")
    app.middlewares.append(routing_middleware(SECRET))
    app[DIRECTORY] = _Directory("A", {"c1": record}, workers)  # type: ignore[assignment]
    app[MANAGER] = _Manager(registry)  # type: ignore[assignment]
    app[INTERNAL_HTTP] = http
    app[METRICS] = Metrics()
    a = await aiohttp_client(app)
    resp = await a.post("/call/mute", json={"callID": "c1", "muted": True})
    assert resp.status == 200
    assert await resp.json() == {"servedBy": "B"}


@pytest.mark.parametrize("b_answers", ["never", "not at all"])
async def test_a_call_placed_on_a_worker_that_took_it_and_fell_silent_is_not_dialled_again(
    aiohttp_client: Any,
    aiohttp_server: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    b_answers: str,
) -> None:
    """``POST /call/make`` placed on B, the least loaded: B took the request and did not
    answer in time (an engine slow to dial). B may be ringing the user now: trying the next
    worker rang the user twice. The client is told it may have been placed; only a worker
    never reached ("not at all": nothing listens at its address) is passed over."""
    from bridge.api import routing

    monkeypatch.setattr(routing, "FORWARD_TIMEOUT", aiohttp.ClientTimeout(total=0.3))
    dialled: list[str] = []

    async def slow_make(request: web.Request) -> web.Response:
        dialled.append("B")
        await asyncio.sleep(5)
        return web.json_response({}, status=201)

    if b_answers == "never":
        b_app = web.Application()
        b_app.router.add_post("/call/make", slow_make)
        b_url = str((await aiohttp_server(b_app)).make_url("")).rstrip("/")
    else:
        b_url = f"http://127.0.0.1:{free_port()}"

    async def make_here(request: web.Request) -> web.Response:
        dialled.append("A")
        return web.json_response({"servedBy": "A"}, status=201)

    app = web.Application(middlewares=[error_middleware(), routing_middleware(SECRET)])
    app.router.add_post("/call/make", make_here)
    workers = [WorkerInfo("B", b_url, 0, 10), WorkerInfo("A", "", 5, 10)]
    app[DIRECTORY] = _Directory("A", {}, workers)  # type: ignore[assignment]
    app[MANAGER] = _Manager(InMemoryCallRegistry())  # type: ignore[assignment]
    app[INTERNAL_HTTP] = http
    app[METRICS] = Metrics()
    a = await aiohttp_client(app)
    resp = await a.post("/call/make", json={"phone": "5521999999999"})
    body = await resp.json()
    if b_answers == "never":
        assert resp.status == 503 and body["error"]["code"] == "owner_unreachable", body
        assert "may have been placed" in body["error"]["message"]
        assert dialled == ["B"]  # not A as well
    else:
        assert resp.status == 201 and body == {"servedBy": "A"} and dialled == ["A"]


class _Away(_Directory):
    """Redis away: who carries a call cannot be told."""

    available = False

    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None:
        raise DirectoryUnavailable("the call directory (Redis) is unreachable: paused")


class _Silent(_Directory):
    """Redis up: the call's record names B, whose address answers nothing."""

    available = True

    async def record_by_engine_id(self, engine_call_id: str) -> CallRecord | None:
        return CallRecord("c9", "B", f"http://127.0.0.1:{free_port()}", engine_call_id, {})


@pytest.mark.parametrize(
    ("outage", "local"),
    [("redis away", "takes it"), ("redis away", "refuses it"), ("owner silent", "takes it")],
)
async def test_a_webhook_about_a_call_that_cannot_be_routed(
    aiohttp_client: Any,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
    local: str,
) -> None:
    """Meta's webhook names a call this worker does not carry, and Redis is away (or the
    call's worker is silent): taken here (its calls here heard), it is answered 503 with
    ``Retry-After`` so Meta delivers it again for the call's own worker (``owner_unreachable``
    had none). One the local handling refuses (malformed, forged) was 503 as well, delivered
    again and again: it gets the local answer, as with Redis up."""
    from bridge.api import routing

    monkeypatch.setattr(routing, "webhook_calls", lambda *_: WebhookCalls(("n1:E9",)))
    taken: list[str] = []

    async def webhook(request: web.Request) -> web.Response:
        taken.append("A")
        if local == "refuses it":
            return error_response(400, "bad_request", "not a webhook of Meta's")
        return web.json_response({"accepted": True})

    app = web.Application(middlewares=[error_middleware(), routing_middleware(SECRET)])
    app.router.add_post("/engine/webhook", webhook)
    directory = _Away("A", {}, []) if outage == "redis away" else _Silent("A", {}, [])
    app[DIRECTORY] = directory  # type: ignore[assignment]
    app[MANAGER] = _Manager(InMemoryCallRegistry())  # type: ignore[assignment]
    app[SWITCHBOARD] = None  # type: ignore[assignment]
    app[INTERNAL_HTTP] = http
    app[METRICS] = Metrics()
    a = await aiohttp_client(app)
    resp = await a.post("/engine/webhook", json={"entry": []})
    body = await resp.json()
    assert taken == ["A"]
    if local == "refuses it":
        assert resp.status == 400 and body["error"]["code"] == "bad_request", body
    else:
        code = "directory_unavailable" if outage == "redis away" else "owner_unreachable"
        assert resp.status == 503 and body["error"]["code"] == code, body
        assert resp.headers["Retry-After"] == "5"
