"""A close whose caller goes away mid-teardown (a request whose client left, a task its owner
cancelled): what ``tasks.CloseOnce`` is for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge.tasks import TaskSet


async def cancel_mid_teardown(tasks: TaskSet, close: Callable[[], Awaitable[Any]]) -> None:
    """Call ``close`` in a task of its own and cancel that caller while the close waits for
    the owner's ``tasks`` (one of them, put there now, takes a moment to stop)."""
    stopping = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await asyncio.sleep(0.05)
            raise

    tasks.spawn(child(), "slow-to-stop")
    closing = asyncio.create_task(close())
    await stopping.wait()  # the close is mid-teardown, waiting for the owner's tasks …
    closing.cancel()  # … when its caller goes
    with pytest.raises(asyncio.CancelledError):
        await closing
