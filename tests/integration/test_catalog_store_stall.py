"""A single node's numbers store (SQLite under ``BRIDGE_DATA_DIR``) on a volume that stalls:
the catalog's poll and its writes wait on the store's own thread, never on the event loop,
which carries every call's media."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from bridge.numbers.catalog import Catalog
from bridge.numbers.store import LocalStore, Sealing

from ..support.loops import LoopLag

STALL_S = 2.0
"""How long the stalled volume holds a statement (released then whatever the test does)."""


class StallingConnection:
    """SQLite's connection, whose statements wait while ``stalled`` is set, as a statement on a
    stalled volume waits for its I/O (the wait is bounded: a broken test cannot hang)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.waited = 0

    def execute(self, *args: Any) -> Any:
        if self.stalled.is_set():
            self.waited += 1
            self.released.wait(STALL_S)
        return self._db.execute(*args)

    def close(self) -> None:
        self._db.close()


async def test_a_stalled_store_never_holds_the_event_loop(tmp_path) -> None:
    store = LocalStore(str(tmp_path), Sealing("k" * 32))
    db = StallingConnection(store._db)
    store._db = db  # type: ignore[assignment]
    catalog = Catalog(store, None)
    await catalog.start(poll=0.05)
    try:
        db.stalled.set()
        async with LoopLag() as lag:
            polled = asyncio.get_running_loop().time()
            while db.waited == 0:  # the follower's next poll meets the stall
                assert asyncio.get_running_loop().time() - polled < 5, "no poll met the stall"
                await asyncio.sleep(0.05)
            writing = asyncio.ensure_future(
                store.put("tenants", "ten_a", {"tenantID": "ten_a", "name": "acme"})
            )
            await asyncio.sleep(0.5)  # the loop runs on while both wait
            assert not writing.done()
        # Half the stall at most (a loaded host's lateness beside it); the whole of it before.
        assert lag.worst < STALL_S / 2, lag.worst
        db.stalled.clear()
        db.released.set()
        await asyncio.wait_for(writing, STALL_S * 2)
        await catalog.reload()
        assert "ten_a" in catalog.tenants
    finally:
        db.released.set()
        await catalog.close()
