"""The call manager and the per-call runtime without HTTP: a fake ``Engine`` at the protocol
seam (``tests/fakes/engine.py``), fake attachments, no sockets. State machine, teardown order,
attachment lifecycle, engine media, and no task left behind."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES, tone
from bridge.calls import CallManager, CallRuntime, CallState, EndReason
from bridge.calls import endings as endings_module
from bridge.calls import hangup as hangup_module
from bridge.engines import EngineEvent, EngineEventKind, RemoteCall
from bridge.errors import CallStateError, EngineError, EngineUnavailable
from bridge.media import Role

from ..fakes.engine import FakeAttachment, FakeEngine, calls_for_tests
from ..support.calls import events_until_ended
from ..support.closes import cancel_mid_teardown
from ..support.spectrum import dominant_frequency
from ..support.waits import until


@pytest.fixture
async def setup() -> Any:
    engine = FakeEngine()
    calls = calls_for_tests(engine, max_calls=2)
    await calls.start()
    before = set(asyncio.all_tasks())
    yield calls.manager, engine
    await calls.close()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert leftover <= {asyncio.current_task()}, leftover


async def answered_call(manager: CallManager, engine: FakeEngine) -> CallRuntime:
    call = await manager.make("5521999999999")
    engine.events.put_nowait(EngineEvent(EngineEventKind.ANSWERED, call.engine_call_id))
    await until(lambda: call.state is CallState.ACTIVE, 2.0, "call.state is CallState.ACTIVE")
    assert call.state is CallState.ACTIVE
    return manager.runtime(call.id)


async def test_engine_media_opens_only_for_an_active_call_with_a_user(setup) -> None:
    manager, engine = setup
    call = await manager.make("5521999999999")
    runtime = manager.runtime(call.id)
    runtime.attach(FakeAttachment("pb", []))  # a user, but the call is not answered yet
    await asyncio.sleep(0.05)
    assert engine.channels == [] and runtime.media.pump is None
    engine.events.put_nowait(EngineEvent(EngineEventKind.ANSWERED, call.engine_call_id))
    await until(lambda: runtime.media.pump is not None, 2.0, "runtime.media.pump is not None")
    assert len(engine.channels) == 1 and runtime.media.pump is not None


async def test_audio_flows_through_the_pump(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    heard: list[np.ndarray] = []
    runtime.bus.add_downlink_tap(lambda frame: heard.append(frame.pcm))
    runtime.attach(FakeAttachment("pb", []))
    await until(lambda: runtime.media.pump is not None, 2.0, "runtime.media.pump is not None")
    signal = tone(440, FRAME_SAMPLES * 25, 16_000, 0.3).astype(np.int16)
    for i in range(25):
        runtime.bus.push_uplink(signal[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        await asyncio.sleep(0.005)
    await until(lambda: len(heard) >= 25, 2.0, "the 25 frames through the pump")
    await asyncio.sleep(0.05)  # and nothing more
    assert len(heard) == 25 and all(f.shape == (FRAME_SAMPLES,) for f in heard)
    assert abs(dominant_frequency(np.concatenate(heard), 16_000) - 440) < 10


async def test_teardown_closes_children_in_reverse_order(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    log = engine.closing
    first, second = FakeAttachment("first", log), FakeAttachment("second", log, kind="socket")
    runtime.attach(first)
    runtime.attach(second)
    assert runtime.call.transport == "websocket"
    await until(lambda: runtime.media.pump is not None, 2.0, "runtime.media.pump is not None")
    call = await manager.hangup(runtime.call_id)
    assert call.state is CallState.ENDED and call.end_reason is EndReason.HANGUP
    assert log == ["second", "first", "engine-media"]
    assert first.states == ["ended"] and second.states == ["ended"]
    assert runtime.closed and engine.hung_up == [call.engine_call_id]
    await runtime.close()  # idempotent
    assert log == ["second", "first", "engine-media"]
    with pytest.raises(CallStateError):
        runtime.attach(FakeAttachment("late", log))
    with pytest.raises(CallStateError):
        manager.runtime(call.id)
    assert manager.stats(call.id)["leg"] == {"engine": "fake", "open": False}


async def test_a_second_close_waits_for_the_first_which_runs_to_its_end(setup) -> None:
    """The runtime closed twice (a shutdown's close, its caller cancelled mid-way, then the
    call's end): one teardown, run to its end, and the second close waits for that end. It
    returned at once to a runtime half closed: the call ended with no final stats, its
    ``call.ended`` out before its attachments and engine media had closed."""
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    log = engine.closing
    runtime.attach(FakeAttachment("socket", log, kind="socket"))
    await until(lambda: runtime.media.pump is not None, 2.0, "the engine media open")
    await cancel_mid_teardown(runtime._tasks, runtime.close)
    call = await manager.hangup(runtime.call_id)
    assert call.final_stats is not None and call.final_stats["callID"] == call.id
    assert log == ["socket", "engine-media"] and runtime.bus.closed
    await runtime.close()  # nothing again
    assert log == ["socket", "engine-media"]


async def test_detached_attachments_are_not_closed_again(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    log: list[str] = []
    gone = FakeAttachment("gone", log, kind="socket")
    runtime.attach(gone)
    assert runtime.call.transport == "websocket"
    runtime.detach(gone)
    assert runtime.call.transport is None and runtime.attached("socket") == []
    await manager.hangup(runtime.call_id)
    assert "gone" not in log


async def test_lost_engine_media_fails_the_call(setup, monkeypatch) -> None:
    monkeypatch.setattr(endings_module, "MEDIA_LOST_GRACE", 0.01)
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    runtime.attach(FakeAttachment("pb", []))
    await until(lambda: engine.channels, 2.0, "engine.channels")
    engine.channels[0].drop()
    await until(lambda: not runtime.call.live, 4.0, "not runtime.call.live")
    assert runtime.call.end_reason is EndReason.FAILED
    assert engine.hung_up == [runtime.call.engine_call_id]


async def test_engine_media_that_cannot_be_opened_is_said_once_with_its_reason(
    setup, monkeypatch, caplog
) -> None:
    """The engine refuses to open a call's media: the call fails, said once at WARNING with
    the engine's reason. It was two WARNINGs, "cannot open engine media" and, after the grace,
    "engine media lost for good" (without the reason)."""
    monkeypatch.setattr(endings_module, "MEDIA_LOST_GRACE", 0.01)
    manager, engine = setup
    runtime = await answered_call(manager, engine)

    async def refused(engine_call_id: str) -> None:
        raise EngineError("the fake engine has no media for it")

    engine.open_media = refused  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="bridge"):
        runtime.attach(FakeAttachment("pb", []))
        await until(lambda: not runtime.call.live, 4.0, "the call failed")
    assert runtime.call.end_reason is EndReason.FAILED
    assert engine.hung_up == [runtime.call.engine_call_id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no media for it" in warnings[0], warnings


async def test_remote_hangup_and_inbound_at_capacity(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    engine.events.put_nowait(EngineEvent(EngineEventKind.ENDED, runtime.call.engine_call_id))
    await asyncio.sleep(0.05)
    assert runtime.call.end_reason is EndReason.REMOTE_HANGUP and runtime.closed
    await manager.make("5521000000001")
    await manager.make("5521000000002")  # max_calls=2: full
    engine.calls["in1"] = "ringing"
    engine.events.put_nowait(EngineEvent(EngineEventKind.INCOMING, "in1", "15550001111"))
    await asyncio.sleep(0.05)
    busy = [c for c in manager.registry._ended.values() if c.end_reason is EndReason.BUSY]  # type: ignore[attr-defined]
    assert len(busy) == 1 and busy[0].direction == "inbound"
    assert "in1" in engine.hung_up


@pytest.mark.parametrize("engine_says", ["unreachable", "refused", "nothing"])
async def test_a_hangup_the_engine_does_not_take_ends_here_and_is_retried_later(
    setup, caplog, monkeypatch, engine_says
) -> None:
    """The user wants out, whatever the engine answers: unreachable, an error of its own (a
    502 and a call left up before), or no answer at all (a request that hung)."""
    monkeypatch.setattr(hangup_module, "HANGUP_TIMEOUT", 0.05)
    manager, engine = setup
    runtime = await answered_call(manager, engine)

    async def not_taken(engine_call_id: str) -> None:
        if engine_says == "unreachable":
            raise EngineUnavailable("the fake engine is unreachable")
        if engine_says == "refused":
            raise EngineError("the fake engine refused the hang-up")
        await asyncio.Event().wait()

    engine.hangup = not_taken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="bridge.calls"):
        call = await manager.hangup(runtime.call_id)
    assert call.state is CallState.ENDED and call.end_reason is EndReason.HANGUP
    assert runtime.closed and engine.later == [call.engine_call_id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "retrying until the engine is back" in warnings[0], warnings


async def test_orphans_at_start_up_are_hung_up_but_ringing_inbound_calls_are_offered(
    caplog,
) -> None:
    engine = FakeEngine()
    engine.listed_at_start = [
        RemoteCall("act", "1@s.whatsapp.net", "active", "inbound"),
        RemoteCall("dial", "2@s.whatsapp.net", "ringing", "outbound"),
        RemoteCall("ring", "3@s.whatsapp.net", "ringing", "inbound"),
        RemoteCall("gone", "4@s.whatsapp.net", "ended", "outbound"),
    ]
    engine.calls.update({"act": "active", "dial": "ringing", "ring": "ringing"})
    calls = calls_for_tests(engine)
    manager = calls.manager
    with caplog.at_level(logging.WARNING, logger="bridge.calls"):
        await calls.start()
        engine.events.put_nowait(EngineEvent(EngineEventKind.INCOMING, "ring", "3@s.whatsapp.net"))
        await until(lambda: len(engine.hung_up) == 2, 2.0, "len(engine.hung_up) == 2")
    try:
        assert sorted(engine.hung_up) == ["act", "dial"]
        assert [c.engine_call_id for c in manager.live_calls()] == ["ring"]
        orphan_lines = [r.getMessage() for r in caplog.records if "orphaned" in r.getMessage()]
        assert len(orphan_lines) == 2 and all("hanging it up" in m for m in orphan_lines)
    finally:
        await calls.close()


async def test_orphans_are_kept_with_orphan_calls_keep(caplog) -> None:
    engine = FakeEngine()
    engine.listed_at_start = [RemoteCall("act", "1@s.whatsapp.net", "active", "outbound")]
    engine.calls["act"] = "active"
    calls = calls_for_tests(engine, orphan_calls="keep")
    with caplog.at_level(logging.WARNING, logger="bridge.calls"):
        await calls.start()
        await asyncio.sleep(0.05)
    await calls.close()
    assert engine.hung_up == [] and engine.calls == {"act": "active"}
    assert any("left up" in r.getMessage() for r in caplog.records)


async def test_the_runtime_runs_one_end_at_a_time_and_knows_it_is_ending(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    ran: list[str] = []
    release = asyncio.Event()

    async def end(name: str) -> None:
        ran.append(name)
        await release.wait()
        await manager.end(runtime.call, EndReason.MAX_DURATION)

    runtime.end_soon(lambda: end("first"), "limit")
    runtime.end_soon(lambda: end("second"), "limit")  # ignored while the first runs
    await asyncio.sleep(0.02)
    assert ran == ["first"] and runtime.ending and runtime.call.live
    release.set()
    await until(lambda: runtime.closed, 2.0, "runtime.closed")
    # The end task closed its own runtime: the teardown ran to the end (final stats kept).
    assert runtime.closed and not runtime.ending and ran == ["first"]
    assert runtime.call.end_reason is EndReason.MAX_DURATION
    assert runtime.call.final_stats is not None
    runtime.end_soon(lambda: end("late"), "limit")  # ended: nothing runs
    await asyncio.sleep(0.02)
    assert ran == ["first"]


async def test_a_time_limit_hangs_up_once(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    for _ in range(3):  # the watchdog sees the limit every quarter second until it is ended
        manager.endings.time_limit(runtime, EndReason.MAX_DURATION)
    await until(lambda: runtime.closed, 2.0, "runtime.closed")
    assert engine.hung_up == [runtime.call.engine_call_id]
    assert runtime.call.end_reason is EndReason.MAX_DURATION


async def test_mute_and_hold_have_one_copy_each(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    call = runtime.call
    published: list[str] = []
    manager.events.listen(lambda type_, c: published.append(type_))
    runtime.set_muted(True)
    runtime.set_muted(True)  # no change, no event (a second call.muted came each time)
    runtime.set_held(True)
    runtime.set_held(True)  # no change, no event
    assert runtime.bus.muted and runtime.bus.conference.held
    assert call.muted and call.held and call.controls is runtime
    assert (call.snapshot()["muted"], call.snapshot()["held"]) == (True, True)
    assert published == ["call.muted", "call.held"]
    runtime.set_muted(False)
    assert not call.muted and not runtime.bus.muted
    await manager.hangup(call.id)
    # The ended call keeps what they were, not the runtime.
    assert call.controls is not runtime and (call.muted, call.held) == (False, True)
    assert (call.snapshot()["muted"], call.snapshot()["held"]) == (False, True)


async def test_a_rebuilt_calls_controls_carry_into_its_runtime() -> None:
    from bridge.calls import Call

    from ..fakes.engine import calls_for_tests

    engine = FakeEngine()
    manager = calls_for_tests(engine).manager
    snap = (await manager.make("5521999999999")).snapshot()
    call = Call.from_snapshot({**snap, "callID": "other", "muted": True, "held": True}, "e9")
    assert call.muted and call.held
    runtime = CallRuntime(call, engine, manager.events, manager.metrics, lambda r, e: None)
    assert runtime.bus.muted and runtime.bus.conference.held and call.controls is runtime
    await runtime.close()
    await manager.close()


async def test_the_whatsapp_users_key_presses_come_in_one_way(setup) -> None:
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    seen: list[dict[str, Any]] = []
    manager.events.observe(lambda event, call: seen.append(dict(event.data)))
    heard: list[tuple[str, int]] = []
    original = runtime.dtmf.on_whatsapp

    def spy(digit: str, duration_ms: int) -> None:
        heard.append((digit, duration_ms))
        original(digit, duration_ms)

    runtime.dtmf.on_whatsapp = spy  # type: ignore[method-assign]
    data = {"digit": "5", "durationMs": 160}
    engine_call_id = runtime.call.engine_call_id
    engine.events.put_nowait(EngineEvent(EngineEventKind.DTMF, engine_call_id, data=data))
    await until(lambda: seen, 2.0, "seen")
    assert heard == [("5", 160)]
    assert seen == [{"digit": "5", "durationMs": 160, "source": "whatsapp"}]


class FakeLeg:
    """An engine's per-call leg (as the Cloud API's peer connection is): counts its closes."""

    def __init__(self, log: list[str]) -> None:
        self.closes = 0
        self._log = log

    async def close(self) -> None:
        self.closes += 1
        self._log.append("leg")


class FakeLegEngine(FakeEngine):
    """A ``LegEngine``: each call has a leg, made with the call, handed to its runtime."""

    def __init__(self) -> None:
        super().__init__()
        self.legs: dict[str, FakeLeg] = {}
        self.taken: list[str] = []

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        engine_id = await super().dial(phone, call_id=call_id)
        self.legs[engine_id] = FakeLeg(self.closing)
        return engine_id

    def take_leg(self, engine_call_id: str) -> FakeLeg | None:
        self.taken.append(engine_call_id)
        return self.legs.pop(engine_call_id, None)


async def test_the_runtime_owns_the_engines_leg_and_closes_it_once_after_the_pump() -> None:
    engine = FakeLegEngine()
    calls = calls_for_tests(engine)
    manager = calls.manager
    await calls.start()
    try:
        runtime = await answered_call(manager, engine)
        leg = runtime.media.leg
        assert isinstance(leg, FakeLeg) and engine.taken == [runtime.call.engine_call_id]
        assert engine.legs == {}  # the engine kept nothing of it
        runtime.attach(FakeAttachment("pb", engine.closing))
        await until(lambda: runtime.media.pump is not None, 2.0, "runtime.media.pump is not None")
        await manager.hangup(runtime.call_id)
        assert leg.closes == 1
        assert engine.closing == ["pb", "engine-media", "leg"]  # the leg after its channel
        await runtime.close()
        assert leg.closes == 1
    finally:
        await calls.close()


async def test_a_child_that_fails_to_close_leaves_the_engine_media_closed(setup, caplog) -> None:
    """A call's WebRTC sessions failed to close (a peer connection that raised as it closed):
    the runtime's teardown stopped there, and its tasks and the engine media's socket stayed
    open after the call had ended, and the hang-up was a 500. The other children close all the
    same, the failure said with its traceback, and the call ends."""
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    runtime.attach(FakeAttachment("pb", engine.closing))
    await until(lambda: runtime.media.pump is not None, 2.0, "runtime.media.pump is not None")
    close = runtime.participants.close

    async def broken() -> None:
        await close()
        raise RuntimeError("a peer connection raised as it closed")

    runtime.participants.close = broken  # type: ignore[method-assign]
    async with manager.events.subscribe() as sub:
        with caplog.at_level(logging.ERROR, logger="bridge.calls"):
            call = await manager.hangup(runtime.call_id)
        ended = await events_until_ended(sub, {call.id}, 2.0, 0.1)
    assert call.state is CallState.ENDED and runtime.closed
    assert engine.closing == ["pb", "engine-media"] and engine.channels[0].closed
    assert [e.type for e in ended if e.type == "call.ended"] == ["call.ended"]
    assert any("closing its WebRTC sessions" in r.getMessage() for r in caplog.records)


class _Leg:
    """A connected leg as ``Participants.adopt`` sees it (attach, role, state, close)."""

    role = Role.AGENT
    state = "connected"
    downlink_sink = None
    participant_id = "agent"

    def __init__(self, closing: asyncio.Event | None = None) -> None:
        self.attached_to: str | None = None
        self._closing = closing

    def attach(self, call_id: str, *_: Any) -> None:
        self.attached_to = call_id

    async def close(self) -> None:
        if self._closing is not None:
            await self._closing.wait()  # an unresponsive peer: its close takes a while


async def test_a_leg_rejoining_as_its_call_ends_is_not_left_on_the_ended_call(setup) -> None:
    """An agent's new leg replaces its old one (a dropped connection came back) while the
    call ends: the ended call's close has passed over it, so it must not be attached after."""
    manager, engine = setup
    runtime = await answered_call(manager, engine)
    closing = asyncio.Event()
    runtime.participants.sessions["agent"] = _Leg(closing)  # type: ignore[assignment]
    new = _Leg()
    rejoin = asyncio.ensure_future(runtime.participants.adopt(new))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # closing the old leg
    await manager.hangup(runtime.call_id)
    closing.set()
    with pytest.raises(CallStateError):
        await rejoin
    assert new.attached_to is None and "agent" not in runtime.participants.sessions
