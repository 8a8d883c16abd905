"""Call model, state machine and registry, without the network."""

from __future__ import annotations

import logging
import time

import pytest

from bridge.calls import (
    Call,
    CallEvents,
    CallState,
    Direction,
    EndReason,
    InMemoryCallRegistry,
    normalize_phone,
)
from bridge.calls.model import normalize_user
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


@pytest.mark.parametrize(
    "raw", ["", "+", "12345", "1" * 16, "55 21 9999", "abc@g.us", None, 12, "٥٥٢١٩٩٩٩٩٩٩٩"]
)
def test_bad_phones(raw) -> None:
    with pytest.raises(BadRequest):
        normalize_phone(raw)


@pytest.mark.parametrize(
    "raw,user",
    [
        ("US.13491208655302741918", "US.13491208655302741918"),
        ("US.13491208655302741918@s.whatsapp.net", "US.13491208655302741918"),  # a call's peer
        ("US.ENT.11815799212886844830", "US.ENT.11815799212886844830"),
        ("5521999999999@s.whatsapp.net", "5521999999999"),
    ],
)
def test_a_user_given_as_a_calls_peer_is_the_same_user(raw, user) -> None:
    assert normalize_user(raw) == user


@pytest.mark.parametrize("raw", ["US.x@g.us", "us.123", "US.", "@s.whatsapp.net", None])
def test_bad_users(raw) -> None:
    with pytest.raises(BadRequest):
        normalize_user(raw)


def billed_call(peer: str = "5521955550000") -> Call:
    call = new_call()
    call.peer, call.pulse_s = f"{peer}@s.whatsapp.net", 6
    return call


@pytest.mark.parametrize(
    "connected,pulses",
    [(None, 0), (0.4, 1), (5.9, 1), (6.0, 1), (6.1, 2), (12.0, 2), (12.001, 3), (61.0, 11)],
)
def test_a_business_initiated_call_costs_its_connected_seconds_in_6_s_pulses_rounded_up(
    connected, pulses
) -> None:
    """Meta bills business-initiated calls in 6-second pulses, rounded up; an unanswered call
    (``None``: never connected) costs nothing."""
    call = billed_call()
    call.transition(CallState.RINGING)
    if connected is not None:
        call.transition(CallState.ACTIVE)
    call.transition(CallState.ENDED, EndReason.HANGUP)
    if connected is not None:
        assert call.answered_at is not None
        call.ended_at = call.answered_at + connected
    assert call.billable_pulses == pulses
    snap = call.snapshot()
    assert snap["billablePulses"] == pulses and snap["destinationCountry"] == "BR"


def test_meta_s_own_duration_counts_before_the_bridge_s_clock() -> None:
    call = billed_call()
    call.transition(CallState.ACTIVE)
    call.transition(CallState.ENDED, EndReason.REMOTE_HANGUP)
    call.billed_s = 6  # Meta's terminate said 6 s: one pulse, whatever our clock saw
    call.ended_at = (call.answered_at or 0) + 6.4
    assert call.billable_pulses == 1


def test_a_call_nobody_bills_by_the_pulse_says_nothing_of_cost() -> None:
    call = new_call()
    call.transition(CallState.ENDED, EndReason.HANGUP)
    snap = call.snapshot()
    assert "billablePulses" not in snap and "destinationCountry" not in snap


@pytest.mark.parametrize(
    "user,country",
    [
        ("5521955550000", "BR"),
        ("+4915112345678", "DE"),
        ("12125550123", "US"),
        ("14165550123", "CA"),  # Toronto: +1 416, Canada's area code
        ("18765550123", "JM"),  # +1 876: another NANP country
        ("77011234567", "KZ"),  # +7 7…: Kazakhstan, not Russia
        ("79161234567", "RU"),
        ("35312345678", "IE"),  # +353 beats +35… (no such code) and +3 (none)
        ("5997123456", "BQ"),  # +599 7: Bonaire, longer than Curaçao's +599
        ("919876543210@s.whatsapp.net", "IN"),
        ("BR.13491208655302741918", "BR"),  # a BSUID starts with its user's country
        ("99912345678", None),  # +999: not assigned
        ("2800000000", None),  # +28: not assigned
    ],
)
def test_the_destination_country_is_the_longest_calling_code_that_matches(user, country) -> None:
    call = billed_call(user.removesuffix("@s.whatsapp.net"))
    assert call.destination_country == country


def test_an_observer_that_fails_on_every_event_is_said_once(caplog) -> None:
    """A webhook observer that fails on each event (a URL it cannot read, once): a traceback
    for its first failure of a kind, not one an event; the other observers still see each."""
    events = CallEvents()
    seen: list[str] = []

    def broken(event, call) -> None:
        raise ValueError("Invalid IPv6 URL")

    events.observe(broken)
    events.observe(lambda event, call: seen.append(event.type))
    call = new_call()
    caplog.set_level(logging.INFO, logger="bridge.calls.events")
    for type_ in ("call.created", "call.ringing", "call.active", "call.ended"):
        events.publish(type_, call)
    assert seen == ["call.created", "call.ringing", "call.active", "call.ended"]
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].exc_info is not None, caplog.text
