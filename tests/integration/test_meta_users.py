"""WhatsApp users without a phone number (Meta's "Business-scoped user IDs"): a user with a
username may show Meta no phone, only their BSUID. Their calls, call permissions, records and
events are keyed by the BSUID; a ``user_changed_user_id`` moves what the bridge keeps for them;
a call from a companion device grants no callback permission, and the refusal says so."""

from __future__ import annotations

import json

import pytest

from bridge.api.keys import MANAGER

from ..support.calls import events_until_ended, wait_state
from ..support.waits import until
from .test_call_permissions import deliver, next_event, user_calls_and_is_declined

BSUID = "US.13491208655302741918"
NEW_BSUID = "US.24817305912873645029"


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def test_an_inbound_call_from_a_user_who_shows_no_phone(cclient, meta, tmp_path):
    client = await cclient(call_reports=True, data_dir=str(tmp_path))
    manager = client.app[MANAGER]
    async with manager.events.subscribe() as sub:
        mcall = await meta.user_calls(client, BSUID)  # from_user_id, no from; contacts user_id
        await until(lambda: mcall.pre_accept_at, 5, "pre_accept")
        call = await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "ringing")
        snap = call.snapshot()
        assert snap["peer"] == f"{BSUID}@s.whatsapp.net" and snap["direction"] == "inbound"
        assert snap["metadata"]["whatsapp"]["userId"] == BSUID
        assert (await client.post("/call/answer", json={"callID": call.id})).status == 200
        await wait_state(client, call.id, "active", timeout=3)
        body = meta.envelope(meta.terminate_event(mcall, duration=7))
        assert (await meta.post(client, body)).status == 200
        ended = await wait_state(client, call.id, "ended", timeout=3)
        assert ended["endReason"] == "remote_hangup"
        events = await events_until_ended(sub, {call.id})
    assert {e.call["peer"] for e in events if e.call} == {f"{BSUID}@s.whatsapp.net"}

    async def record() -> dict | None:
        resp = await client.get(f"/call/{call.id}/report")
        return (await resp.json())["summary"] if resp.status == 200 else None

    summary = await until(record, 3, "the call's record")
    assert summary["callID"] == call.id and "billablePulses" not in summary  # free: user's call


async def test_a_call_made_to_a_bsuid_rings_connects_and_costs_in_its_country(cclient, meta):
    client = await cclient()
    resp = await client.post("/call/make", json={"recipient": BSUID})
    made = await resp.json()
    assert resp.status == 201, made
    connect = next(a for a in meta.actions if a.get("action") == "connect")
    assert connect["recipient"] == BSUID and "to" not in connect
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == made["callID"])
    assert mcall.user == BSUID
    answer, ringing = meta.answer_event(mcall), meta.status_event(mcall, "RINGING")
    assert answer["calls"][0]["to_user_id"] == BSUID and "to" not in answer["calls"][0]
    assert ringing["statuses"][0]["recipient_user_id"] == BSUID
    assert (await meta.post(client, meta.envelope(ringing))).status == 200
    await wait_state(client, made["callID"], "ringing", timeout=3)
    body = meta.envelope(answer, meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, made["callID"], "active", timeout=3)
    body = meta.envelope(meta.terminate_event(mcall, duration=13))
    assert (await meta.post(client, body)).status == 200
    ended = await wait_state(client, made["callID"], "ended", timeout=3)
    assert ended["peer"] == f"{BSUID}@s.whatsapp.net"
    assert (ended["billablePulses"], ended["destinationCountry"]) == (3, "US")


async def test_permission_asked_answered_and_read_by_bsuid(cclient, meta):
    meta.perms.strict = True
    client = await cclient()
    manager = client.app[MANAGER]
    await deliver(client, meta, meta.perms.user_writes(BSUID))  # from_user_id: window opens
    tmpl = {"name": "call_me", "language": "en_US"}
    async with manager.events.subscribe() as sub:
        resp = await client.post("/call/permissions", json={"recipient": BSUID, "template": tmpl})
        assert resp.status == 202, await resp.text()
        sent = meta.perms.sent[-1]
        assert sent["recipient"] == BSUID and "to" not in sent
        assert sent["type"] == "interactive"  # the window is open: no template needed
        await deliver(client, meta, meta.perms.user_answers(BSUID, "accept"))
        event = json.loads((await next_event(sub, "call.permission")).to_json())
    assert (event["phone"], event["userId"], event["response"]) == (None, BSUID, "accept")
    perm = await (await client.get(f"/call/permissions/{BSUID}")).json()
    assert (perm["phone"], perm["status"], perm["canCall"]) == (BSUID, "temporary", True)
    for bad in ({"recipient": "13491208655302741918"}, {"recipient": BSUID, "phone": "5521"}):
        resp = await client.post("/call/permissions", json=bad)
        assert resp.status == 400, bad
    assert (await client.get("/call/permissions/us.lowercase")).status == 400


async def test_a_call_button_to_a_user_who_shows_no_phone(cclient, meta):
    """The call button goes to a BSUID as ``recipient`` (Meta's message takes either), inside
    the window the user's message opened; the call they start from it carries its payload.
    ``to`` and ``recipient`` together, or neither, are a 400."""
    meta.perms.strict = True
    client = await cclient()
    await deliver(client, meta, meta.perms.user_writes(BSUID))
    button = {"recipient": BSUID, "text": "Call us about order 42", "payload": "order-42"}
    resp = await client.post("/numbers/default/call-button", json=button)
    body = await resp.json()
    assert resp.status == 202 and body["recipient"] == BSUID and "to" not in body, body
    [sent] = [a for a in meta.actions if a.get("edge") == "messages"]
    assert sent["recipient"] == BSUID and "to" not in sent, sent
    assert sent["interactive"]["action"]["parameters"] == {"payload": "order-42"}
    await meta.user_presses_call_button(client, BSUID)

    async def ringing() -> dict | None:
        calls = (await (await client.get("/call/status")).json())["calls"]
        return calls[0] if calls else None

    call = await until(ringing, 5, "the call from the button")
    assert call["peer"] == f"{BSUID}@s.whatsapp.net", call
    assert call["metadata"]["whatsapp"]["ctaPayload"] == "order-42", call
    for bad in ({"text": "hi"}, {"to": "5521999999999", "recipient": BSUID, "text": "hi"}):
        resp = await client.post("/numbers/default/call-button", json=bad)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_phone", (bad, error)


async def test_a_user_id_change_moves_the_window_and_the_permission(cclient, meta):
    meta.perms.strict = True
    client = await cclient()
    await deliver(client, meta, meta.perms.user_writes(BSUID))
    meta.account.calling["callback_permission_status"] = "ENABLED"
    await user_calls_and_is_declined(client, meta, BSUID)  # Meta's grant follows by itself
    await until(lambda: meta.grants_sent, 3, "Meta's callback grant")
    assert (await (await client.get(f"/call/permissions/{BSUID}")).json())["phone"] == BSUID
    await deliver(client, meta, meta.perms.user_id_changes(BSUID, NEW_BSUID))
    # The permission read a moment ago moved with the user, and names them as they are now
    # (it named the old BSUID until the cache ran out).
    perm = await (await client.get(f"/call/permissions/{NEW_BSUID}")).json()
    assert (perm["phone"], perm["status"]) == (NEW_BSUID, "temporary"), perm
    # The window moved with the user: the request to the new id needs no template.
    tmpl = {"name": "call_me", "language": "en_US"}
    resp = await client.post("/call/permissions", json={"recipient": NEW_BSUID, "template": tmpl})
    assert resp.status == 202, await resp.text()
    assert meta.perms.sent[-1]["type"] == "interactive"
    assert meta.perms.sent[-1]["recipient"] == NEW_BSUID
    perm = await (await client.get(f"/call/permissions/{NEW_BSUID}")).json()
    assert (perm["status"], perm["canCall"]) == ("temporary", True)  # Meta's, moved too
    made = await client.post("/call/make", json={"recipient": NEW_BSUID})
    assert made.status == 201, await made.text()


async def test_a_companion_devices_call_grants_no_callback_and_the_refusal_says_so(cclient, meta):
    """Meta: callback permission (a user's call grants 7 days) is not supported on companion
    devices. The user's call is taken like any other; a call back is refused with 138006, and
    the bridge says that their call granted none."""
    meta.perms.strict = True
    meta.account.calling["callback_permission_status"] = "ENABLED"
    client = await cclient()
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, BSUID, companion=True)  # no grant follows
    call = await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "ringing")
    assert (await client.post("/call/answer", json={"callID": call.id})).status == 200
    await wait_state(client, call.id, "active", timeout=3)
    body = meta.envelope(meta.terminate_event(mcall, duration=20))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, call.id, "ended", timeout=3)
    assert meta.grants_sent == 0
    resp = await client.post("/call/make", json={"recipient": BSUID})
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "no_call_permission", error
    assert error["details"]["cause"] == "no_callback_from_companion"
    assert "companion device" in error["message"] and error["details"]["calledAt"]
    # A user who never called: Meta's plain refusal.
    resp = await client.post("/call/make", json={"recipient": NEW_BSUID})
    error = (await resp.json())["error"]
    assert resp.status == 403 and "cause" not in error["details"]
