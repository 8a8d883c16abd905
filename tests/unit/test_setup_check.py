"""Meta's settings compared against a number's engine (``numbers/setup_check.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.numbers.setup_check import SetupCheck
from bridge.tasks import TaskSet


class _Settings:
    """A number's calling settings whose reading waits until ``release`` is set."""

    def __init__(self, differences: list[str]) -> None:
        self.differences = differences
        self.release = asyncio.Event()

    async def mismatches(self) -> list[str]:
        await self.release.wait()
        return self.differences


class _Engine:
    def __init__(self, differences: list[str]) -> None:
        self.calling_settings = _Settings(differences)


async def test_a_comparison_of_an_engine_rebuilt_or_deleted_meanwhile_is_dropped(
    caplog: Any,
) -> None:
    """A health round's comparison still reading Meta as a PATCH rebuilt the number's engine
    (its media changed) ended after the new engine's: it put back the old engine's mismatch,
    said it at WARNING, and GET showed it until the next round (3 minutes); one of a number
    deleted meanwhile put its entry back for good."""
    setup = SetupCheck(TaskSet("test"))
    old, new = _Engine(["SRTP: Meta has DTLS"]), _Engine([])
    round_ = asyncio.create_task(setup.compare("lab", old))
    await asyncio.sleep(0)
    setup.forget("lab")  # the PATCH: the old engine retired, the new one built and compared
    new.calling_settings.release.set()
    assert await setup.compare("lab", new) == []
    old.calling_settings.release.set()
    assert await round_ is None
    assert setup.found == {"lab": []}
    assert "SRTP" not in caplog.text

    gone = _Engine(["SIP: Meta has SIP on"])
    checking = asyncio.create_task(setup.compare("gone", gone))
    await asyncio.sleep(0)
    setup.forget("gone")  # deleted
    gone.calling_settings.release.set()
    assert await checking is None
    assert "gone" not in setup.found
