"""Meta's Graph road: a ``terminate`` that overtakes its call's ``connect`` keeps the call from
ringing on every worker, through the one ``CallsOver`` the SIP road uses (the call directory:
``engines.EndsBeforeArrival``). A ``terminate`` naming no call live on its engine is marked over
there; a new call's ``connect`` asks it before the call is pre-accepted; with the directory
away the engine keeps to its own memory. Before, the ``terminate`` lived in its worker's memory
alone: the worker the late ``connect`` reached pre-accepted a call Meta had ended (Meta refused,
a WARNING "cannot pre-accept", a ``reject``).

Two engines on the fake Meta (loopback Graph API, signed webhooks, a real WebRTC peer), one
stand-in directory they share."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import settings_for_tests
from bridge.engines import CallsOver, EngineEventKind
from bridge.engines.cloudapi import SIGNATURE_HEADER, CloudApiEngine, sign
from bridge.errors import DirectoryUnavailable

from ..support.waits import until

pytestmark = pytest.mark.timeout(20)


class SharedOver:
    """The directory's ``CallsOver``, in memory: what was marked and asked; ``away``: Redis
    unreachable (both raise, as the directory's bounded calls do)."""

    def __init__(self) -> None:
        self.over: set[str] = set()
        self.asked: list[str] = []
        self.away = False

    async def mark_over(self, engine_call_id: str) -> None:
        if self.away:
            raise DirectoryUnavailable("the call directory is unreachable")
        self.over.add(engine_call_id)

    async def marked_over(self, engine_call_id: str) -> bool:
        self.asked.append(engine_call_id)
        if self.away:
            raise DirectoryUnavailable("the call directory is unreachable")
        return engine_call_id in self.over


@contextlib.asynccontextmanager
async def graph_engines(
    meta: Any, data_dir: Path, *calls_over: CallsOver
) -> AsyncIterator[list[CloudApiEngine]]:
    """Engines of Meta's number, one a worker, each with its worker's ``CallsOver`` (as the
    switchboard sets it), started; closed at the end."""
    settings = settings_for_tests(**meta.bridge_settings(), data_dir=str(data_dir))
    engines = []
    try:
        for shared in calls_over:
            engine = CloudApiEngine(settings)
            engine.calls_over = lambda shared=shared: shared
            engines.append(engine)
            await engine.start()
        yield engines
    finally:
        for engine in engines:
            await engine.close()


@pytest.fixture
async def two(meta: Any, tmp_path: Path) -> AsyncIterator[tuple[list[CloudApiEngine], SharedOver]]:
    """Two workers' engines of Meta's number, sharing one :class:`SharedOver`."""
    shared = SharedOver()
    async with graph_engines(meta, tmp_path, shared, shared) as engines:
        yield engines, shared


def deliver(meta: Any, engine: CloudApiEngine, value: dict[str, Any]) -> None:
    """Meta's signed webhook with ``value``, taken by ``engine`` (as its front door does)."""
    raw = json.dumps(meta.envelope(value)).encode()
    engine.receive_webhook(raw, {SIGNATURE_HEADER: sign(meta.app_secret, raw)})


def meta_actions(meta: Any, wacid: str) -> list[str]:
    return [a["action"] for a in meta.actions if a.get("call_id") == wacid]


def incoming(engine: CloudApiEngine) -> list[str]:
    """The calls ``engine`` rang (its ``INCOMING`` events so far, taken off its queue)."""
    rung = []
    while not engine.events.empty():
        event = engine.events.get_nowait()
        if event.kind is EngineEventKind.INCOMING:
            rung.append(event.engine_call_id)
    return rung


def settled(engine: CloudApiEngine, wacid: str) -> bool:
    """The call is over on ``engine`` and nothing is left of it: forgotten, no answer being
    made for it."""
    answering = any(wacid in t.get_name() for t in engine._tasks._tasks)
    return wacid in engine._ended and wacid not in engine.calls and not answering


async def test_a_terminate_to_one_worker_keeps_its_connect_to_another_from_ringing(
    two: tuple[list[CloudApiEngine], SharedOver], meta: Any, caplog: Any
) -> None:
    (one, other), shared = two
    caplog.set_level(logging.INFO)
    mcall, connect = await meta.user_offer("15550001234")
    deliver(meta, one, meta.terminate_event(mcall, "COMPLETED"))  # the caller hung up at once
    await until(lambda: mcall.wacid in shared.over, 3, "the terminate marked over")
    deliver(meta, other, connect)  # the late connect reaches the least-loaded worker
    await until(lambda: shared.asked == [mcall.wacid], 3, "the directory asked")
    await until(lambda: settled(other, mcall.wacid), 3, "the call given up")
    assert meta_actions(meta, mcall.wacid) == []  # never pre-accepted, nor rejected
    assert incoming(other) == [] and incoming(one) == []
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("bridge")]
    assert [m for level, m in said if level >= logging.WARNING] == []  # Meta's race, no failure
    assert any("before its connect: not rung" in m for _, m in said), said


async def test_only_a_new_calls_connect_asks_and_a_live_calls_terminate_marks_nothing(
    two: tuple[list[CloudApiEngine], SharedOver], meta: Any
) -> None:
    """A call that rings asks once, at its connect; its own terminate, live where it lands,
    is that worker's (nothing marked); a repeat of it, no call live any more, is marked."""
    (one, _), shared = two
    mcall, connect = await meta.user_offer("15550004321")
    deliver(meta, one, connect)
    await until(lambda: incoming(one) == [mcall.wacid], 5, "the call ringing")
    assert meta_actions(meta, mcall.wacid) == ["pre_accept"]
    terminate = meta.terminate_event(mcall, "COMPLETED")
    deliver(meta, one, terminate)
    await until(lambda: settled(one, mcall.wacid), 3, "the call ended")
    assert shared.over == set()
    deliver(meta, one, terminate)  # Meta's repeat: told to every worker (its connect's again?)
    await until(lambda: mcall.wacid in shared.over, 3, "the repeat marked over")
    assert shared.asked == [mcall.wacid]


async def test_with_the_directory_away_each_worker_keeps_to_its_own_memory(
    two: tuple[list[CloudApiEngine], SharedOver], meta: Any
) -> None:
    """Redis away: the terminate is remembered where it landed (its late connect there does
    not ring, the directory not asked), a new call's connect is not held up (the directory
    cannot say: it rings), and Meta's repeat of the terminate once Redis is back is told to
    every worker."""
    (one, _), shared = two
    shared.away = True
    ended, ended_connect = await meta.user_offer("15550005555")
    live, connect = await meta.user_offer("15550006666")
    deliver(meta, one, meta.terminate_event(ended, "COMPLETED"))
    deliver(meta, one, ended_connect)
    deliver(meta, one, connect)  # after the others: taken in order, one at a time
    await until(lambda: incoming(one) == [live.wacid], 5, "the new call ringing")
    assert meta_actions(meta, live.wacid) == ["pre_accept"]
    assert meta_actions(meta, ended.wacid) == [] and settled(one, ended.wacid)
    assert shared.asked == [live.wacid]  # the ended one known over here: not asked
    shared.away = False
    deliver(meta, one, meta.terminate_event(ended, "COMPLETED"))  # Meta delivers it again
    await until(lambda: ended.wacid in shared.over, 3, "the repeat marked over")
