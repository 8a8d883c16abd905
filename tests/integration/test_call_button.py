"""The number's "Call on WhatsApp" button (``POST /numbers/{numberID}/call-button``) against
the fake Meta: sent as Meta's ``voice_call`` interactive message inside the user's service
window (409 outside it), and the call the user starts from it carries the button's payload,
answered with the user's tone heard by the agent."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from bridge.api.keys import ENGINE

from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_call_permissions import deliver

USER = "15550004444"


@pytest.fixture
def bclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def ringing(client) -> dict | None:
    calls = (await (await client.get("/call/status")).json())["calls"]
    return calls[0] if calls and calls[0]["state"] == "ringing" else None


async def test_the_button_s_payload_comes_back_on_the_call_it_starts(bclient, meta):
    client = await bclient()
    await deliver(client, meta, meta.perms.user_writes(USER))  # the service window opens
    button = {
        "to": USER,
        "text": "Questions about order 42? Call us.",
        "buttonText": "Call us",
        "ttlMinutes": 60,
        "payload": "order-42",
    }
    resp = await client.post("/numbers/default/call-button", json=button)
    body = await resp.json()
    assert resp.status == 202 and body["messageID"].startswith("wamid."), body
    [sent] = [a for a in meta.actions if a.get("edge") == "messages"]
    assert sent["type"] == "interactive" and sent["to"] == USER
    assert sent["interactive"] == {
        "type": "voice_call",
        "body": {"text": "Questions about order 42? Call us."},
        "action": {
            "name": "voice_call",
            "parameters": {"display_text": "Call us", "ttl_minutes": 60, "payload": "order-42"},
        },
    }

    mcall = await meta.user_presses_call_button(client, USER)
    call = await until(lambda: ringing(client), 5.0, "the call from the button")
    assert call["metadata"]["whatsapp"]["ctaPayload"] == "order-42"
    rtc = RtcClient(client, call["callID"], freq=440.0)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 200
    await asyncio.sleep(1.5)
    heard = np.concatenate(rtc.recorder.chunks[-50:])
    assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(660, abs=5)
    assert mcall.accepted
    await rtc.close()


async def test_outside_the_window_and_bad_input_are_clear(bclient, meta, make_client):
    client = await bclient()
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call us"})
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "outside_service_window", error
    # The bridge never heard from the user: it cannot know the window, so Meta was asked.
    assert [a["to"] for a in meta.actions if a.get("edge") == "messages"] == [USER]
    for bad, field in [
        ({"to": USER, "text": "hi", "ttlMinutes": 0}, "ttlMinutes"),
        ({"to": USER, "text": "hi", "buttonText": "x" * 21}, "buttonText"),
        ({"to": USER, "text": "hi", "payload": "p" * 513}, "payload"),
        ({"to": USER}, "text"),
        ({"to": "nobody", "text": "hi"}, "to"),
    ]:
        resp = await client.post("/numbers/default/call-button", json=bad)
        error = (await resp.json())["error"]
        assert resp.status == 400 and field in error["message"], (bad, error)
    sim = await make_client()
    resp = await sim.post("/numbers/default/call-button", json={"to": USER, "text": "hi"})
    error = (await resp.json())["error"]
    assert resp.status == 404 and error["code"] == "call_button_not_supported", error


async def test_a_window_the_bridge_saw_close_is_refused_before_meta(bclient, meta, caplog):
    client = await bclient()
    await deliver(client, meta, meta.perms.user_writes(USER))  # the window opens
    meta.perms.offset = 25 * 3600  # a day and an hour on, for Meta and for the bridge
    client.app[ENGINE].permissions.clock = meta.perms.now
    caplog.set_level(logging.WARNING)
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call us"})
    refused = (await resp.json())["error"]
    assert resp.status == 409 and refused["code"] == "outside_service_window", refused
    assert "not sent to Meta" in refused["message"]
    assert not [a for a in meta.actions if a.get("edge") == "messages"]
    said = [r for r in caplog.records if "call button to" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, said
    assert "service window closed" in said[0].getMessage()

    # Meta refuses it the same way, with the same answer (the bridge only spared the request).
    perms = client.app[ENGINE].permissions
    perms.clock = time.time  # the bridge's clock behind Meta's: it thinks the window open
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call us"})
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == refused["code"] and set(error) == set(refused)
    assert len([a for a in meta.actions if a.get("edge") == "messages"]) == 1

    # The user writes again: the window is open and the button goes to Meta.
    perms.clock = meta.perms.now
    await deliver(client, meta, meta.perms.user_writes(USER))
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call us"})
    assert resp.status == 202, await resp.text()
    assert len([a for a in meta.actions if a.get("edge") == "messages"]) == 2
