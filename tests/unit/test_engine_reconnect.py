"""The engine layer's outage parts on their own: the reconnect window and pending hang-ups."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from bridge.engines.base import EngineStats
from bridge.engines.channels import MediaClosed
from bridge.engines.hangups import PendingHangups
from bridge.engines.socket import ReconnectingChannel
from bridge.errors import EngineCallNotFound, EngineUnavailable

from ..support.waits import until


class Inner:
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def send(self, pcm: np.ndarray) -> None:
        if self.closed.is_set():
            raise MediaClosed("closed")

    async def recv(self) -> np.ndarray:
        await self.closed.wait()
        raise MediaClosed("socket closed")

    async def close(self) -> None:
        self.closed.set()


async def test_reconnects_stop_at_once_when_the_engine_no_longer_lists_the_call() -> None:
    first = Inner()
    opened = [first]
    live = [True]

    async def connect() -> Inner:
        raise MediaClosed("refused")

    async def still_live() -> bool:
        return live[0]

    channel = ReconnectingChannel("c1", connect, still_live, EngineStats(), window=30.0)
    channel._inner = opened[0]  # type: ignore[assignment]
    recv = asyncio.ensure_future(channel.recv())
    await first.close()
    await asyncio.sleep(0.5)
    assert not recv.done()  # unreachable: keeps trying within the window
    live[0] = False
    with pytest.raises(MediaClosed):  # at the next attempt, long before the 30 s window
        await asyncio.wait_for(recv, 10)
    await channel.close()


async def test_window_runs_out_with_backoff_capped_and_one_warning(caplog) -> None:
    attempts: list[float] = []

    async def connect() -> Inner:
        attempts.append(time.monotonic())
        raise MediaClosed("refused")

    async def still_live() -> bool:
        return True

    stats = EngineStats()
    channel = ReconnectingChannel("c2", connect, still_live, stats, window=4.0, max_backoff=1.0)
    with caplog.at_level(logging.WARNING, logger="bridge.engines.socket"):
        await channel.open()  # the first open fails: not fatal
        await channel.send(np.zeros(320, dtype=np.int16))  # dropped, counted, never blocks
        with pytest.raises(MediaClosed):
            await asyncio.wait_for(channel.recv(), 10)
    gaps = np.diff(attempts)
    assert gaps.max() <= 1.6 and attempts[-1] - attempts[1] >= 3.5  # backoff capped at 1 s
    assert stats.uplink_dropped == 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("not back within 4 s" in m for m in lines) == 1, lines


async def test_pending_hangups_retry_until_done_and_are_bounded(caplog) -> None:
    up = [False]
    done: list[str] = []

    async def hangup(engine_call_id: str) -> None:
        if engine_call_id == "gone":
            raise EngineCallNotFound("no such call")
        if not up[0]:
            raise EngineUnavailable("unreachable")
        done.append(engine_call_id)

    pending = PendingHangups("fake", hangup, asyncio.sleep, limit=2, backoff=0.05)
    with caplog.at_level(logging.INFO, logger="bridge.engines.hangups"):
        pending.add("a", "test")
        pending.add("a", "test")  # once
        pending.add("b", "test")
        pending.add("c", "test")  # over the limit: "a" is given up, with a warning
        assert pending.ids() == ["b", "c"]
        task = asyncio.ensure_future(pending.run())
        await asyncio.sleep(0.3)
        assert done == [] and len(pending) == 2
        up[0] = True
        await until(lambda: len(pending) == 0, 3.0, "the hang-ups retried")
        assert sorted(done) == ["b", "c"]
        pending.add("gone", "test")  # the engine says 404: done, not retried
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(pending) == 0 and pending.done == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "giving up on call a" in warnings[0]


async def test_pending_hangups_give_up_after_max_age(caplog) -> None:
    async def hangup(engine_call_id: str) -> None:
        raise EngineUnavailable("unreachable")

    pending = PendingHangups("fake", hangup, asyncio.sleep, max_age=0.3, backoff=0.05)
    with caplog.at_level(logging.WARNING, logger="bridge.engines.hangups"):
        pending.add("x", "test")
        task = asyncio.ensure_future(pending.run())
        await asyncio.sleep(0.8)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(pending) == 0 and pending.abandoned == 1
    assert any("giving up hanging up call x" in r.getMessage() for r in caplog.records)


async def test_a_channel_that_opens_in_background_says_when_its_socket_is_open() -> None:
    """The handover waits on ``wait_connected`` (the ``OpensInBackground`` capability), not
    on a poll of a concrete channel: false while the engine refuses, true once it takes the
    socket, false again while it reconnects."""
    from bridge.engines import OpensInBackground

    refuse = [True]
    inners: list[Inner] = []

    async def connect() -> Inner:
        if refuse[0]:
            raise ConnectionError("refused")
        inners.append(Inner())
        return inners[-1]

    async def still_live() -> bool:
        return True

    async def no_pause(seconds: float) -> None:
        await asyncio.sleep(0.01)

    channel = ReconnectingChannel(
        "c1", connect, still_live, EngineStats(), window=30.0, pause=no_pause
    )
    assert isinstance(channel, OpensInBackground)
    await channel.open()
    assert not await channel.wait_connected(0.05)
    recv = asyncio.ensure_future(channel.recv())  # keeps trying within the window
    refuse[0] = False
    assert await channel.wait_connected(5.0)
    assert channel.connected and len(inners) == 1
    refuse[0] = True
    await inners[0].close()  # the engine drops the socket: reconnecting
    await asyncio.sleep(0.05)
    assert not await channel.wait_connected(0.05)
    refuse[0] = False
    assert await channel.wait_connected(5.0) and len(inners) == 2
    await channel.close()
    assert not channel.connected
    recv.cancel()
    with pytest.raises((asyncio.CancelledError, MediaClosed)):
        await recv


async def test_an_engine_that_accepts_and_drops_the_socket_at_once_is_backed_off_and_given_up() -> (
    None
):
    """An engine that still lists the call but closes each media socket as soon as it opens:
    the reconnects once spun without a pause (and, every socket opening at once, without ever
    yielding to the loop), the window starting afresh each time, for ever."""
    attempts = [0]

    async def connect() -> Inner:
        attempts[0] += 1
        inner = Inner()
        if attempts[0] < 200:  # the guard: past it a socket stays up, so the test can fail
            inner.closed.set()
        return inner

    async def still_live() -> bool:
        return True

    channel = ReconnectingChannel(
        "c4", connect, still_live, EngineStats(), window=1.0, backoff=0.05, max_backoff=0.2
    )
    await channel.open()
    with pytest.raises(MediaClosed):
        await asyncio.wait_for(channel.recv(), 10)
    assert attempts[0] < 50, attempts[0]
    await channel.close()


async def test_a_channel_whose_closing_caller_is_cancelled_still_closes_its_socket() -> None:
    """The call's close of its engine media is cancelled while the open socket closes (its
    close handshake under way): the socket is closed all the same. Before, the half-done
    close was dropped with the channel's last reference to the socket, and a second close
    found nothing to close (``tasks.CloseOnce``)."""
    started, gate = asyncio.Event(), asyncio.Event()

    class Handshaking(Inner):
        async def close(self) -> None:  # the engine answers the close frame when let
            started.set()
            await gate.wait()
            self.closed.set()

    async def still_live() -> bool:
        return True

    inner = Handshaking()
    channel = ReconnectingChannel("c-cancel", connect_never, still_live, EngineStats())
    channel._inner = inner  # type: ignore[assignment]
    closing = asyncio.create_task(channel.close())
    await started.wait()
    closing.cancel()  # the caller goes mid-close
    with pytest.raises(asyncio.CancelledError):
        await closing
    gate.set()
    await until(inner.closed.is_set, 2, "the socket closed")
    await channel.close()  # a later close: the same one, over
    assert not channel.connected


async def connect_never() -> Inner:
    raise MediaClosed("refused")
