"""The agent socket's messages as the desk reads them (``desk/wire.py``)."""

from __future__ import annotations

import pytest

from bridge.desk import wire


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        "[" * 5000 + "]" * 5000,  # nested too deeply: it once disconnected the agent
        '{"type": "ping", "n": NaN}',
        '{"type": "\\ud800"}',
    ],
)
def test_a_message_that_is_no_json_object_is_a_bad_message(text: str) -> None:
    with pytest.raises(wire.BadMessage) as refused:
        wire.parse(text)
    assert refused.value.code == "bad_message"


def test_a_ping_is_read() -> None:
    assert wire.parse('{"type": "ping"}').type == "ping"
