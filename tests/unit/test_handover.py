"""A moved call's state on the wire between workers (``calls/handover.py``)."""

from __future__ import annotations

import json

import pytest

from bridge.calls import Call, CallState, Direction
from bridge.calls.handover import MovedCall
from bridge.calls.model import Controls
from bridge.errors import BadRequest


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
