"""``TaskPerKey``: one task a key in its owner's task set — a new one ends the one before, a
cancel ends a key's, an ended task leaves, and the owner's close awaits what is left."""

from __future__ import annotations

import asyncio

from bridge.tasks import TaskPerKey, TaskSet


async def test_one_task_a_key_the_newest_counts_and_each_ends_with_its_owner() -> None:
    owner = TaskSet("test")
    per_number = TaskPerKey[str](owner, "check")
    gate = asyncio.Event()

    async def wait() -> None:
        await gate.wait()

    first = per_number.start("n1", wait())
    second = per_number.start("n1", wait())  # asked again: the one before ends
    other = per_number.start("n2", wait())
    await asyncio.sleep(0)
    assert first.cancelled() and per_number.get("n1") is second
    assert second.get_name() == "test:check:n1"

    per_number.cancel("n2")  # its number gone
    await asyncio.sleep(0)
    assert other.cancelled() and per_number.get("n2") is None

    gate.set()
    await second
    assert per_number.get("n1") is None  # ended: left on its own

    kept = per_number.start("n3", asyncio.sleep(60))
    assert per_number.pop("n3") is kept and per_number.get("n3") is None
    await owner.close(timeout=1)  # let go of here, still the owner's to end
    assert kept.cancelled() and len(owner) == 0
