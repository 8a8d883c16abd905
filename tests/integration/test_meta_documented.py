"""Statements of Meta's Cloud API Calling docs that a real Meta exercises, each checked against
the bridge with the fake as strict as Meta: the call actions Meta refuses, Graph calling on a
number Meta has on SIP (131055), and what a user's call does to their service window and to
the permission-request limits."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ..fakes.cloudapi import MetaCall, MetaPeer
from .test_call_permissions import deliver
from .test_engine_cloudapi import the_live_call

USER = "5521966660000"


@pytest.fixture
async def client(make_client, meta) -> Any:
    return await make_client(**meta.bridge_settings())


async def test_the_fake_refuses_the_call_actions_meta_refuses(meta) -> None:
    """``pre_accept``, ``accept`` and ``reject`` answer a user's call (never one the business
    placed), ``pre_accept`` once, and both carry ``session`` ``{sdp_type: "answer", sdp}``;
    ``biz_opaque_callback_data`` is at most 512 characters; a parameter the action does not
    take is refused (the fake ignored it). Each refusal is Meta's 100 (the
    fake said 138002, the number's concurrent-call limit, for a second ``pre_accept``;
    answered a ``session``-less ``pre_accept`` with a 500; took the rest)."""
    sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\n"  # past Meta's fingerprint check
    ours = MetaCall("wacid.BIC", USER, "BUSINESS_INITIATED", MetaPeer(0), state="calling")
    theirs = MetaCall("wacid.UIC", USER, "USER_INITIATED", MetaPeer(0))
    theirs.pre_accept_sdp = sdp
    meta.meta_calls.update({c.wacid: c for c in (ours, theirs)})
    answer = {"sdp_type": "answer", "sdp": sdp}
    refused = [
        ({"action": "pre_accept", "call_id": ours.wacid, "session": answer}, "user-initiated"),
        ({"action": "accept", "call_id": ours.wacid, "session": answer}, "user-initiated"),
        ({"action": "reject", "call_id": ours.wacid}, "user-initiated"),
        ({"action": "pre_accept", "call_id": theirs.wacid, "session": answer}, "not allowed"),
        ({"action": "accept", "call_id": theirs.wacid}, "sdp_type"),
        (
            {
                "action": "accept",
                "call_id": theirs.wacid,
                "session": {"sdp_type": "offer", "sdp": sdp},
            },
            "sdp_type",
        ),
        (
            {
                "action": "connect",
                "to": USER,
                "session": {"sdp_type": "offer", "sdp": sdp},
                "biz_opaque_callback_data": "x" * 513,
            },
            "biz_opaque_callback_data",
        ),
        # Each action takes its own parameters: Meta's "not a valid parameter" for another.
        ({"action": "reject", "call_id": theirs.wacid, "session": answer}, "session"),
        ({"action": "terminate", "call_id": theirs.wacid, "to": USER}, "to"),
        ({"action": "pre_accept", "call_id": theirs.wacid, "sdp": sdp}, "sdp"),
    ]
    url = f"{meta.graph_url}/{meta.phone_number_id}/calls"
    auth = {"Authorization": f"Bearer {meta.token}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        for body, why in refused:
            async with http.post(url, json={"messaging_product": "whatsapp", **body}) as resp:
                error = (await resp.json())["error"] if resp.status < 500 else {}
            assert resp.status == 400 and error["code"] == 100, (body, resp.status, error)
            assert why in error["message"], (body, error)
        assert (ours.state, theirs.state, theirs.accepted) == ("calling", "ringing", False)
        # With SIP on at Meta, the number's Graph calling actions are refused: 131055.
        meta.account.calling["sip"] = {"status": "ENABLED", "servers": []}
        terminate = {"messaging_product": "whatsapp", "action": "terminate"}
        async with http.post(url, json={**terminate, "call_id": theirs.wacid}) as resp:
            assert (await resp.json())["error"]["code"] == 131055


async def test_a_graph_bridge_on_a_number_meta_has_on_sip_is_told_why(client, meta) -> None:
    """One number is Graph or SIP, never both: ``/call/make`` on Graph signalling for a number
    whose SIP is on at Meta is Meta's 131055, said as ``wrong_signalling`` with what to set
    (the fake took the call before)."""
    meta.account.calling["sip"] = {"status": "ENABLED", "servers": [{"hostname": "sip.x"}]}
    resp = await client.post("/call/make", json={"phone": USER})
    error = (await resp.json())["error"]
    assert resp.status == 502 and error["code"] == "wrong_signalling", error
    assert error["details"]["metaCode"] == 131055
    assert "BRIDGE_CLOUDAPI_SIGNALLING=sip" in error["message"]
    assert (await (await client.get("/call/status")).json())["calls"] == []


async def test_a_users_call_opens_the_window_for_a_permission_request(client, meta) -> None:
    """Any inbound call opens or refreshes the user's 24 h customer service window: a user
    who called and never wrote is asked with the interactive request, and Meta takes it
    (the fake refused it with 131047, as if only messages opened the window)."""
    meta.perms.strict = True
    await meta.user_calls(client, USER)
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 202, await resp.text()
    sent = meta.perms.sent[-1]
    assert (sent["type"], sent["interactive"]["type"]) == ("interactive", "call_permission_request")
    # Two days on, the window the call opened has closed: Meta refuses the request again.
    meta.perms.offset = 2 * 86400
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "outside_service_window"


async def test_a_users_call_that_connects_resets_the_request_limits(client, meta) -> None:
    """Permission requests are limited per user (1 a day), and both limits reset when any
    call between the business and the user connects: after the user's own call is accepted
    the business may ask again at once (the fake reset them for its own calls only: 138009,
    a 429 telling to wait a day)."""
    meta.perms.strict = True
    await deliver(client, meta, meta.perms.user_writes(USER))
    assert (await client.post("/call/permissions", json={"phone": USER})).status == 202
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 429  # the day's one request is used
    mcall = await meta.user_calls(client, USER)
    call = await the_live_call(client)
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 200, await resp.text()
    assert mcall.accepted
    resp = await client.post("/call/permissions", json={"phone": USER})
    assert resp.status == 202, await resp.text()


async def test_a_call_past_the_numbers_concurrent_calls_is_told_to_wait(client, meta) -> None:
    """Meta takes up to 1 000 concurrent calls a number, either direction: past that a
    ``connect`` is 138002, which the API says as 429 ``number_at_capacity`` with a
    ``Retry-After`` (the fake never counted; 1 here so one user's call fills it)."""
    meta.concurrent_calls = 1
    await meta.user_calls(client, "15550001111")
    await the_live_call(client)
    resp = await client.post("/call/make", json={"phone": USER})
    error = (await resp.json())["error"]
    assert resp.status == 429 and error["code"] == "number_at_capacity", error
    assert error["details"]["metaCode"] == 138002 and int(resp.headers["Retry-After"]) > 0


ARABIC_INDIC = "٥٥٢١٩٦٦٦٦٠٠٠٠"  # USER in Arabic-Indic digits: Unicode digits, not ASCII ones


async def test_a_phone_in_digits_other_than_ascii_is_refused_before_meta(client, meta) -> None:
    """Meta names a user by their WhatsApp id in ASCII digits (``to``, ``user_wa_id``): a
    phone typed in other digits (Arabic-Indic, from a form in an Arabic locale) is a 400
    ``invalid_phone`` on every route that names a user, and nothing goes to Meta (it went as
    ``to``, Meta refused it, and the app got a 502 ``engine_error``); the fake refuses it
    as Meta does."""
    routes = [
        ("post", "/call/make", {"phone": ARABIC_INDIC}),
        ("post", "/call/permissions", {"phone": ARABIC_INDIC}),
        ("post", "/numbers/default/call-button", {"to": ARABIC_INDIC, "text": "hi"}),
        ("get", f"/call/permissions/{ARABIC_INDIC}", None),
    ]
    for method, path, body in routes:
        resp = await getattr(client, method)(path, **({"json": body} if body else {}))
        error = (await resp.json()).get("error", {})
        assert resp.status == 400 and error["code"] == "invalid_phone", (path, resp.status, error)
    assert meta.actions == [] and meta.permission_reads == 0
    url = f"{meta.graph_url}/{meta.phone_number_id}/calls"
    auth = {"Authorization": f"Bearer {meta.token}"}
    offer = {"sdp_type": "offer", "sdp": "v=0\r\na=fingerprint:sha-256 AB:CD\r\n"}
    body = {"messaging_product": "whatsapp", "action": "connect", "to": ARABIC_INDIC}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.post(url, json={**body, "session": offer}) as resp:
            error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == 100 and "to" in error["message"], error


async def test_the_fake_takes_a_call_action_only_through_the_calls_own_number(meta) -> None:
    """A call is its business number's: an action on it through another number of the app
    (its phone number id and token) is refused as a call Meta does not know there (the fake
    took it from any number's path)."""
    meta.add_number("222000", "token-b", phone="15550002222")
    theirs = MetaCall("wacid.UIC2", USER, "USER_INITIATED", MetaPeer(0))  # on the first number
    meta.meta_calls[theirs.wacid] = theirs
    body = {"messaging_product": "whatsapp", "action": "reject", "call_id": theirs.wacid}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer token-b"}) as http:
        async with http.post(f"{meta.graph_url}/222000/calls", json=body) as resp:
            error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == 138001, error
    assert theirs.state == "ringing"


async def test_a_permission_request_says_why_in_its_own_words(client, meta) -> None:
    """Meta's interactive call-permission request takes an optional ``body.text`` (no header
    or footer): ``POST /call/permissions`` passes ``text`` there (it had no way to say why it
    asks), a template (outside the window) carries its own; at most 1 024 characters, as Meta's
    interactive body, else a 400 naming the field. The fake refuses a body Meta refuses."""
    await deliver(client, meta, meta.perms.user_writes(USER))  # the window is open
    why = "We'd like to call you back about your order #1234."
    resp = await client.post("/call/permissions", json={"phone": USER, "text": why})
    assert resp.status == 202, await resp.text()
    assert meta.perms.sent[-1]["interactive"]["body"] == {"text": why}
    resp = await client.post("/call/permissions", json={"phone": USER, "text": "x" * 1025})
    error = (await resp.json())["error"]
    assert resp.status == 400 and "text" in error["message"], error
    # A user never heard from: the template, which has its own body.
    template = {"name": "call_me", "language": "en_US"}
    resp = await client.post(
        "/call/permissions", json={"phone": "5521966661111", "text": why, "template": template}
    )
    assert resp.status == 202, await resp.text()
    assert meta.perms.sent[-1]["type"] == "template" and "interactive" not in meta.perms.sent[-1]
    meta.perms.users[USER].requests.clear()
    url = f"{meta.graph_url}/{meta.phone_number_id}/messages"
    auth = {"Authorization": f"Bearer {meta.token}"}
    interactive = {"type": "call_permission_request", "action": {"name": "call_permission_request"}}
    base = {"messaging_product": "whatsapp", "to": USER, "type": "interactive"}
    async with aiohttp.ClientSession(headers=auth) as http:
        for body in ({"text": ""}, {"text": "x" * 1025}, {"text": why, "extra": 1}, "why"):
            sent = {**base, "interactive": {**interactive, "body": body}}
            async with http.post(url, json=sent) as resp:
                answer = await resp.json()
            assert resp.status == 400 and answer["error"]["code"] == 100, (body, answer)
