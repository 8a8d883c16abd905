"""Call permissions on a number on Meta's SIP road: its calls are SIP, but asking, reading and
hearing call permissions go over the Graph API (the fake Meta), as on a Graph number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.api.keys import ENGINE, MANAGER

from ..integration.test_call_permissions import deliver, next_event
from ..support.tls import TestCA
from .conftest import NUMBER, PASSWORD

USER = "5521966661111"


def sip_settings(tmp_path: Path) -> dict[str, Any]:
    ca = TestCA(tmp_path)
    cert = ca.issue("bridge", "localhost", "127.0.0.1")
    return {
        "engine": "cloudapi",
        "cloudapi_signalling": "sip",
        "sip_listen": "127.0.0.1:0",
        "sip_hostname": "localhost",
        "sip_cert": str(cert.cert),
        "sip_key": str(cert.key),
        "sip_number": NUMBER,
        "sip_password": PASSWORD,
        "sip_meta_uri": "sip:127.0.0.1:5999;transport=tls",
        "sip_ca": str(ca.path),
    }


async def test_a_sip_number_asks_reads_and_hears_call_permissions(make_client, meta, tmp_path):
    meta.perms.strict = True
    client = await make_client(**{**meta.bridge_settings(), **sip_settings(tmp_path)})
    assert type(client.app[ENGINE]).__name__ == "SipEngine"
    q = "hub.mode=subscribe&hub.challenge=42&hub.verify_token=verify-me"
    resp = await client.get(f"/engine/webhook?{q}")
    assert resp.status == 200 and await resp.text() == "42"

    await deliver(client, meta, meta.perms.user_writes(USER))
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.post("/call/permissions", json={"phone": USER})
        assert resp.status == 202, await resp.text()
        assert meta.perms.sent[-1]["type"] == "interactive"
        await deliver(client, meta, meta.perms.user_answers(USER, "accept", permanent=True))
        event = json.loads((await next_event(sub, "call.permission")).to_json())
    assert (event["phone"], event["response"], event["permanent"]) == (USER, "accept", True)
    perm = await (await client.get(f"/call/permissions/{USER}")).json()
    assert (perm["status"], perm["canCall"], perm["expiresAt"]) == ("permanent", True, None)
    # Unsigned webhooks are refused on the SIP road too.
    raw = json.dumps(meta.envelope(meta.perms.user_writes(USER), field="messages")).encode()
    assert (await meta.post(client, raw, signature=None)).status == 401


async def test_without_graph_settings_a_sip_number_has_no_permissions(make_client, tmp_path):
    client = await make_client(**sip_settings(tmp_path))
    resp = await client.get(f"/call/permissions/{USER}")
    body = await resp.json()
    assert resp.status == 404 and "BRIDGE_ENGINE_TOKEN" in body["error"]["message"]
    resp = await client.post("/engine/webhook", data=b"{}")
    assert resp.status == 401


async def test_a_sip_number_sends_the_call_button_inside_the_window(make_client, meta, tmp_path):
    """Meta's call button is a Graph message, so a number on the SIP road sends it as a Graph
    number does (its user's call then carries the payload in ``x-wa-meta-cta-payload``): sent
    inside the user's window, refused before Meta once the bridge saw it close. It was 404
    ``call_button_not_supported`` ("only a Cloud API number can") on every SIP number."""
    client = await make_client(**{**meta.bridge_settings(), **sip_settings(tmp_path)})
    await deliver(client, meta, meta.perms.user_writes(USER))  # the window opens
    button = {"to": USER, "text": "Call us", "payload": "order-42"}
    resp = await client.post("/numbers/default/call-button", json=button)
    body = await resp.json()
    assert resp.status == 202 and body["messageID"].startswith("wamid."), body
    [sent] = [a for a in meta.actions if a.get("edge") == "messages"]
    assert sent["to"] == USER and sent["interactive"]["type"] == "voice_call"
    assert sent["interactive"]["action"]["parameters"] == {"payload": "order-42"}
    meta.perms.offset = 25 * 3600  # a day and an hour on, for Meta and for the bridge
    client.app[ENGINE].graph_side.permissions.clock = meta.perms.now
    resp = await client.post("/numbers/default/call-button", json=button)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "outside_service_window", error
    assert "not sent to Meta" in error["message"]
    assert len([a for a in meta.actions if a.get("edge") == "messages"]) == 1


async def test_without_graph_settings_a_sip_number_sends_no_call_button(make_client, tmp_path):
    client = await make_client(**sip_settings(tmp_path))
    resp = await client.post("/numbers/default/call-button", json={"to": USER, "text": "Hi"})
    error = (await resp.json())["error"]
    assert resp.status == 404 and "BRIDGE_ENGINE_TOKEN" in error["message"], error
