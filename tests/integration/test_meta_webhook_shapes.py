"""Meta's webhooks of shapes its documents do not show: an unsigned body from anyone is 401
whatever its shape, and a signed item the bridge cannot read costs that item only, never the
body's other items, the number's next calls, or a traceback; a run of them is said once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge.api.keys import ENGINE

from .test_engine_cloudapi import the_live_call
from .test_meta_penalties import deliver

OBJECT = "whatsapp_business_account"


@pytest.fixture
async def client(make_client, meta) -> Any:
    return await make_client(**meta.bridge_settings())


@pytest.mark.parametrize(
    "body",
    [
        {"object": OBJECT, "entry": 5},
        {"object": OBJECT, "entry": [{"changes": True}]},
        {"object": OBJECT, "entry": [{"changes": [{"value": {"metadata": 7}}]}]},
        {
            "object": OBJECT,
            "entry": [{"changes": [{"field": "calls", "value": {"calls": [{"event": []}]}}]}],
        },
    ],
)
async def test_an_unsigned_body_of_any_shape_is_401(client, body, caplog) -> None:
    """The front door reads the body for its number before the number checks the signature:
    a truthy ``entry`` that is no list was a 500 with a traceback, to anyone on the internet."""
    caplog.set_level(logging.ERROR)
    resp = await client.post("/engine/webhook", json=body)
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert not caplog.records, caplog.text


async def test_an_item_it_cannot_read_costs_only_that_item(client, meta, caplog) -> None:
    """A ``calls`` item whose ``event`` is a list beside a user's call: the call rings (the
    whole body once failed, a traceback at ERROR, the call never heard of)."""
    caplog.set_level(logging.ERROR)
    _, event = await meta.user_offer("15550001111")
    event["calls"].insert(0, {"id": "wacid.odd", "event": ["connect"]})
    await deliver(client, meta, meta.envelope(event))
    live = await the_live_call(client)
    assert live["state"] == "ringing"
    assert not caplog.records, caplog.text


async def test_items_it_cannot_read_are_said_once_a_run_not_each(client, meta, caplog) -> None:
    """Meta's calls items the bridge cannot read, in body after body: counted each, said once
    at WARNING with what they lacked (not a line an item: Meta resends, and a shape it
    changed would come with every call); the run's end said once the items read again."""
    caplog.set_level(logging.INFO, logger="bridge.engines.cloudapi.graph_side")
    engine = client.app[ENGINE]
    before = engine.stats.bad_messages
    for i in range(3):
        _, event = await meta.user_offer(f"1555000120{i}")
        event["calls"].insert(0, {"id": f"wacid.odd{i}", "event": ["connect"]})
        event["calls"].append({"event": "terminate"})  # no id
        await deliver(client, meta, meta.envelope(event))
    assert engine.stats.bad_messages == before + 6
    said = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert "an event the bridge does not know" in said[0].getMessage()
    assert "1098765432" in said[0].getMessage()  # the number it came for
    _, event = await meta.user_offer("15550001299")
    await deliver(client, meta, meta.envelope(event))
    again = [r for r in caplog.records if "read again" in r.getMessage()]
    assert len(again) == 1 and "after 3 webhook(s)" in again[0].getMessage()


@pytest.mark.parametrize("expiration", [1_800_000_000_000, 10**20])
async def test_a_pause_until_no_date_holds_is_a_pause_until_unknown(
    client, meta, caplog, expiration
) -> None:
    """A restriction's ``expiration`` in milliseconds (or past year 9999): read as a pause
    whose end Meta did not give, and /call/make says it is paused. It was stored as given, and
    every dial from the number was then a 500 (no date holds it), for good."""
    caplog.set_level(logging.ERROR)
    body = meta.account.pause()
    body["entry"][0]["changes"][0]["value"]["restriction_info"][0]["expiration"] = expiration
    await deliver(client, meta, body)
    resp = await client.post("/call/make", json={"phone": "5521999999999"})
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "calling_paused", error
    assert not caplog.records, caplog.text
