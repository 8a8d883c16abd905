"""Call permissions end to end on the fake Meta: ask a user (``POST /call/permissions``), hear
the answer (``call.permission`` on SSE and as a signed webhook), read it, call, and talk —
with Meta's strictness: its limits, its service window, expiry, revocation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from standardwebhooks import Webhook

from bridge.api.keys import ENGINE, MANAGER
from bridge.timefmt import parse_iso_utc

from ..support.calls import wait_state
from ..support.waits import until
from .test_engine_cloudapi import connect_browser, hears_tone
from .test_webhooks import SECRET, Receiver, hooks, receiver  # noqa: F401 (fixture)

USER = "5521966660000"


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


async def deliver(client: Any, meta: Any, value: dict[str, Any]) -> None:
    """Meta posts a ``messages`` webhook, and the bridge has worked through it."""
    resp = await meta.post(client, meta.envelope(value, field="messages"))
    assert resp.status == 200, await resp.text()
    engine = client.app[ENGINE]
    inbox = engine.graph_side.inbox
    await until(inbox.queue.empty, 2, "the webhook taken")


async def next_event(sub: Any, type_: str, timeout: float = 3.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            event = await sub.get(0.1)
        except TimeoutError:
            continue
        if event is not None and event.type == type_:
            return event
    raise AssertionError(f"no {type_} event")


async def sse_events(client: Any, n: int, started: asyncio.Event) -> list[dict[str, Any]]:
    """The first ``n`` ``call.permission`` events of ``GET /call/events`` (SSE)."""
    found: list[dict[str, Any]] = []
    async with client.get("/call/events") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line == ": connected":
                started.set()
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "call.permission":
                found.append(json.loads(line[6:]))
                if len(found) == n:
                    return found
    return found


async def test_ask_hear_the_answer_then_call_and_talk(cclient, meta, receiver):  # noqa: F811
    meta.perms.strict = True
    client = await cclient(**hooks(webhook_url=receiver.url("ok")))
    manager = client.app[MANAGER]

    # No permission: Meta refuses the call, and the API says why.
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "no_call_permission", body
    perm = await (await client.get(f"/call/permissions/{USER}")).json()
    assert (perm["status"], perm["canCall"], perm["canRequest"]) == ("no_permission", False, True)
    assert {(x["action"], x["timePeriod"]) for x in perm["limits"]} == {
        ("start_call", "PT24H"),
        ("send_call_permission_request", "PT24H"),
        ("send_call_permission_request", "P7D"),
    }

    # The user has not written: only a template may ask; an unknown one is Meta's 132001.
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "outside_service_window"
    tmpl = {"name": "nope", "language": "en_US"}
    resp = await client.post("/call/permissions", json={"phone": USER, "template": tmpl})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "unknown_template"

    # The user writes: the window opens, and the interactive request goes out.
    await deliver(client, meta, meta.perms.user_writes(USER))
    started = asyncio.Event()
    sse = asyncio.create_task(sse_events(client, 1, started))
    await asyncio.wait_for(started.wait(), 3)
    async with manager.events.subscribe() as sub:
        resp = await client.post("/call/permissions", json={"phone": f"+{USER}"})
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
        assert list(answer) == ["messageID"] and answer["messageID"].startswith("wamid.")
        sent = meta.perms.sent[-1]
        assert sent["type"] == "interactive" and sent["to"] == USER
        assert sent["interactive"]["type"] == "call_permission_request"

        await deliver(client, meta, meta.perms.user_answers(USER, "accept"))
        event = await next_event(sub, "call.permission")
    on_sse = (await asyncio.wait_for(sse, 3))[0]
    data = json.loads(event.to_json())
    assert on_sse == data
    assert {k: v for k, v in data.items() if k not in ("at", "expiresAt")} == {
        "type": "call.permission",
        "numberID": "default",
        "tenantID": "",
        "phone": USER,
        "response": "accept",
        "permanent": False,
        "source": "user_action",
    }
    lasts = parse_iso_utc(data["expiresAt"]) - parse_iso_utc(data["at"])
    assert 7 * 86400 - 60 < lasts <= 7 * 86400 + 1

    # The signed webhook to BRIDGE_WEBHOOK_URL carries the same event.
    [hook] = [e for e in await receiver.wait_for("ok", 1) if e["type"] == "call.permission"]
    raw = next(r for r in receiver.requests if '"call.permission"' in r["body"])
    assert Webhook(SECRET).verify(raw["body"], raw["headers"])["phone"] == USER
    assert hook == data

    # Read back (fresh after the answer): may call now.
    perm = await (await client.get(f"/call/permissions/{USER}")).json()
    assert (perm["status"], perm["canCall"]) == ("temporary", True)
    assert perm["expiresAt"] == data["expiresAt"]
    reads = meta.permission_reads
    await client.get(f"/call/permissions/{USER}")
    assert meta.permission_reads == reads, "cached briefly"

    # The call: placed, answered by the user, and the two sides hear each other.
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
    rtc = await connect_browser(client, call["callID"], freq=440.0)
    body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, call["callID"], "active", timeout=3)
    await asyncio.wait_for(mcall.peer.connected.wait(), 5)
    await hears_tone(rtc.recorder, 660, "agent hears the WhatsApp user")
    await hears_tone(mcall.peer.recorder, 440, "WhatsApp user hears the agent")
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await rtc.close()


async def test_request_limits_and_call_limits_say_when_next(cclient, meta):
    meta.perms.strict = True
    meta.perms.call_limit = 1  # Meta's value changes: the bridge reads it from the limits
    client = await cclient()
    await deliver(client, meta, meta.perms.user_writes(USER))
    assert (await client.post("/call/permissions", json={"phone": USER})).status == 202
    resp = await client.post("/call/permissions", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 429, body
    error = body["error"]
    assert error["code"] == "permission_request_limit" and error["details"]["metaCode"] == 138009
    wait = parse_iso_utc(error["details"]["retryAt"]) - meta.perms.now()
    assert 86400 - 60 < wait <= 86400
    assert error["details"]["retryAt"] in error["message"]
    assert 86400 - 60 < int(resp.headers["Retry-After"]) <= 86400

    # Granted; one call connects (the request limits reset); the next is over Meta's limit.
    await deliver(client, meta, meta.perms.user_answers(USER, "accept", permanent=True))
    call = await (await client.post("/call/make", json={"phone": USER})).json()
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
    assert (await meta.post(client, meta.envelope(meta.answer_event(mcall)))).status == 200
    await client.post("/call/hangup", json={"callID": call["callID"]})
    resp = await client.post("/call/make", json={"phone": USER})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "call_limit_reached", body
    assert body["error"]["details"]["limits"][0]["maxAllowed"] == 1
    assert "retryAt" in body["error"]["details"]
    perm = await (await client.get(f"/call/permissions/{USER}")).json()
    assert (perm["status"], perm["expiresAt"], perm["canCall"]) == ("permanent", None, False)


async def user_calls_and_is_declined(client: Any, meta: Any, user: str) -> None:
    """``user`` calls the business and the business declines (a missed call grants a
    callback as an answered one does)."""
    manager = client.app[MANAGER]
    mcall = await meta.user_calls(client, user)
    call = await until(lambda: manager.registry.by_engine_id(mcall.wacid), 3, "ringing")
    assert (await client.post("/call/hangup", json={"callID": call.id})).status == 200
    await wait_state(client, call.id, "ended", timeout=3)


async def test_expiry_callback_grant_and_automatic_revocation(cclient, meta):
    meta.perms.strict = True
    client = await cclient()
    manager = client.app[MANAGER]
    resp = await client.patch("/numbers/default/settings", json={"callbackPermission": "ENABLED"})
    assert resp.status == 200, await resp.text()
    async with manager.events.subscribe() as sub:
        # The user called with callback permission on: Meta grants 7 days by itself, with
        # its own webhook (the fake sends it, as Meta does; no test scripts it).
        await user_calls_and_is_declined(client, meta, USER)
        grant = json.loads((await next_event(sub, "call.permission")).to_json())
        assert (grant["response"], grant["source"], grant["permanent"]) == (
            "accept",
            "automatic",
            False,
        )
        assert meta.grants_sent == 1
        made = await client.post("/call/make", json={"phone": USER})
        assert made.status == 201
        # (One business call per user at a time: this one ends before the next.)
        call_id = (await made.json())["callID"]
        assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200

        # Seven days on, the grant has lapsed: Meta refuses the call again.
        meta.perms.offset = 7 * 86400 + 60
        resp = await client.post("/call/make", json={"phone": USER})
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "no_call_permission"
        perm = await (await client.get(f"/call/permissions/{USER}")).json()
        assert (perm["status"], perm["canCall"]) == ("no_permission", False)

        # The user calls again (a new grant), then three more of our calls go unanswered (we
        # give up on each before it is answered), the fourth in a row with the first: Meta
        # revokes the permission by itself (an automatic reject).
        await user_calls_and_is_declined(client, meta, USER)
        await next_event(sub, "call.permission")
        for _ in range(3):
            made = await client.post("/call/make", json={"phone": USER})
            assert made.status == 201, await made.text()
            call_id = (await made.json())["callID"]
            assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
        event = json.loads((await next_event(sub, "call.permission")).to_json())
    assert (event["response"], event["source"], event["expiresAt"]) == ("reject", "automatic", None)
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 403


async def test_no_callback_grant_while_callback_permission_is_off(cclient, meta):
    """Meta grants a callback only where the number's settings switch it on: a user's call
    to a number without it leaves them without permission (the bridge's call refused)."""
    meta.perms.strict = True
    client = await cclient()
    await user_calls_and_is_declined(client, meta, USER)
    assert meta.grants_sent == 0
    resp = await client.post("/call/make", json={"phone": USER})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "no_call_permission"


async def test_a_message_delivered_late_opens_no_window_it_did_not(cclient, meta):
    """Meta delivers a webhook again, or late (its retries): the user's message carries when
    it was written (``timestamp``), and its service window runs 24 h from then, not from the
    delivery. A message written 25 h ago and delivered now leaves the window closed: the
    request goes as the template given (the bridge sent the interactive one, which Meta
    refused with 131047, and the API answered 409 "give template" with a template given),
    and a call button is refused before Meta."""
    meta.perms.strict = True
    client = await cclient()
    meta.perms.offset = -25 * 3600  # the user wrote a day and an hour ago…
    late = meta.perms.user_writes(USER)
    meta.perms.offset = 0.0
    await deliver(client, meta, late)  # …and Meta delivers it now
    tmpl = {"name": "call_me", "language": "en_US"}
    resp = await client.post("/call/permissions", json={"phone": USER, "template": tmpl})
    assert resp.status == 202, await resp.text()
    assert meta.perms.sent[-1]["type"] == "template"
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call"})
    error = (await resp.json())["error"]
    assert resp.status == 409 and "not sent to Meta" in error["message"], error
    # The same message delivered again changes nothing; a new one opens the window.
    await deliver(client, meta, late)
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call"})
    assert resp.status == 409
    await deliver(client, meta, meta.perms.user_writes(USER))
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Call"})
    assert resp.status == 202, await resp.text()


async def test_bad_requests_and_hostile_replies(cclient, meta):
    client = await cclient()
    for body in [
        {},
        {"phone": "abc"},
        {"phone": USER, "template": {"name": "call_me"}},
        {"phone": USER, "template": {"name": "x", "language": "en_US", "extra": 1}},
        {"phone": USER, "to": USER},
    ]:
        resp = await client.post("/call/permissions", json=body)
        assert resp.status == 400, (body, resp.status)
        assert "error" in await resp.json()
    assert (await client.get("/call/permissions/not-a-phone")).status == 400
    # A template outside the window goes out as Meta's template message.
    resp = await client.post(
        "/call/permissions",
        json={"phone": USER, "template": {"name": "call_me", "language": "en_US"}},
    )
    assert resp.status == 202
    assert meta.perms.sent[-1]["template"] == {"name": "call_me", "language": {"code": "en_US"}}
    # Malformed replies are counted and change nothing; no event is published.
    engine = client.app[ENGINE]
    bad_before = engine.stats.bad_messages
    hostile = {
        "messages": [
            {"from": USER, "type": "interactive", "interactive": {"type": "call_permission_reply"}},
            {"from": 5, "type": "text"},
            "x",
        ]
    }
    async with client.app[MANAGER].events.subscribe() as sub:
        await deliver(client, meta, hostile)
        with pytest.raises(AssertionError):
            await next_event(sub, "call.permission", timeout=0.3)
    assert engine.stats.bad_messages == bad_before + 3


async def test_other_engines_have_no_permissions(make_client):
    client = await make_client()
    resp = await client.get(f"/call/permissions/{USER}")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 404


async def test_the_fake_refuses_what_meta_refuses(meta):
    """The fake is as strict as Meta, so a bridge that sends a wrong field name, a header on
    the interactive request or asks over the limit fails here as it would at Meta."""
    import aiohttp

    auth = {"Authorization": f"Bearer {meta.token}"}
    url = f"{meta.graph_url}/{meta.phone_number_id}"
    meta.perms.user(USER).last_inbound = meta.perms.now()  # the window is open
    good = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": USER,
        "type": "interactive",
        "interactive": {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
        },
    }
    wrong = [
        ({k: v for k, v in good.items() if k != "to"} | {"phone": USER}, 100),
        (good | {"interactive": good["interactive"] | {"header": {"type": "text"}}}, 100),
        (good | {"interactive": good["interactive"] | {"action": {"name": "call"}}}, 100),
        (good | {"type": "template", "template": {"name": "call_me", "lang": "en_US"}}, 100),
        (
            good | {"type": "template", "template": {"name": "x", "language": {"code": "en"}}},
            132001,
        ),
    ]
    async with aiohttp.ClientSession(headers=auth) as http:
        for body, code in wrong:
            async with http.post(f"{url}/messages", json=body) as resp:
                answer = await resp.json()
            assert resp.status == 400 and answer["error"]["code"] == code, (body, answer)
        async with http.post(f"{url}/messages", json=good) as resp:
            assert resp.status == 200 and (await resp.json())["messages"][0]["id"]
        async with http.post(f"{url}/messages", json=good) as resp:  # 1 per 24 h
            assert (await resp.json())["error"]["code"] == 138009
        async with http.get(f"{url}/call_permissions", params={"wa_id": USER}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == 100
        meta.perms.offset = 2 * 86400  # two days on: the window has closed
        async with http.post(f"{url}/messages", json=good) as resp:
            assert (await resp.json())["error"]["code"] == 131047


async def test_a_permission_is_the_number_s_that_asked(cclient, meta, tmp_path):
    """Meta keeps call permissions per business number and user: the user who granted the
    default number may be called from it, not from the app's other number (138006 there:
    403, the user must be asked through that number too)."""
    meta.add_number("2098765432", "second-token")
    for account in meta.accounts.values():
        account.perms.strict = True
    client = await cclient(data_dir=str(tmp_path))
    cloudapi = meta.number_fields("2098765432")
    body = {"phone": "+15550783000", "engine": "cloudapi", "cloudapi": cloudapi}
    resp = await client.post("/numbers", json=body)
    assert resp.status == 201, await resp.text()
    second = (await resp.json())["numberID"]
    await deliver(client, meta, meta.perms.user_writes(USER))
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 202, await resp.text()
    await deliver(client, meta, meta.perms.user_answers(USER, "accept"))
    perm = await (await client.get(f"/call/permissions/{USER}")).json()
    assert (perm["status"], perm["canCall"]) == ("temporary", True)
    perm = await (await client.get(f"/call/permissions/{USER}?from={second}")).json()
    assert (perm["status"], perm["canCall"]) == ("no_permission", False)
    resp = await client.post("/call/make", json={"phone": USER, "from": second})
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "no_call_permission", error
    made = await client.post("/call/make", json={"phone": USER})
    assert made.status == 201, await made.text()
    call_id = (await made.json())["callID"]
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
