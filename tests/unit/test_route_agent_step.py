"""A route's agent step takes every provider an agent on a call takes: the desk checks a route
against the one list (``config.AGENT_PROVIDERS``) that ``agents/service.py`` has a dialect for
(a copy in the desk had missed ``openai-live``)."""

from __future__ import annotations

import pytest

from bridge.agents.service import PROVIDERS
from bridge.desk.routes import parse_step
from bridge.errors import BadRequest


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_agent_step_takes_every_provider_an_agent_takes(provider: str) -> None:
    url = "https://api.example/api" if provider == "ultravox" else "wss://model.example/x"
    step = parse_step({"agent": {"provider": provider, "url": url}}, "steps[0]")
    assert (step.kind, step.body) == ("agent", {"provider": provider, "url": url})


def test_an_agent_step_refuses_a_provider_no_agent_takes() -> None:
    with pytest.raises(BadRequest, match="provider' must be one of"):
        parse_step({"agent": {"provider": "openai", "url": "wss://m.example"}}, "steps[0]")
