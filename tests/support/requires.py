"""Tests that drive a real tool (Chromium, coturn, redis-server, …): skip where it is missing,
with the command that installs it, but fail under CI (``CI=true``), where ``make test`` has
installed everything and a skip would hide a missing install step."""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def require(available: bool, what: str, how: str) -> None:
    """At module level or inside a test: go on when ``available``; else skip, or fail under
    CI, saying ``what`` is missing and ``how`` to get it."""
    if available:
        return
    if under_ci():
        pytest.fail(f"{what} is missing under CI: {how}", pytrace=False)
    pytest.skip(f"{what} is missing: {how}", allow_module_level=True)


def needs(available: bool, what: str, how: str) -> pytest.MarkDecorator:
    """The same as a marker: the test is skipped where ``what`` is missing, except under CI,
    where it runs (and fails on the missing tool)."""
    return pytest.mark.skipif(not available and not under_ci(), reason=f"{what} is missing: {how}")
