"""Who takes a new inbound call (``calls/inbound.py``), on the in-process fake engine: rung
here once, left to the worker that claimed it, placed on another worker, declined busy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.calls import CallManager, CallState, EndReason, InboundCalls
from bridge.engines import EngineEvent, EngineEventKind
from bridge.errors import AtCapacity

from ..fakes.engine import Calls, FakeEngine, calls_for_tests
from ..support.waits import until


@pytest.fixture
async def calls() -> AsyncIterator[tuple[Calls, FakeEngine, list[str]]]:
    engine = FakeEngine()
    calls = calls_for_tests(engine, max_calls=1)
    published: list[str] = []
    calls.manager.events.listen(lambda type_, call: published.append(type_))
    await calls.start()
    yield calls, engine, published
    await calls.close()


def ring(engine: FakeEngine, engine_call_id: str, peer: str = "15550001111") -> None:
    engine.calls[engine_call_id] = "ringing"
    engine.events.put_nowait(EngineEvent(EngineEventKind.INCOMING, engine_call_id, peer))


async def test_a_new_inbound_call_rings_here_once(calls) -> None:
    calls, engine, published = calls
    ring(engine, "in1")
    ring(engine, "in1")  # a webhook and a poll can both report it
    await until(lambda: calls.manager.live_calls())
    await asyncio.sleep(0.05)
    [call] = calls.manager.live_calls()
    assert call.state is CallState.RINGING and call.engine_call_id == "in1"
    assert call.peer == "15550001111" and call.owner == calls.manager.owner
    assert published == ["call.created", "call.ringing"]
    assert calls.manager.runtime(call.id).call is call


async def test_at_capacity_the_call_is_declined_and_kept_as_busy(calls) -> None:
    calls, engine, published = calls
    await calls.manager.make("5521999999999")  # max_calls=1: full
    published.clear()
    ring(engine, "in2")
    await until(lambda: "call.ended" in published)
    ended = calls.manager.registry._ended.values()  # type: ignore[attr-defined]
    [busy] = [c for c in ended if c.engine_call_id == "in2"]
    assert busy.end_reason is EndReason.BUSY and busy.direction == "inbound"
    assert engine.hung_up == ["in2"] and published == ["call.ended"]
    assert calls.manager.registry.get(busy.id) is busy  # operators see it


async def test_adopt_takes_a_placed_call_and_refuses_at_capacity(calls) -> None:
    calls, engine, _ = calls
    engine.calls["in3"] = "ringing"
    call = await calls.inbound.adopt("in3", "15550002222")
    assert call.state is CallState.RINGING and calls.manager.live_calls() == [call]
    assert await calls.inbound.adopt("in3", "15550002222") is call  # known: the same call
    engine.calls["in4"] = "ringing"
    with pytest.raises(AtCapacity):
        await calls.inbound.adopt("in4", "15550003333")
    assert "in4" not in engine.hung_up  # the placing worker rings it itself


async def test_a_call_another_worker_claimed_or_took_is_not_created_here() -> None:
    engine = FakeEngine()
    manager = calls_for_tests(engine).manager
    claimed: list[str] = []
    placed: list[tuple[str, str]] = []

    async def claim(engine_call_id: str) -> bool:
        claimed.append(engine_call_id)
        return engine_call_id != "theirs"

    async def place(engine_call_id: str, peer: str, number_id: str) -> bool:
        placed.append((engine_call_id, peer))
        return engine_call_id == "placed"

    InboundCalls(manager, claim=claim, place=place)  # replaces the default policy
    await manager.start()
    try:
        for engine_call_id in ("theirs", "placed", "ours"):
            ring(engine, engine_call_id, "15550004444")
        await until(lambda: manager.live_calls())
        assert [c.engine_call_id for c in manager.live_calls()] == ["ours"]
        assert claimed == ["theirs", "placed", "ours"]
        assert placed == [("placed", "15550004444"), ("ours", "15550004444")]
    finally:
        await manager.close()


async def test_a_call_being_placed_holds_up_no_other_calls_events_and_keeps_its_own() -> None:
    """A new call offered to a worker that does not answer (its place takes seconds): another
    call's answer is taken meanwhile, and the new call's own end, reported while it was being
    placed, comes after its ringing here (before: every event waited behind the placing)."""
    engine = FakeEngine()
    manager = calls_for_tests(engine).manager
    release = asyncio.Event()

    async def place(engine_call_id: str, peer: str, number_id: str) -> bool:
        await release.wait()  # the other worker does not answer (yet)
        return False  # ... nor take it: it rings here

    published: list[tuple[str, str]] = []
    manager.events.listen(lambda type_, call: published.append((type_, call.engine_call_id)))
    InboundCalls(manager, place=place)
    await manager.start()
    try:
        dialled = await manager.make("5521999990000")
        ring(engine, "new")
        await asyncio.sleep(0.02)  # being placed
        engine.events.put_nowait(EngineEvent(EngineEventKind.ANSWERED, dialled.engine_call_id))
        await until(lambda: dialled.state is CallState.ACTIVE, 1.0, "the other call answered")
        engine.events.put_nowait(EngineEvent(EngineEventKind.ENDED, "new"))  # the caller gave up
        await asyncio.sleep(0.02)
        assert [t for t, e in published if e == "new"] == []
        release.set()
        await until(lambda: ("call.ended", "new") in published, 1.0, "the new call's end")
        assert [t for t, e in published if e == "new"] == [
            "call.created",
            "call.ringing",
            "call.ended",
        ]
        [ended] = [c for c in manager.registry._ended.values() if c.engine_call_id == "new"]  # type: ignore[attr-defined]
        assert ended.end_reason is EndReason.REMOTE_CANCELED
    finally:
        release.set()
        await manager.close()


async def test_while_shutting_down_an_inbound_call_is_declined_without_a_record(calls) -> None:
    calls, engine, published = calls
    calls.manager.stop_accepting()
    engine.calls["in5"] = "ringing"
    call = await calls.inbound.ring("in5", "15550005555")
    assert engine.hung_up == ["in5"] and call.state is CallState.RINGING
    assert calls.manager.registry.get(call.id) is None and published == []


async def test_without_an_inbound_policy_the_manager_takes_no_inbound_call(caplog) -> None:
    engine = FakeEngine()
    manager = CallManager(*_parts(engine))
    await manager.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.calls.manager"):
            ring(engine, "in6")
            await asyncio.sleep(0.05)
        assert manager.live_calls() == []
        assert any("no inbound policy" in r.getMessage() for r in caplog.records)
    finally:
        await manager.close()


def _parts(engine: FakeEngine) -> tuple[Any, ...]:
    bare = calls_for_tests(engine).manager  # its settings, metrics and session factory
    return bare.settings, engine, bare.metrics, bare.sessions
