"""Calls nobody here owns any more (``calls/recovery.py``), on the in-process fake engine: a
dead worker's calls end ``failed``/``worker_lost`` — or, when they can move, are adopted and
end so only if no browser comes back in time —, a fenced worker ends its own, orphans are
told apart from another worker's calls, and nothing is left running at close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.calls import Call, CallState, Direction, EndReason, Recovery
from bridge.calls import recovery as recovery_module
from bridge.calls.handover import MovedCall, adopt_call
from bridge.cluster import MemoryDirectory
from bridge.engines import EngineEvent, EngineEventKind, RemoteCall
from bridge.errors import AtCapacity, EngineUnavailable

from ..fakes.engine import Calls, FakeAttachment, FakeEngine, MovableEngine, calls_for_tests
from ..support.waits import until


@pytest.fixture
async def calls() -> AsyncIterator[tuple[Calls, FakeEngine, list[tuple[str, Any]]]]:
    engine = FakeEngine()
    calls = calls_for_tests(engine)
    published: list[tuple[str, Any]] = []
    calls.manager.events.listen(lambda type_, call: published.append((type_, call)))
    await calls.start()
    before = set(asyncio.all_tasks())
    yield calls, engine, published
    await calls.close()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover <= {asyncio.current_task()}, leftover


def lost_call(engine: FakeEngine, engine_call_id: str = "dead1") -> Call:
    """A live call of a dead worker, as the directory rebuilds it from its record."""
    engine.calls[engine_call_id] = "active"
    snapshot = Call(
        id=f"call-{engine_call_id}",
        peer="1@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="dead-worker",
        engine_call_id=engine_call_id,
        state=CallState.ACTIVE,
    ).snapshot()
    return Call.from_snapshot(snapshot, engine_call_id)


async def test_a_dead_workers_call_ends_failed_then_is_hung_up(calls) -> None:
    calls, engine, published = calls
    call = lost_call(engine)
    await calls.recovery.end_lost_call(call)
    assert call.state is CallState.ENDED and call.end_reason is EndReason.FAILED
    assert call.end_detail == "worker_lost" and call.snapshot()["endDetail"] == "worker_lost"
    assert published == [("call.ended", call)]  # the event first, the engine after
    await until(lambda: engine.hung_up == ["dead1"])
    assert calls.manager.registry.get(call.id) is None  # never a call of this process
    await calls.recovery.end_lost_call(call)  # ended: nothing more
    assert len(published) == 1


async def test_a_call_of_this_process_is_not_taken_for_lost(calls) -> None:
    calls, engine, published = calls
    ours = await calls.manager.make("5521999999999")
    rebuilt = Call.from_snapshot(ours.snapshot(), ours.engine_call_id)
    await calls.recovery.end_lost_call(rebuilt)
    assert ours.live and rebuilt.live and engine.hung_up == []
    assert [t for t, _ in published] == ["call.created"]


async def test_a_fenced_worker_ends_its_own_calls_as_lost(calls) -> None:
    calls, engine, published = calls
    call = await calls.manager.make("5521999999999")
    engine.events.put_nowait(EngineEvent(EngineEventKind.ANSWERED, call.engine_call_id))
    await until(lambda: call.state is CallState.ACTIVE)
    runtime = calls.manager.runtime(call.id)
    await calls.recovery.end_local_calls_as_lost()
    assert call.end_reason is EndReason.FAILED and call.end_detail == "worker_lost"
    assert runtime.closed and engine.hung_up == [call.engine_call_id]
    assert published[-1] == ("call.ended", call)


async def test_a_fenced_worker_lets_go_of_a_call_a_survivor_adopted() -> None:
    """Taken for dead while cut off, this worker comes back: a call the survivor adopted
    meanwhile (the directory names the survivor) is let go of here without hanging it up —
    that would end the survivor's call — and without an event; the others end worker_lost."""
    engine = FakeEngine()
    calls = calls_for_tests(engine)
    published: list[tuple[str, Any]] = []
    calls.manager.events.listen(lambda type_, call: published.append((type_, call)))
    await calls.start()
    try:
        adopted = await calls.manager.make("5521999999999")
        ours = await calls.manager.make("5521999999998")
        for call in (adopted, ours):
            engine.events.put_nowait(EngineEvent(EngineEventKind.ANSWERED, call.engine_call_id))
        await until(lambda: adopted.state is ours.state is CallState.ACTIVE)

        async def known_elsewhere(engine_call_id: str) -> bool:
            return engine_call_id == adopted.engine_call_id

        recovery = Recovery(calls.manager, known_elsewhere=known_elsewhere)
        published.clear()
        await recovery.end_local_calls_as_lost()
        assert engine.hung_up == [ours.engine_call_id]
        assert ours.end_reason is EndReason.FAILED and ours.end_detail == "worker_lost"
        assert calls.manager.find_runtime(adopted.id) is None  # let go of, not ended here
        assert [(t, c.id) for t, c in published] == [("call.ended", ours.id)]
        await recovery.close()
    finally:
        await calls.close()


async def test_orphans_are_told_apart_from_another_workers_calls(monkeypatch, caplog) -> None:
    monkeypatch.setattr(recovery_module, "ORPHAN_RECHECK", 0.01)
    engine = FakeEngine()
    engine.listed_at_start = [
        RemoteCall("elsewhere", "1@s.whatsapp.net", "active", "outbound"),
        RemoteCall("orphan", "2@s.whatsapp.net", "active", "inbound"),
    ]
    engine.calls.update({"elsewhere": "active", "orphan": "active"})
    asked: list[str] = []

    async def known_elsewhere(engine_call_id: str) -> bool:
        asked.append(engine_call_id)
        return engine_call_id == "elsewhere"

    manager = calls_for_tests(engine).manager
    recovery = Recovery(manager, known_elsewhere=known_elsewhere)
    with caplog.at_level(logging.WARNING, logger="bridge.calls.recovery"):
        await recovery.sweep_orphans()
    assert engine.hung_up == ["orphan"] and asked == ["elsewhere", "orphan"]
    assert [r.getMessage() for r in caplog.records if "orphaned" in r.getMessage()] == [
        "engine fake has an orphaned active inbound call orphan with 2@s.whatsapp.net (no live "
        "call of this bridge owns it); hanging it up (BRIDGE_ORPHAN_CALLS=hangup)"
    ]
    await recovery.close()
    await manager.close()


async def test_a_call_handed_over_here_while_the_sweep_asks_the_directory_is_no_orphan(
    monkeypatch,
) -> None:
    """A draining worker hands a call here while the start-up sweep asks the directory about
    it: the sweep found no call of its own, then read the record the adoption had just
    claimed (this worker its owner, so not "elsewhere") and hung up the call it now carried
    (one of 20 in a rolling restart at load 8-13). What the registry holds is read after the
    directory: a call taken in meanwhile is ours."""
    monkeypatch.setattr(recovery_module, "ORPHAN_RECHECK", 0.01)
    engine = FakeEngine()
    engine.listed_at_start = [RemoteCall("moving", "1@s.whatsapp.net", "active", "outbound")]
    engine.calls["moving"] = "active"
    manager = calls_for_tests(engine).manager
    await manager.start()
    snapshot = Call(
        id="call-moving",
        peer="1@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="draining-worker",
        engine_call_id="moving",
        state=CallState.ACTIVE,
    ).snapshot()
    moved = MovedCall(snapshot=snapshot, engine_call_id="moving", reason="drain")

    async def known_elsewhere(engine_call_id: str) -> bool:
        # The handover lands while the directory is asked: it claims the call for this
        # worker, so the record the sweep reads names this worker, not another.
        await adopt_call(manager, moved, claim=MemoryDirectory("here", "", 10, list))
        return False

    recovery = Recovery(manager, known_elsewhere=known_elsewhere)
    try:
        await recovery.sweep_orphans()
        assert engine.hung_up == [] and engine.later == []
        assert manager.get("call-moving").live
    finally:
        await recovery.close()
        await manager.close()


async def test_an_orphan_the_engine_cannot_hang_up_now_is_retried_later() -> None:
    engine = FakeEngine()
    engine.listed_at_start = [RemoteCall("orphan", "2@s.whatsapp.net", "active", "outbound")]

    async def unreachable(engine_call_id: str) -> None:
        raise EngineUnavailable("the fake engine is unreachable")

    engine.hangup = unreachable  # type: ignore[method-assign]
    manager = calls_for_tests(engine).manager
    await Recovery(manager).sweep_orphans()
    assert engine.later == ["orphan"]
    await manager.close()


async def test_close_stops_a_lost_calls_hang_up_still_waiting(calls) -> None:
    calls, engine, _ = calls
    started = asyncio.Event()

    async def stuck(engine_call_id: str) -> None:
        started.set()
        await asyncio.sleep(60)

    engine.hangup = stuck  # type: ignore[method-assign]
    await calls.recovery.end_lost_call(lost_call(engine))
    await asyncio.wait_for(started.wait(), 1)
    await calls.recovery.close()  # the fixture checks nothing is left running


def adopting(manager: Any, adopted: list[MovedCall], resume_agent: Any = None) -> Any:
    """``Handover.adopt`` without a directory: the call is carried on here."""

    async def adopt(moved: MovedCall, carried: Any) -> Call:
        adopted.append(moved)
        runtime = await adopt_call(
            manager,
            moved,
            claim=MemoryDirectory("here", "", 10, list),  # one process: always its own
            resume_agent=resume_agent,
            carried=carried,
        )
        return runtime.call

    return adopt


async def adoption(
    engine: FakeEngine, offer_timeout: float = 60.0, resume_agent: Any = None
) -> tuple:
    manager = calls_for_tests(engine).manager
    adopted: list[MovedCall] = []
    adopt = adopting(manager, adopted, resume_agent)
    recovery = Recovery(manager, adopt=adopt, offer_timeout=offer_timeout)
    published: list[tuple[str, Any, dict]] = []
    manager.events.observe(lambda e, call: published.append((e.type, call.id, e.data)))
    await manager.start()
    return manager, recovery, adopted, published


async def test_a_dead_workers_movable_call_is_adopted_and_announced_as_moved() -> None:
    engine = MovableEngine()
    manager, recovery, adopted, published = await adoption(engine)
    try:
        lost = lost_call(engine)
        await recovery.lost_call(lost)
        assert [m.reason for m in adopted] == ["crash"] and adopted[0].call_id == lost.id
        ours = manager.get(lost.id)
        assert ours.live and ours.owner == manager.owner
        moved = [d for t, _, d in published if t == "call.moved"]
        assert moved == [{"from": "dead-worker", "to": manager.owner, "reason": "crash"}]
        assert "call.created" not in [t for t, _, _ in published]
        assert engine.channels and engine.hung_up == []  # its engine media is open here
        assert manager.metrics.handovers.labels("crash", "moved")._value.get() == 1
    finally:
        await recovery.close()
        await manager.close()


async def test_an_adopted_call_gets_what_its_record_kept_and_unreadable_parts_are_left_out(
    caplog,
) -> None:
    engine = MovableEngine()
    manager, recovery, adopted, _ = await adoption(engine)
    kept = {
        "recording": {"origin": "calls/x", "segment": 1},
        "forks": [{"url": "ws://127.0.0.1:9/m", "streamId": "st_1"}],
        "agents": [{"provider": "openai-realtime", "url": "ws://h/v1", "agentID": "ag_1"}],
    }
    try:
        first = lost_call(engine)
        await recovery.lost_call(first, kept)
        assert adopted[0].recording == kept["recording"]
        assert (adopted[0].forks, adopted[0].agents) == (kept["forks"], kept["agents"])
        # A record whose attachments are not what this version reads: the call alone.
        second = lost_call(engine, "dead2")
        await recovery.lost_call(second, {"forks": "st_1"})
        assert adopted[1].call_id == second.id and adopted[1].forks == []
        assert "attachments are unreadable" in caplog.text
    finally:
        await recovery.close()
        await manager.close()


async def test_an_adopted_calls_browser_is_told_before_its_agents_reopen() -> None:
    """``call.moved`` goes out once the engine media is open here, not after the agents'
    models took their sessions (seconds, or the connect timeout for a model that is away):
    here the agent's re-opening waits for the browser to have been told."""
    engine = MovableEngine()
    told = asyncio.Event()
    resumed: list[str] = []

    async def resume_agent(runtime: Any, agent: dict[str, Any]) -> None:
        await asyncio.wait_for(told.wait(), 5)  # after the move was announced, or never
        resumed.append(agent["agentID"])

    manager, recovery, _, published = await adoption(engine, resume_agent=resume_agent)
    manager.events.observe(lambda e, call: told.set() if e.type == "call.moved" else None)
    try:
        lost = lost_call(engine)
        agents = [{"provider": "openai-realtime", "url": "ws://h/v1", "agentID": "ag_1"}]
        await recovery.lost_call(lost, {"agents": agents})
        await until(lambda: resumed == ["ag_1"], 5, "the agent re-opened")
        assert [t for t, _, _ in published].count("call.moved") == 1
        assert manager.metrics.handovers.labels("crash", "moved")._value.get() == 1
    finally:
        await recovery.close()
        await manager.close()


async def test_an_adoption_does_not_wait_for_a_model_that_is_away() -> None:
    """The reaper adopts a dead worker's calls a few at a time: an adoption returns once the
    call's media is open here, and its agents re-open as the call's own task — a model that
    does not answer holds no place the dead worker's other calls wait for — cancelled with
    the call."""
    engine = MovableEngine()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def resume_agent(runtime: Any, agent: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # the model never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise

    manager, recovery, _, published = await adoption(engine, resume_agent=resume_agent)
    try:
        lost = lost_call(engine)
        agents = [{"provider": "gemini-live", "url": "ws://h/v1", "agentID": "ag_1"}]
        await asyncio.wait_for(recovery.lost_call(lost, {"agents": agents}), 5)
        await asyncio.wait_for(started.wait(), 5)
        assert [t for t, _, _ in published].count("call.moved") == 1
        await manager.runtime(lost.id).close()
        await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        await recovery.close()
        await manager.close()


async def test_an_adopted_call_no_browser_came_back_to_ends_as_worker_lost() -> None:
    engine = MovableEngine()
    manager, recovery, _, published = await adoption(engine, offer_timeout=0.05)
    try:
        lost = lost_call(engine)
        await recovery.lost_call(lost)
        ours = manager.get(lost.id)
        # call.ended is published once the call's runtime has closed, after it stops being
        # live (manager.end): wait for the event, not for the flag.
        await until(lambda: any(t == "call.ended" for t, _, _ in published))
        assert ours.end_reason is EndReason.FAILED and ours.end_detail == "worker_lost"
        assert engine.hung_up == ["dead1"]
        assert [t for t, _, _ in published][-1] == "call.ended"
        assert manager.metrics.handovers.labels("crash", "no_browser")._value.get() == 1
    finally:
        await recovery.close()
        await manager.close()


async def test_an_adopted_call_something_came_back_to_stays() -> None:
    engine = MovableEngine()
    manager, recovery, _, _ = await adoption(engine, offer_timeout=0.05)
    try:
        lost = lost_call(engine)
        await recovery.lost_call(lost)
        runtime = manager.runtime(lost.id)
        runtime.attach(FakeAttachment("fork:1", [], kind="fork"))
        await asyncio.sleep(0.2)
        assert runtime.call.live and engine.hung_up == []
    finally:
        await recovery.close()
        await manager.close()


@pytest.mark.parametrize("why", ["cannot_move", "no_adopt", "shutting_down", "no_room"])
async def test_a_lost_call_that_cannot_be_adopted_ends_as_before(why: str) -> None:
    engine = FakeEngine() if why == "cannot_move" else MovableEngine()
    manager, recovery, adopted, published = await adoption(engine)
    if why == "no_adopt":
        recovery = Recovery(manager)
    if why == "shutting_down":
        manager.shutting_down = True
    if why == "no_room":

        async def full(moved: MovedCall, carried: Any) -> Call:
            raise AtCapacity("full")

        recovery = Recovery(manager, adopt=full)
    try:
        call = lost_call(engine)
        await recovery.lost_call(call)
        assert call.end_reason is EndReason.FAILED and call.end_detail == "worker_lost"
        assert manager.registry.get(call.id) is None and adopted == []
        assert [t for t, _, _ in published] == ["call.ended"]
        await until(lambda: engine.hung_up == ["dead1"])
    finally:
        await recovery.close()
        manager.shutting_down = False
        await manager.close()


async def test_an_attachment_export_that_raises_costs_the_record_its_attachments_only(
    caplog,
) -> None:
    """The directory's record of a live call carries its attachments (for a survivor); an
    export that raises leaves them out — the record is still made, with a WARNING once for the
    call, never an exception into the writer or the heartbeat's catch-up."""
    import logging

    from bridge.calls import Call, CallState, Direction
    from bridge.cluster.redis import RedisDirectory

    async def nothing() -> None:
        return None

    directory = RedisDirectory(
        "redis://127.0.0.1:1",  # never connected: records are built, not written, here
        worker_id="w1",
        internal_url="http://127.0.0.1:1",
        heartbeat_ttl=2.0,
        ended_ttl=60,
        backlog=100,
        max_calls=10,
        local_calls=list,
        end_lost_call=lambda call, attachments: nothing(),  # type: ignore[arg-type,return-value]
        end_local_calls=nothing,
    )

    def broken(call: Call) -> dict[str, object]:
        raise ValueError("recording outside the data directory")

    directory.attachments = broken
    call = Call(
        id="c1",
        peer="1@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="w1",
        engine_call_id="e1",
        state=CallState.ACTIVE,
    )
    with caplog.at_level(logging.WARNING, logger="bridge.cluster.redis_writes"):
        first = directory._records.of(call)
        again = directory._records.of(call)
    assert first.attachments is None and again.attachments is None
    assert first.live and first.owner == "w1"
    warned = [r for r in caplog.records if "could not be exported" in r.getMessage()]
    assert len(warned) == 1 and "ValueError" in warned[0].getMessage()
    directory.attachments = lambda c: {"forks": []}
    assert directory._records.of(call).attachments == {"forks": []}
    await directory._redis.aclose()


@pytest.mark.parametrize("agent_id", [None, "", 7])
async def test_a_moved_agent_without_its_id_is_a_bad_request_not_a_crash(agent_id: Any) -> None:
    """A handover body whose agent lacks a usable ``agentID`` (another version, or a bad
    sender): the agent is refused as a bad request, which the adoption logs and goes on from
    (a ``KeyError`` escaped before: a 500 on the internal API)."""
    from bridge.agents.service import AgentService
    from bridge.config import settings_for_tests
    from bridge.errors import BadRequest

    moved: dict[str, Any] = {"provider": "openai-realtime", "url": "ws://h/v1"}
    if agent_id is not None:
        moved["agentID"] = agent_id
    service = AgentService(settings_for_tests().agents, (), None)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="agentID"):
        await service.resume(None, moved)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream_id", [None, "", 7])
async def test_a_moved_fork_without_its_stream_id_is_a_bad_request_not_a_crash(
    stream_id: Any,
) -> None:
    """The same for a media fork: one without a usable ``streamId`` is refused as a bad
    request, which the adoption logs at WARNING and goes on from (a ``KeyError`` escaped
    before: a task's ERROR traceback in a crash adoption, a 500 on the internal API in a
    handover, which waits for its forks)."""
    from bridge.attachments import ForkService
    from bridge.errors import BadRequest

    moved: dict[str, Any] = {"url": "ws://127.0.0.1:9/m", "channel": "both"}
    if stream_id is not None:
        moved["streamId"] = stream_id
    with pytest.raises(BadRequest, match="streamId"):
        await ForkService(("127.0.0.1",), None).resume(None, moved)  # type: ignore[arg-type]


async def test_a_ringing_call_moved_here_rings_no_longer_than_its_ring_timeout() -> None:
    """A ringing call handed over (or adopted) keeps the time it has rung already: past
    ``BRIDGE_RING_TIMEOUT`` since it was created it is missed here too. Its new worker
    counted from the move, so a moved call could ring for twice the timeout (its answer's
    time limit was counted from the real answer already)."""
    import time

    from bridge.calls.watchdog import check_limits

    engine = MovableEngine()
    engine.calls["ringing"] = "ringing"
    manager = calls_for_tests(engine).manager
    await manager.start()
    timeout = manager.settings.ring_timeout
    snapshot = Call(
        id="call-ringing",
        peer="1@s.whatsapp.net",
        direction=Direction.INBOUND,
        owner="draining-worker",
        engine_call_id="ringing",
        state=CallState.RINGING,
        created_at=time.time() - timeout - 5.0,
    ).snapshot()
    moved = MovedCall(snapshot=snapshot, engine_call_id="ringing", reason="drain")
    try:
        runtime = await adopt_call(manager, moved, claim=MemoryDirectory("here", "", 10, list))
        ended: list[EndReason] = []
        check_limits(
            manager.settings,
            [runtime],
            lambda _runtime, reason: ended.append(reason),
            time.monotonic(),
            set(),
        )
        assert ended == [EndReason.MISSED]
    finally:
        await manager.close()
