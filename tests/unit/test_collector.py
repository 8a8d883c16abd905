"""The bridge process's start-up heap is frozen (``bridge/loop.py`` ``freeze_startup_heap``): a
full collection, which stops every call's media on the worker while it walks the heap, then
walks only what was made since; the collector still frees the calls' own cycles. Run in a
child process: freezing pytest's heap would keep every earlier test's objects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import asyncio, gc, weakref
    import bridge.app  # the modules a bridge has loaded by the time it serves
    from bridge.loop import freeze_startup_heap

    before = len(gc.get_objects())
    asyncio.run(freeze_startup_heap(None))
    frozen, walked = gc.get_freeze_count(), len(gc.get_objects())

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a call's cycle, made after start-up
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    print(before, frozen, walked, gone() is None)
    """
)


def test_a_full_collection_walks_what_was_made_after_start_up_and_still_frees_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, walked, freed = int(out[0]), int(out[1]), int(out[2]), out[3] == "True"
    assert before > 30_000  # the bridge's modules alone: a full walk of these costs tens of ms
    assert frozen > 0.9 * before  # start-up's garbage was collected first, the rest frozen
    assert walked < 0.05 * before  # what a full collection walks now
    assert freed  # a cycle made after start-up is still collected
