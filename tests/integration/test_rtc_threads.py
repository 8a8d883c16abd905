"""A closed session leaves no thread and no reference cycle behind (without the gc's help)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
import weakref
from typing import Any

from bridge.api.keys import MANAGER

from ..support.calls import webrtc_call
from ..support.waits import until


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


async def test_threads_back_to_baseline_after_twenty_calls(make_client) -> None:
    client = await make_client(stats_interval=0.5)
    gc.collect()
    gc.disable()
    try:
        call, rtc = await webrtc_call(client)  # warm up: executors, codecs, imports
        await client.post("/call/hangup", json={"callID": call["callID"]})
        await rtc.close()
        del rtc
        # The loop's default executor is a bounded pool (aioice resolves names, aiortc
        # encodes in it) that grows on demand: grow it to its size before counting.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.1) for _ in range(40)))
        await asyncio.sleep(0.5)
        baseline = native_threads()
        calls = []
        for _ in range(4):  # five set-ups at a time, as a busy worker meets them
            calls += await asyncio.gather(*(webrtc_call(client) for _ in range(5)))
        during = native_threads()
        assert during > baseline + 20  # the calls did run their codec threads
        manager = client.server.app[MANAGER]
        runtimes = [manager.find_runtime(c["callID"]) for c, _ in calls]
        sessions = [weakref.ref(r.participants.agent) for r in runtimes]
        pcs = [weakref.ref(s().pc) for s in sessions]
        del runtimes  # only weak references to the calls' media from here on

        async def hang_up(call: dict[str, Any], rtc: Any) -> None:
            await client.post("/call/hangup", json={"callID": call["callID"]})
            await rtc.close()

        await asyncio.gather(*(hang_up(call, rtc) for call, rtc in calls))
        calls.clear()
        # Threads end as they are joined; no gc.collect() anywhere.
        with contextlib.suppress(AssertionError):  # the assertion below says what is left
            await until(lambda: native_threads() <= baseline + 2, 10.0, "threads", every=0.25)
        after = native_threads()
        names = sorted(t.name for t in threading.enumerate())
        assert after <= baseline + 2, (baseline, during, after, names)
        # Nothing of the sessions waits for the cyclic collector (off: an object in a cycle
        # would stay, and so would its weak reference). The manager's watchdog and stats
        # loops may hold the last session they looked at in a local variable: one at most.
        assert sum(r() is not None for r in sessions) <= 1
        assert sum(r() is not None for r in pcs) <= 1  # that session's own
    finally:
        gc.enable()
