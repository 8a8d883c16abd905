"""The time limits of calls and WebRTC sessions, enforced every quarter second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..config import CallSettings
from ..media.clock import clock_sleep
from .model import CallState, Direction, EndReason
from .runtime import CallRuntime

EndCall = Callable[[CallRuntime, EndReason], None]
"""Ends a call whose time ran out (the manager's; it runs as the call's end task)."""


def check_limits(
    settings: CallSettings, runtimes: Iterable[CallRuntime], end_call: EndCall, now: float
) -> None:
    """One pass: ringing too long, answered too long, not connected, no RTP."""
    st = settings
    for runtime in runtimes:
        call = runtime.call
        reason = None
        if call.state in (CallState.CALLING, CallState.RINGING):
            if now - call.mono_created > st.ring_timeout:
                outbound = call.direction is Direction.OUTBOUND
                reason = EndReason.NO_ANSWER if outbound else EndReason.MISSED
        elif (
            st.max_call_duration
            and call.mono_answered is not None
            and now - call.mono_answered > st.max_call_duration
        ):
            reason = EndReason.MAX_DURATION
        if reason is not None:
            end_call(runtime, reason)
            continue
        for session in list(runtime.participants.sessions.values()):
            if session.state in ("closed", "failed"):
                continue
            if session.state != "connected":
                if now - session.offered_at > st.connect_timeout:
                    session.fail(f"not connected within {st.connect_timeout:g} s")
            elif now - (session.last_media or session.connected_at or now) > st.media_timeout:
                session.fail(f"no RTP for {st.media_timeout:g} s")


async def watch_forever(
    settings: CallSettings,
    runtimes: Callable[[], Iterable[CallRuntime]],
    end_call: EndCall,
    interval: float = 0.25,
) -> None:
    while True:
        await clock_sleep(interval)  # on the media clock: no wake-up of its own during calls
        check_limits(settings, list(runtimes()), end_call, time.monotonic())
