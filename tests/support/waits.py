"""Waiting for a condition in a test: a bound on how long, never an assertion on time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.01,
) -> T:
    """Poll ``predicate()`` every ``every`` seconds (awaiting it if it is a coroutine: an HTTP
    probe polls every 50 ms or so) until it is truthy and return its value; an
    ``AssertionError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def until_passes(
    check: Callable[[], None], timeout: float = 10.0, every: float = 0.05
) -> None:
    """Run ``check`` (a function that asserts) every ``every`` seconds until it passes; after
    ``timeout`` seconds its last ``AssertionError`` is raised. For "the far end hears the
    tone by now" checks, which a loaded runner reaches later than a fixed sleep allows."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(every)


async def settled(
    value: Callable[[], T], quiet: float = 0.3, timeout: float = 10.0, what: str = "value"
) -> T:
    """``value()`` once it has stayed the same for ``quiet`` seconds (what was in flight has
    arrived); an ``AssertionError`` naming ``what`` if it still changes after ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while True:
        await asyncio.sleep(0.02)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still changing after {timeout} s")


async def wait_port(port: int, timeout: float = 5.0) -> None:
    """Until something listens on ``127.0.0.1:port`` (a TCP connect, closed at once: a
    WebSocket server takes it for a failed handshake, never for a client)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.02)
