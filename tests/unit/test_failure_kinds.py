"""``FailureKinds``: a long-lived loop's surviving failures, said once per kind with the
traceback, the later ones of a kind at DEBUG."""

from __future__ import annotations

import logging

import pytest

from bridge.logs import FailureKinds


def test_each_kind_is_said_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("bridge.test_failure_kinds")
    caplog.set_level(logging.DEBUG, logger=log.name)
    kinds = FailureKinds(log)
    for exc in [KeyError("a"), KeyError("b"), ValueError("c"), KeyError("d")]:
        try:
            raise exc
        except Exception as caught:
            kinds.failed(caught, "turn of %s failed", "x")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [type(r.exc_info[1]).__name__ for r in errors if r.exc_info] == [
        "KeyError",
        "ValueError",
    ]
    assert all(r.getMessage() == "turn of x failed" for r in errors)
    again = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert again == [
        "turn of x failed (KeyError('b') again)",
        "turn of x failed (KeyError('d') again)",
    ]
