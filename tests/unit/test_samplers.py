"""The once-a-second samplers of every live call (timelines, WebRTC quality): one call's failure
costs its own sample, and a failure that recurs every pass is said once."""

from __future__ import annotations

import logging
from typing import Any

from bridge.calls import quality, reports
from bridge.logs import FailureKinds
from bridge.metrics import Metrics


class _Runtime:
    """A live call as the samplers see it: its report and its sessions."""

    def __init__(self, call_id: str, broken: bool) -> None:
        self.call_id = call_id
        self.broken = broken
        self.sampled = 0
        self.media = self
        self.webrtc_leg = self if broken else None
        self.participants = self
        self.sessions: dict[str, Any] = {}
        self.closed = False

    def sample_report(self, now: float) -> None:
        if self.broken:
            raise ZeroDivisionError("a bug")
        self.sampled += 1

    async def sample_quality(self) -> None:
        raise ZeroDivisionError("a bug")


async def test_a_failing_call_costs_its_own_timeline_row_only(caplog) -> None:
    calls = [_Runtime("a" * 32, broken=True), _Runtime("b" * 32, broken=False)]
    bugs = FailureKinds(reports.log)
    caplog.set_level(logging.DEBUG, logger="bridge.calls.reports")
    for second in range(5):
        reports.sample_once(lambda: calls, float(second), bugs)  # type: ignore[arg-type, return-value]
    assert calls[1].sampled == 5  # the call after the failing one: sampled every second
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "a" * 32 in said[0].getMessage(), caplog.text


async def test_a_quality_sample_that_fails_every_pass_is_said_once(caplog) -> None:
    calls = [_Runtime("a" * 32, broken=True)]
    bugs = FailureKinds(quality.log)
    caplog.set_level(logging.DEBUG, logger="bridge.calls.quality")
    for _ in range(5):
        await quality.sample_quality_once(Metrics(), lambda: calls, bugs)  # type: ignore[arg-type, return-value]
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, caplog.text
