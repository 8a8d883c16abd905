"""A leg whose connection failed closes for good in the background, whatever kind it is: a
browser's session, and an agent's connected leg even while lent to a call (whose own
``close`` would only park it again)."""

from __future__ import annotations

import asyncio

from bridge.config import IceSettings, MediaSettings
from bridge.media import CallBus
from bridge.rtc import ConnectedLeg, WebRTCSession


async def _settled(leg: WebRTCSession) -> None:
    for _ in range(100):
        if leg.pc.connectionState == "closed":
            return
        await asyncio.sleep(0.01)


async def test_a_failed_session_closes_and_says_so() -> None:
    states: list[str] = []
    session = WebRTCSession(
        "c1", CallBus("c1"), MediaSettings(), IceSettings(), lambda s, state: states.append(state)
    )
    session.fail("no answer")
    await _settled(session)
    assert session.closed and states == ["failed"]
    assert session.failure == "timeout: no answer"


async def test_a_failed_connected_leg_on_a_call_closes_for_good_not_parks() -> None:
    states: list[str] = []
    leg = ConnectedLeg("ann", MediaSettings(), IceSettings())
    leg.attached_to = "c1"  # lent to a call: its close() would park it
    leg._on_state = lambda s, state: states.append(state)
    leg.fail("no answer")
    await _settled(leg)
    assert leg.closed and states == ["failed"] and leg.state == "failed"
