"""A moved call's look for its agent's connected leg (``desk/handoffs.py`` ``leg_back``)
asks the agent's worker to lend it every quarter second: that worker silent, each ask was a
WARNING of its own (up to five, one per ask of its 3 s wait). Said once now, and its end once."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.desk import handoffs, lending
from bridge.desk.lending import Lending


async def test_a_silent_agents_worker_is_said_once_and_a_call_with_no_agent_names_none(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lending, "ANSWER_WAIT", 0.01)
    answers = False
    asked: Lending

    async def publish(message: dict[str, Any]) -> None:
        if answers:  # the agent's worker (A) back: it has no idle leg
            reply = {"worker": "b", "request": message["request"], "ok": False}
            asyncio.get_running_loop().call_soon(asked.answered, reply)

    async def agent(tenant: str | None, agent_id: str) -> Any:
        return SimpleNamespace(worker="a")  # the agent's socket is on A

    store = SimpleNamespace(agent=agent, publish=publish)
    desk = SimpleNamespace(store=store, worker_id="b", run_of=lambda call_id: object())
    asked = Lending(desk, None, "http://b")  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="bridge.desk")
    for _ in range(5):
        assert await asked.ask((None, "ann"), "c1") is False
    answers = True
    assert await asked.ask((None, "ann"), "c1") is False
    said = [r.getMessage() for r in caplog.records]
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1, said
    assert "did not answer the ask for its leg" in said[0], said
    assert said[1:] == ["call c1: agent ann's worker answered again, after 5 unanswered asks"]

    # An answered call with no agent on it, carried on here: said so, not "its agent None".
    caplog.clear()
    run = SimpleNamespace(
        call=SimpleNamespace(id="c2", live=True),
        route=None,
        runtime=None,
        handed_from=None,
        early_events=deque(),
    )
    await handoffs.carry_on(run, {"step": 0})  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        "call c2: carried on here answered; no agent on it"
    ]
