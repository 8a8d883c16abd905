"""A bounded wait ends when its task is cancelled, even in the loop turn the thing it waits for
happens (``bridge/tasks.py`` ``wait_event``, and ``asyncio.timeout()`` everywhere else).
Python 3.11's ``asyncio.wait_for`` returned the result of a wait that completed in the turn
the cancellation came (CPython gh-86296, fixed in 3.12): a loop woken as its owner stopped it
ran on, and the owner's close waited its whole timeout for it (the webhook workers' 5 s at
shutdown, said at WARNING)."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path

from bridge.tasks import TaskSet, wait_event

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


async def test_a_loop_woken_as_its_owner_closes_ends_cancelled_at_once() -> None:
    poke = asyncio.Event()
    woken: list[bool] = []

    async def loop() -> None:  # the shape of a poll loop that a poke cuts short
        while True:
            woken.append(await wait_event(poke, 5.0))
            poke.clear()

    tasks = TaskSet("test")
    task = tasks.spawn(loop(), "loop")
    await asyncio.sleep(0)  # waiting on its poke
    poke.set()  # woken in the turn its owner stops it
    started = time.monotonic()
    await tasks.close(timeout=0.5)
    assert task.cancelled() and woken == []
    assert time.monotonic() - started < 0.1


async def test_wait_event_says_whether_the_event_came_in_time() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 1.0) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


def test_the_bridge_waits_with_asyncio_timeout_not_wait_for() -> None:
    uses = []
    for path in sorted(BRIDGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "asyncio"
                and any(alias.name == "wait_for" for alias in node.names)
            ):
                uses.append(f"{path.relative_to(BRIDGE.parent)}:{node.lineno}")
    assert uses == [], "asyncio.wait_for swallows a cancellation on 3.11: use asyncio.timeout()"
