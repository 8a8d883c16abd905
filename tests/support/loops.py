"""Both event loops a test may need to run on: asyncio's and uvloop's (the bridge runs on
uvloop, and some of its failures showed there only: the SIP listener's stalled handshakes).

A module that wants both imports :func:`event_loop_policy` (pytest-asyncio's fixture of that
name, overridden): each of its tests then runs once per loop."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Both loops: the bridge runs on uvloop, where the stall was most frequent."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()
