"""The time limits of calls and WebRTC sessions, enforced every quarter second."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from ..config import CallSettings
from ..media.clock import clock_sleep
from ..rtc.dtls import NO_RTP, NOT_CONNECTED
from .model import CallState, Direction, EndReason
from .runtime import CallRuntime

log = logging.getLogger(__name__)

EndCall = Callable[[CallRuntime, EndReason], None]
"""Ends a call whose time ran out (the manager's; it runs as the call's end task)."""


def check_limits(
    settings: CallSettings,
    runtimes: Iterable[CallRuntime],
    end_call: EndCall,
    now: float,
    failed: set[str],
) -> None:
    """One pass: ringing too long, answered too long, not connected, no RTP (from a browser
    that sends). A call whose check raises (a bug in its ending or in a session's state
    listeners) is logged once (``failed`` keeps its id) and the others are checked: the first
    such error used to end the watchdog, and no call of the worker had a time limit any more."""
    for runtime in runtimes:
        try:
            _check_call(settings, runtime, end_call, now)
        except Exception:
            if runtime.call.id not in failed:
                failed.add(runtime.call.id)
                log.exception("call %s: checking its time limits failed", runtime.call.id)


def _check_call(
    settings: CallSettings, runtime: CallRuntime, end_call: EndCall, now: float
) -> None:
    st = settings
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
        return
    for session in list(runtime.participants.sessions.values()):
        if session.state in ("closed", "failed"):
            continue
        if session.state != "connected":
            if now - session.offered_at > st.connect_timeout:
                session.fail(NOT_CONNECTED, f"within {st.connect_timeout:g} s")
        elif not session.sends_audio:
            continue  # a listener sends nothing: ICE consent (RFC 7675) says when it is gone
        elif now - max(session.last_media or 0.0, session.media_since or now) > st.media_timeout:
            session.fail(NO_RTP, f"for {st.media_timeout:g} s")


async def watch_forever(
    settings: CallSettings,
    runtimes: Callable[[], Iterable[CallRuntime]],
    end_call: EndCall,
    until_calls: Callable[[], Awaitable[object]],
    interval: float = 0.25,
) -> None:
    """Every ``interval`` s while the worker has calls (``until_calls`` returns once it has:
    ``CallManager.until_calls``), each call's limits checked."""
    failed: set[str] = set()  # calls whose check raised, logged once (the live ones kept)
    while True:
        await until_calls()  # an idle worker: parked, not woken four times a second
        await clock_sleep(interval)  # on the media clock: no wake-up of its own during calls
        live = list(runtimes())
        failed &= {runtime.call.id for runtime in live}
        check_limits(settings, live, end_call, time.monotonic(), failed)
