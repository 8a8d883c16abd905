"""A moved call's state on the wire between workers (``calls/handover.py``)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.calls import Call, CallState, Direction
from bridge.calls.handover import MovedCall
from bridge.calls.model import Controls
from bridge.cluster.handover import Handover
from bridge.errors import BadRequest

from ..fakes.engine import FakeEngine, MovableEngine, calls_for_tests


def call() -> Call:
    c = Call(
        id="c1",
        peer="5521999999999@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="old-worker",
        engine_call_id="E1",
        state=CallState.CALLING,
        metadata={"ticket": 42},
        controls=Controls(muted=True, held=True),
    )
    c.transition(CallState.ACTIVE)
    return c


def test_a_moved_call_round_trips_through_json_with_its_attachments() -> None:
    moved = MovedCall(
        snapshot=call().snapshot(),
        engine_call_id="E1",
        reason="drain",
        status_callback="https://app.example/hook",
        recording={"origin": "calls/c1", "segment": 1},
        forks=[{"url": "ws://127.0.0.1:9/m", "streamId": "st_1", "channel": "both"}],
        agents=[{"provider": "gemini-live", "url": "ws://127.0.0.1:9/g", "agentID": "ag_1"}],
        music="as_0123abcd",
        playbacks=[
            {
                "playbackId": "pb_1",
                "assetId": "as_4567",
                "target": "peer",
                "loop": False,
                "framesPlayed": 42,
            }
        ],
    )
    back = MovedCall.from_json(json.loads(json.dumps(moved.to_json())))
    assert back == moved
    assert back.call_id == "c1" and back.previous_owner == "old-worker"
    rebuilt = Call.from_snapshot(back.snapshot, back.engine_call_id, back.status_callback)
    assert rebuilt.state is CallState.ACTIVE and rebuilt.muted and rebuilt.held
    assert rebuilt.metadata == {"ticket": 42} and rebuilt.answered_at is not None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"call": "c1", "engineCallID": "E1"},
        {"call": {"callID": "c1"}, "engineCallID": "E1"},  # not a whole snapshot
        {"call": call().snapshot()},  # no engine call id
        {"call": call().snapshot(), "engineCallID": "E1", "forks": [1]},
        {"call": call().snapshot(), "engineCallID": "E1", "agents": "ag_1"},
        {"call": call().snapshot(), "engineCallID": "E1", "music": {"assetId": "as_1"}},
        {"call": call().snapshot(), "engineCallID": "E1", "playbacks": "pb_1"},
    ],
)
def test_a_malformed_moved_call_is_a_bad_request(body: dict) -> None:
    with pytest.raises(BadRequest):
        MovedCall.from_json(body)


def test_a_billed_call_rebuilt_from_its_snapshot_is_still_billed() -> None:
    """A business-initiated Cloud API call handed to another worker (or ended by a survivor for
    a dead one) keeps its pulse length: before, the rebuilt call had none, and its end carried
    no billablePulses (nor counted in the pulse metrics)."""
    billed = call()
    billed.pulse_s = 6
    snap = json.loads(json.dumps(billed.snapshot()))
    assert snap["pulseSeconds"] == 6 and snap["billablePulses"] is None  # live: not yet
    rebuilt = Call.from_snapshot(snap, "E1")
    assert rebuilt.pulse_s == 6
    assert rebuilt.answered_at is not None
    rebuilt.answered_at -= 13.0  # answered 13 s before its end: 6 + 6 + 1 → three pulses
    rebuilt.transition(CallState.ENDED)
    assert rebuilt.snapshot()["billablePulses"] == 3
    assert "pulseSeconds" not in call().snapshot()  # a call nobody bills
    for bad in ("6", True, 0, -6, 6.5):
        assert Call.from_snapshot({**snap, "pulseSeconds": bad}, "E1").pulse_s is None


def moved_with_a_fork() -> MovedCall:
    """The call drained from another worker with one media fork to open again here."""
    return MovedCall(
        snapshot={**call().snapshot(), "muted": False, "held": False},
        engine_call_id="E1",
        reason="drain",
        forks=[{"url": "ws://127.0.0.1:9/m", "streamId": "st_1", "channel": "both"}],
    )


class _Directory:
    """What ``Handover.adopt`` asks of the directory: the claim, always granted."""

    async def take_over(self, call: Call, previous: str, token: str = "") -> None:
        await asyncio.sleep(0)

    async def give_back(self, call: Call, previous: str, token: str) -> bool:
        return True


class _Forks:
    """A fork server that takes a few loop turns to open each stream again."""

    def __init__(self) -> None:
        self.resumed: list[str] = []

    async def resume(self, host: object, moved: dict) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.resumed.append(moved["streamId"])


async def test_a_handed_over_call_has_its_forks_open_again_before_the_adoption_answers() -> None:
    """Make-before-break for the forks at a drain: ``POST /call/handover`` answers once the
    new owner has the call's forks open again, since the old worker lets go of its own on that
    answer. ``Handover.adopt`` took every adoption for a crash's (forks re-opened in the
    background after it answered), so a drained call's fork lost audio in between."""
    engine = FakeEngine()
    engine.calls["E1"] = "active"
    manager = calls_for_tests(engine).manager
    forks = _Forks()
    handover = Handover(manager, _Directory(), manager.metrics, send=None, forks=forks)  # type: ignore[arg-type]
    await manager.start()
    try:
        moved = moved_with_a_fork()
        adopted = await handover.adopt(moved)
        assert forks.resumed == ["st_1"]  # open before the answer, not after it
        assert adopted.live and adopted.owner == manager.owner
    finally:
        await manager.close()


async def test_a_handover_answers_in_time_when_a_fork_is_slow_to_open_again(monkeypatch) -> None:
    """The old worker's ``POST /call/handover`` gives up past its timeout (and then tries
    another worker): the new owner waits for the forks at most ``REOPEN_WAIT``, then answers
    while a slow one goes on opening as the call's own task, cancelled with the call."""
    from bridge.calls import handover as handover_module

    monkeypatch.setattr(handover_module, "REOPEN_WAIT", 0.05)
    engine = FakeEngine()
    engine.calls["E1"] = "active"
    manager = calls_for_tests(engine).manager
    cancelled = asyncio.Event()

    class SlowForks:
        async def resume(self, host: object, moved: dict) -> None:
            try:
                await asyncio.Event().wait()  # the app's server never answers
            except asyncio.CancelledError:
                cancelled.set()
                raise

    handover = Handover(manager, _Directory(), manager.metrics, send=None, forks=SlowForks())  # type: ignore[arg-type]
    await manager.start()
    try:
        moved = moved_with_a_fork()
        adopted = await asyncio.wait_for(handover.adopt(moved), 5)
        assert adopted.live and not cancelled.is_set()
        await manager.runtime(adopted.id).close()
        await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        await manager.close()


class _TakenBeforeItsAnswer:
    """The directory as a draining worker sees it: two workers with room; the call's record
    names whichever worker last took it over (``owner``)."""

    def __init__(self, worker_id: str) -> None:
        from bridge.cluster import WorkerInfo

        self.worker_id = worker_id
        self.owner = worker_id
        self._workers = [
            WorkerInfo("t1", "http://127.0.0.1:9", 0, 10),
            WorkerInfo("t2", "http://127.0.0.1:9", 1, 10),
        ]

    async def workers(self) -> list:
        return self._workers

    async def flush(self, timeout: float) -> None:
        return None

    async def offer_move(self, call_id: str, token: str) -> None:
        return None

    async def settle_move(self, call_id: str, token: str) -> str:
        return self.owner


async def test_a_worker_that_took_the_call_but_whose_answer_was_lost_is_not_followed() -> None:
    """A draining worker's ``POST /call/handover`` timed out, but the new owner had taken the
    call over (its adoption outlasted the request: a slow disk, a slow Redis). Sending the call
    to the next worker as well made two carriers of one call (two engine sockets fighting over
    it); the directory names who took it, so the move is done."""
    engine = MovableEngine()  # a call another worker can carry on
    engine.calls["E1"] = "active"
    manager = calls_for_tests(engine).manager
    await manager.start()
    try:
        moving = call()
        moving.owner = manager.owner
        manager.adopt_moved(moving)
        directory = _TakenBeforeItsAnswer(manager.owner)
        sent: list[str] = []

        async def send(worker, moved) -> tuple[int, str]:  # type: ignore[no-untyped-def]
            sent.append(worker.id)
            directory.owner = worker.id  # its take-over landed; its answer never came
            raise TimeoutError

        handover = Handover(manager, directory, manager.metrics, send=send)  # type: ignore[arg-type]
        assert await handover.move(moving, "drain")
        assert sent == ["t1"]
        assert manager.find_runtime("c1") is None  # let go of here
    finally:
        await manager.close()
