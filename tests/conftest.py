from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.config import settings_for_tests


@pytest.fixture
def make_client(aiohttp_client: Any) -> Callable[..., Any]:
    """Start the bridge on loopback with test settings (overridable) and return a client."""

    async def factory(**overrides: Any) -> TestClient:
        settings = settings_for_tests(**overrides)
        return await aiohttp_client(create_app(settings))

    return factory


@pytest.fixture
async def meta() -> AsyncIterator[Any]:
    """A fake of Meta's Cloud API (Graph + signed webhooks + a WebRTC peer), on loopback."""
    from .fakes.cloudapi import FakeMeta

    server = FakeMeta()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[TestClient]:
    yield await make_client()


async def wait_state(
    client: TestClient, call_id: str, state: str, timeout: float = 5.0, headers: Any = None
) -> dict[str, Any]:
    """Poll a call until it reaches ``state``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/call/{call_id}", headers=headers)
        body = await resp.json()
        if body.get("state") == state:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"call {call_id} never became {state}: {body}")
        await asyncio.sleep(0.05)


def band_energy(pcm, rate: int, freq: float) -> float:
    """Share of a signal's energy within ±15 Hz of ``freq`` (is a tone present, and how much)."""
    import numpy as np

    x = np.asarray(pcm, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / rate)
    return float(spec[(f > freq - 15) & (f < freq + 15)].sum() / max(spec.sum(), 1e-12))


async def webrtc_call(client: TestClient, freq: float = 440.0) -> tuple[dict[str, Any], Any]:
    """Place a call, connect an aiortc client sending ``freq`` to it, wait until it is active."""
    from .rtc_client import RtcClient

    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=freq)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await wait_state(client, call["callID"], "active")
    return call, rtc
