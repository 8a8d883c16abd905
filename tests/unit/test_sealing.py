"""Agent keys and URLs with secrets sealed for the directory and the internal API
(``cluster/sealing.py``)."""

from __future__ import annotations

import json

import pytest

from bridge.cluster.sealing import AGENT_ID, FORK_ID, SealBroken, Sealer, open_parts, seal_parts


def seal_agents(sealer, call_id, agents):
    return seal_parts(sealer, call_id, agents, AGENT_ID)


def open_agents(sealer, call_id, agents):
    return open_parts(sealer, call_id, agents, AGENT_ID)


SECRET = "internal-secret-for-tests-0123456789"


def test_a_sealed_key_opens_with_the_same_secret_for_the_same_call_and_agent() -> None:
    sealed = Sealer(SECRET).seal("sk-live-123", "call1/ag_1")
    assert "sk-live-123" not in sealed and sealed.startswith("v1.")
    assert Sealer(SECRET).open(sealed, "call1/ag_1") == "sk-live-123"
    # A fresh nonce each time: two sealings of one key differ.
    assert Sealer(SECRET).seal("sk-live-123", "call1/ag_1") != sealed


@pytest.mark.parametrize(
    ("secret", "context", "tamper"),
    [
        ("another-internal-secret-0123456789", "call1/ag_1", False),  # rotated secret
        (SECRET, "call2/ag_1", False),  # copied into another call's record
        (SECRET, "call1/ag_1", True),  # altered
    ],
)
def test_a_sealed_key_does_not_open_elsewhere(secret: str, context: str, tamper: bool) -> None:
    sealed = Sealer(SECRET).seal("sk-live-123", "call1/ag_1")
    if tamper:
        sealed = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealBroken):
        Sealer(secret).open(sealed, context)


@pytest.mark.parametrize("junk", ["", "sk-plain", "v1.!!!", "v1."])
def test_junk_is_no_sealed_key(junk: str) -> None:
    with pytest.raises(SealBroken):
        Sealer(SECRET).open(junk, "call1/ag_1")


def test_exported_agents_carry_their_key_sealed_and_open_back_on_the_adopter() -> None:
    agents = [
        {"provider": "openai-realtime", "url": "ws://h/v1", "apiKey": "sk-1", "agentID": "ag_1"},
        {"provider": "gemini-live", "url": "ws://h/g", "agentID": "ag_2"},  # the default key
    ]
    sealed = seal_agents(Sealer(SECRET), "c1", agents)
    assert "sk-1" not in json.dumps(sealed) and "apiKey" not in sealed[0]
    assert sealed[1] == agents[1]  # nothing to seal: the adopter uses its own default
    opened, refused = open_agents(Sealer(SECRET), "c1", sealed)
    assert opened == agents and refused == []


def test_an_agent_whose_key_does_not_open_is_left_behind_with_why() -> None:
    agents = [{"provider": "openai-realtime", "apiKey": "sk-1", "agentID": "ag_1"}]
    sealed = seal_agents(Sealer(SECRET), "c1", agents)
    for sealer, call_id in [
        (Sealer("rotated-internal-secret-0123456789"), "c1"),
        (Sealer(SECRET), "c2"),  # another call's record
        (None, "c1"),  # no secret configured here
    ]:
        opened, refused = open_agents(sealer, call_id, sealed)
        assert opened == [] and [a["agentID"] for a, _ in refused] == ["ag_1"]
        assert "sk-1" not in refused[0][1]


def test_a_url_holding_a_key_or_credentials_travels_sealed_too() -> None:
    """Gemini's ``?key=`` in an agent's URL, an app's token in a fork's: the snapshots cut
    them off, and the directory record (Redis) must not hold them in the clear either."""
    agents = [
        {"provider": "gemini-live", "url": "wss://g.example/ws?key=AIza-secret", "agentID": "a1"},
    ]
    forks = [
        {"url": "wss://u:pw-secret@app.example/s", "channel": "both", "streamId": "s1"},
        {"url": "wss://app.example/s?token=tok-secret", "channel": "both", "streamId": "s2"},
        {"url": "wss://app.example/plain", "channel": "both", "streamId": "s3"},
    ]
    sealed_agents = seal_parts(Sealer(SECRET), "c1", agents, AGENT_ID)
    sealed_forks = seal_parts(Sealer(SECRET), "c1", forks, FORK_ID)
    text = json.dumps([sealed_agents, sealed_forks])
    for secret in ("AIza-secret", "pw-secret", "tok-secret"):
        assert secret not in text
    assert sealed_forks[2] == forks[2]  # nothing secret in it: as it was
    assert open_parts(Sealer(SECRET), "c1", sealed_agents, AGENT_ID) == (agents, [])
    assert open_parts(Sealer(SECRET), "c1", sealed_forks, FORK_ID) == (forks, [])
    # Bound to its stream: another fork's sealed URL does not open in its place.
    swapped = [{**sealed_forks[1], "sealedURL": sealed_forks[0]["sealedURL"]}]
    opened, refused = open_parts(Sealer(SECRET), "c1", swapped, FORK_ID)
    assert opened == [] and [f["streamId"] for f, _ in refused] == ["s2"]


def test_what_the_caller_said_and_a_forks_custom_parameters_travel_sealed() -> None:
    """An agent's last transcript lines (what the caller said: personal data) and a Twilio
    fork's custom parameters (where apps put tokens) are in no record in the clear; they open
    back as the lists and objects they were, for their own call and attachment only."""
    agents = [
        {
            "provider": "openai-realtime",
            "agentID": "a1",
            "context": [["caller", "my card is 4111 1111"], ["agent", "thank you"]],
        },
        {"provider": "openai-realtime", "agentID": "a2", "context": []},  # nothing said yet
    ]
    forks = [{"url": "wss://app.example/s", "streamId": "s1", "customParameters": {"t": "tok-9"}}]
    sealed_agents = seal_parts(Sealer(SECRET), "c1", agents, AGENT_ID)
    sealed_forks = seal_parts(Sealer(SECRET), "c1", forks, FORK_ID)
    text = json.dumps([sealed_agents, sealed_forks])
    assert "4111" not in text and "tok-9" not in text and "thank you" not in text
    assert "context" not in sealed_agents[0] and sealed_agents[1] == agents[1]
    assert open_parts(Sealer(SECRET), "c1", sealed_agents, AGENT_ID) == (agents, [])
    assert open_parts(Sealer(SECRET), "c1", sealed_forks, FORK_ID) == (forks, [])
    opened, refused = open_parts(Sealer(SECRET), "c2", sealed_agents, AGENT_ID)
    assert opened == [agents[1]] and [a["agentID"] for a, _ in refused] == ["a1"]
