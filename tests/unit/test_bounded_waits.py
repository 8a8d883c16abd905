"""A bounded wait ends when its task is cancelled, even in the loop turn the thing it waits for
happens (``bridge/tasks.py`` ``wait_event``, and ``asyncio.timeout()`` everywhere else).
Python 3.11's ``asyncio.wait_for`` returned the result of a wait that completed in the turn
the cancellation came (CPython gh-86296, fixed in 3.12): a loop woken as its owner stopped it
ran on, and the owner's close waited its whole timeout for it (the webhook workers' 5 s at
shutdown, said at WARNING)."""

from __future__ import annotations

import asyncio
import time

from bridge.tasks import TaskSet, wait_event


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
