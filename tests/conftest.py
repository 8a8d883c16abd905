"""Fixtures every test directory shares: the bridge app on loopback, and one fixture per fake
engine (each a loopback server written from its engine's spec) with a client factory that
points the bridge at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.config import settings_for_tests

from .fakes.wadial import FakeWadial
from .fakes.zuckzapgo import FakeZuckZapGo

pytest_plugins = ["tests.support.collector"]

if TYPE_CHECKING:
    from .support.cluster import Redis


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test`'s serial part collects only the files whose text marks a test serial (the
    Makefile's ``SERIAL_FILES``): a test marked serial some other way would run in neither part."""
    for item in items:
        if item.get_closest_marker("serial") and "mark.serial" not in item.path.read_text():
            raise pytest.UsageError(
                f"{item.nodeid} is serial, but its file never says mark.serial (the Makefile's "
                "SERIAL_FILES would miss it): mark it with pytest.mark.serial in its file"
            )


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Path) -> Callable[..., Any]:
    """Start the bridge on loopback with test settings (overridable) and return a client.

    Each test has its own data directory (the bridges it starts share it, as a restarted
    worker would): with the default ``data`` every test's bridge repaired, at start, the WAV
    files other tests' bridges were still writing there, and said so at WARNING."""

    async def factory(**overrides: Any) -> TestClient:
        overrides.setdefault("data_dir", str(tmp_path / "data"))
        settings = settings_for_tests(**overrides)
        return await aiohttp_client(create_app(settings))

    return factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[TestClient]:
    yield await make_client()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """A real ``redis-server`` on a loopback port, without persistence (skipped where it is
    missing, failed under CI)."""
    from .support.cluster import Redis, require_redis

    require_redis()
    server = Redis()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for tests that talk to bridge processes."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def meta() -> AsyncIterator[Any]:
    """A fake of Meta's Cloud API (Graph + signed webhooks + a WebRTC peer), on loopback."""
    from .fakes.cloudapi import FakeMeta

    server = FakeMeta()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sdes_meta() -> AsyncIterator[Any]:
    """Meta's end of an SDES-SRTP leg (its SIP road's media), on loopback UDP."""
    from .support.sdes_peer import SdesEndpoint

    end = SdesEndpoint()
    await end.start()
    yield end
    end.close()


@pytest.fixture
async def zuckzapgo() -> AsyncIterator[FakeZuckZapGo]:
    """A fake ZuckZapGo engine on loopback."""
    server = FakeZuckZapGo()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def zclient(make_client: Callable[..., Any], zuckzapgo: FakeZuckZapGo) -> Callable[..., Any]:
    """A factory of bridges on the ZuckZapGo engine, pointed at the fake (settings
    overridable)."""

    async def factory(**overrides: Any) -> TestClient:
        opts: dict[str, Any] = dict(
            engine="zuckzapgo",
            engine_url=zuckzapgo.url,
            engine_token="ztok",
            engine_poll_interval=0.2,
        )
        return await make_client(**{**opts, **overrides})

    return factory


@pytest.fixture
async def wadial() -> AsyncIterator[FakeWadial]:
    """A fake WADial engine on loopback."""
    server = FakeWadial()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def wclient(make_client: Callable[..., Any], wadial: FakeWadial) -> Callable[..., Any]:
    """A factory of bridges on the WADial engine, pointed at the fake (settings overridable)."""

    async def factory(**overrides: Any) -> TestClient:
        opts: dict[str, Any] = dict(
            engine="wadial",
            engine_url=wadial.url,
            engine_token="wkey",
            engine_session="s1",
            engine_poll_interval=0.2,
        )
        return await make_client(**{**opts, **overrides})

    return factory
