"""Call model, state machine and registry, without the network."""

from __future__ import annotations

import time

import pytest

from bridge.calls import (
    Call,
    CallState,
    Direction,
    EndReason,
    InMemoryCallRegistry,
    normalize_phone,
)
from bridge.errors import BadRequest, CallStateError


def new_call(state: CallState = CallState.CALLING, cid: str = "c1") -> Call:
    return Call(
        id=cid,
        peer="1@s.whatsapp.net",
        direction=Direction.OUTBOUND,
        owner="test",
        engine_call_id="e-" + cid,
        state=state,
    )


@pytest.mark.parametrize(
    "start,to,ok",
    [
        (CallState.CALLING, CallState.RINGING, True),
        (CallState.CALLING, CallState.ACTIVE, True),
        (CallState.RINGING, CallState.ACTIVE, True),
        (CallState.RINGING, CallState.CALLING, False),
        (CallState.ACTIVE, CallState.RINGING, False),
        (CallState.ACTIVE, CallState.ENDED, True),
        (CallState.ENDED, CallState.ACTIVE, False),
        (CallState.ENDED, CallState.ENDED, False),
    ],
)
def test_transitions(start, to, ok) -> None:
    call = new_call(start)
    if ok:
        call.transition(to, EndReason.HANGUP)
        assert call.state is to
    else:
        with pytest.raises(CallStateError):
            call.transition(to)
        assert call.state is start


def test_registry_keeps_ended_calls_for_the_ttl() -> None:
    reg = InMemoryCallRegistry(ended_ttl=600)
    call = new_call()
    reg.add(call)
    assert reg.by_engine_id("e-c1") is call and reg.live() == [call]
    call.transition(CallState.ENDED, EndReason.HANGUP)
    reg.ended(call)
    assert reg.live() == [] and reg.by_engine_id("e-c1") is None
    assert reg.get("c1") is call
    assert reg.sweep(now=time.time() + 599) == 0 and reg.get("c1") is call
    assert reg.sweep(now=time.time() + 601) == 1 and reg.get("c1") is None


def test_registry_bounds_ended_calls() -> None:
    reg = InMemoryCallRegistry(max_ended=3)
    for i in range(5):
        call = new_call(cid=f"c{i}")
        reg.add(call)
        call.transition(CallState.ENDED, EndReason.HANGUP)
        reg.ended(call)
    assert [reg.get(f"c{i}") is not None for i in range(5)] == [False, False, True, True, True]


@pytest.mark.parametrize(
    "raw,digits",
    [
        ("5521999999999", "5521999999999"),
        ("+447700900123", "447700900123"),
        ("5521999999999@s.whatsapp.net", "5521999999999"),
        (" 123456 ", "123456"),
    ],
)
def test_phone_forms(raw, digits) -> None:
    assert normalize_phone(raw) == digits


@pytest.mark.parametrize("raw", ["", "+", "12345", "1" * 16, "55 21 9999", "abc@g.us", None, 12])
def test_bad_phones(raw) -> None:
    with pytest.raises(BadRequest):
        normalize_phone(raw)
