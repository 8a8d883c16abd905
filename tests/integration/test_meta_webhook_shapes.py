"""Meta's webhooks of shapes its documents do not show: an unsigned body from anyone is 401
whatever its shape, and a signed item the bridge cannot read costs that item only, never the
body's other items, the number's next calls, or a traceback."""

from __future__ import annotations

import logging
from typing import Any

import pytest

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
