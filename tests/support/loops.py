"""Both event loops a test may need to run on: asyncio's and uvloop's (the bridge runs on
uvloop, and some of its failures showed there only: the SIP listener's stalled handshakes).

A module that wants both imports :func:`event_loop_policy` (pytest-asyncio's fixture of that
name, overridden): each of its tests then runs once per loop."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Both loops: the bridge runs on uvloop, where the stall was most frequent."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


class LoopLag:
    """The longest the running event loop was late to wake a 5 ms sleeper while it ran (an
    ``async with`` block): a test whose peers share this process (an aiortc client and the
    bridge on one loop) can tell a dropout the bridge made from one the host made by
    stopping the whole process, which no code of ours can hide."""

    def __init__(self) -> None:
        self.worst = 0.0
        """Seconds, the longest lateness seen."""
        self.stalled = 0.0
        """Seconds, the lateness of every wake-up over 20 ms summed: on a heavily loaded host
        the process stops many times a second, and what a listener misses follows their sum
        (once 0.155 s at worst and 23 frames of 50 unheard), not the longest."""
        self._task: asyncio.Task[None] | None = None

    @property
    def frames(self) -> int:
        """20 ms frames the stalls of this process may have cost (one unsent at the sender, one
        concealed, one stretched at the receiver beside those they lasted), 0 when its stalls
        came to under 40 ms in all (two frames: a busy loop's ordinary lateness). Their sum,
        not the longest: a loaded host's many 20-40 ms stalls (0.385 s of them in one run,
        none over 40 ms) cost frames as one long stall does."""
        return 0 if self.stalled < 0.04 else int(self.stalled / 0.02) + 2

    @property
    def past_a_frame(self) -> bool:
        """Whether one stall of this process outlasted a 20 ms frame: a peer's packet that late
        is concealed once at a receiver with a frame's cushion, even where :attr:`frames`
        (their sum under 40 ms) allows none (one stall of 21 ms, a recorded frame dipped)."""
        return self.worst >= 0.02

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            late = loop.time() - due
            self.worst = max(self.worst, late)
            if late > 0.02:
                self.stalled += late

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
