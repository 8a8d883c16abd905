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


def test_an_agent_steps_url_may_be_left_out_but_not_null() -> None:
    """Left out, the provider's default (``AgentService.check`` refuses it where there is
    none, as for a call's agent); given, a string."""
    step = parse_step({"agent": {"provider": "deepgram"}}, "steps[0]")
    assert step.body == {"provider": "deepgram"}
    with pytest.raises(BadRequest, match="url' must be a URL"):
        parse_step({"agent": {"provider": "deepgram", "url": None}}, "steps[0]")
