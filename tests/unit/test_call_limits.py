"""The watchdog of calls' time limits (``calls/watchdog.py``) outlives a call whose check
raises — a bug in its ending or in a session's state listeners: that call is logged once, and
every other call keeps its limits, pass after pass. Before, the first such error ended the
watchdog: no call of the worker rang out, hit its maximum duration or lost a silent session
any more."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

from bridge.calls.model import CallState, Direction, EndReason
from bridge.calls.watchdog import watch_forever
from bridge.config import CallSettings

from ..support.waits import until


def _ringing(call_id: str) -> Any:
    """A call ringing since long before its ring timeout."""
    call = SimpleNamespace(
        id=call_id,
        state=CallState.RINGING,
        mono_created=-1e6,
        mono_answered=None,
        direction=Direction.INBOUND,
    )
    return SimpleNamespace(call=call, participants=SimpleNamespace(sessions={}))


async def test_a_call_whose_ending_raises_leaves_the_others_their_limits(caplog) -> None:
    runtimes = [_ringing("broken"), _ringing("fine")]
    ended: Counter[str] = Counter()

    def end_call(runtime: Any, reason: EndReason) -> None:
        if runtime.call.id == "broken":
            raise RuntimeError("a bug in this call's ending")
        assert reason is EndReason.MISSED
        ended[runtime.call.id] += 1  # (the real ending runs once; this one counts passes)

    watching = asyncio.ensure_future(
        watch_forever(
            CallSettings(), lambda: runtimes, end_call, lambda: asyncio.sleep(0), interval=0.01
        )
    )
    try:
        await until(lambda: ended["fine"] >= 3, what="three passes ending the fine call")
        assert not watching.done()
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in logged] == ["call broken: checking its time limits failed"]
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
