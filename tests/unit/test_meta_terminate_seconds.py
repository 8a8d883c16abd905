"""The connected seconds of Meta's ``terminate`` webhook in each shape Meta's Cloud API Calling
docs allow (``start_time``, ``end_time`` and ``duration`` each optional): what a
business-initiated call's 6-second pulses are counted from."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.engines.cloudapi.webhook import call_events

USER = "5521966660000"


def terminate(**fields: Any) -> dict[str, Any]:
    item = {"id": "wacid.T", "from": "15550009999", "to": USER, "event": "terminate"}
    item |= {"direction": "BUSINESS_INITIATED", "status": "COMPLETED", **fields}
    value = {"messaging_product": "whatsapp", "calls": [item]}
    return {"entry": [{"changes": [{"field": "calls", "value": value}]}]}


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ({"duration": 13}, 13),
        ({"duration": "13"}, 13),  # digits in a string, as Meta's times come
        ({"start_time": "1671644824", "end_time": "1671644837"}, 13),  # no duration given
        ({"start_time": 1671644824, "end_time": 1671644837, "duration": 12}, 12),
        ({"duration": True}, None),
        ({"duration": -4}, None),
        ({"start_time": "1671644837", "end_time": "1671644824"}, None),
        ({}, None),
    ],
)
def test_a_terminates_connected_seconds_in_each_shape(fields: dict, seconds: int | None) -> None:
    """``start_time``, ``end_time`` and ``duration`` are each optional in Meta's ``terminate``:
    the seconds a business-initiated call is billed by come from ``duration`` however it is
    written, else from the two times (a string ``duration`` was dropped, and the pulses then
    counted from the bridge's own clock)."""
    (event,), bad = call_events(terminate(**fields))
    assert (event.duration, bad) == (seconds, 0)
