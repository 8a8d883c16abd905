from __future__ import annotations

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
