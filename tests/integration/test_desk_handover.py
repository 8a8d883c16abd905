"""A call ringing agents moves with a deploy's drain: two workers (in-process apps) on one real
Redis, each the other's peer at its own address, and the fake ZuckZapGo (its calls can move).
The worker carrying the call hands it over; the new owner's desk resumes the call's route from
the ring the store kept, and the agent who accepts takes the call there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.api.keys import HANDOVER, MANAGER
from bridge.app import create_app
from bridge.config.loader import settings_for_tests

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.calls import wait_state
from ..support.ports import free_port
from .test_desk import Agent

pytestmark = pytest.mark.timeout(30)

SECRET = "s" * 32


@pytest.fixture
async def fake() -> AsyncIterator[FakeZuckZapGo]:
    engine = FakeZuckZapGo(token="ztok")
    await engine.start()
    yield engine
    await engine.stop()


async def worker(aiohttp_client: Any, redis: Any, monkeypatch: Any, name: str, url: str) -> Any:
    """A worker of the cluster on the fake engine: its internal address is its test server's."""
    port = free_port()
    monkeypatch.setenv("BRIDGE_WORKER_ID", name)
    settings = settings_for_tests(
        directory=redis.url,
        internal_secret=SECRET,
        internal_url=f"http://127.0.0.1:{port}",
        engine="zuckzapgo",
        engine_url=url,
        engine_token="ztok",
        engine_poll_interval=0.1,
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
