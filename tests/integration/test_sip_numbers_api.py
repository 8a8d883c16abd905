"""A Cloud API number put on Meta's SIP road at run time (issue 46): what the API refuses, with
a clear 4xx (the calls themselves: ``tests/sip/test_sipp_numbers.py``)."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from typing import Any

from bridge.api.keys import SWITCHBOARD
from bridge.sip import Request, Response
from bridge.sip.transport import Connection

from ..support.tls import TestCA
from ..support.waits import until
from .test_numbers import ADMIN, bearer, new_tenant, post


def sip_number(meta: Any, **block: Any) -> dict[str, Any]:
    return {
        "phone": "+15550004444",
        "engine": "cloudapi",
        "cloudapi": {
            "phoneNumberID": "2098765499",
            "accessToken": "t",
            "appSecret": meta.app_secret,
            "verifyToken": "v",
            "graphURL": meta.graph_url,
            "signalling": "sip",
            **block,
        },
    }


async def test_a_sip_number_needs_a_host_name_and_a_certificate_that_loads(
    make_client, meta, tmp_path
):
    client = await make_client(
        api_tokens=("admin-token",), data_dir=str(tmp_path), sip_listen="127.0.0.1:0"
    )
    pair = TestCA(tmp_path).issue("own", "sip.customer.example")
    own = {"sipHostname": "sip.customer.example", "sipCert": str(pair.cert)}
    own["sipKey"] = str(pair.key)
    cases = [
        ({}, 400, "sip_not_configured"),  # no BRIDGE_SIP_HOSTNAME, no sipHostname
        ({"sipHostname": "sip.customer.example"}, 400, "sip_not_configured"),  # no certificate
        ({"sipHostname": "bad_name!"}, 400, "invalid_engine"),
        ({"sipCert": str(pair.cert), "sipKey": str(pair.key)}, 400, "invalid_engine"),
        ({**own, "sipKey": str(pair.cert)}, 400, "sip_not_configured"),  # the pair does not load
        ({**own, "sipKey": None}, 400, "invalid_engine"),
    ]
    for block, status, code in cases:
        body = await post(client, "/numbers", sip_number(meta, **block), status=status)
        assert body["error"]["code"] == code, (block, body)
    tenant = await new_tenant(client, "acme")
    body = await post(client, "/numbers", sip_number(meta, **own), bearer(tenant["apiKey"]), 403)
    assert "sipCert" in body["error"]["message"]
    made = await post(client, "/numbers", sip_number(meta, **own))
    assert made["cloudapi"]["signalling"] == "sip"
    assert made["cloudapi"]["sipHostname"] == "sip.customer.example"


async def _invite_status(port: int, ca: TestCA, hostname: str, number: str) -> int:
    """The status the listener answers Meta's INVITE for ``number`` with, over TLS."""
    ctx = ssl.create_default_context(cafile=str(ca.path))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=hostname
    )
    conn = Connection(reader, writer, inbound=False)
    tag = secrets.token_hex(4)  # a new transaction each time (not a retransmission)
    try:
        req = Request(method="INVITE", uri=f"sip:+{number}@{hostname};transport=tls")
        req.add("Via", f"SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK{tag}")
        req.add("Max-Forwards", "70")
        req.add("From", "<sip:+15550001111@wa.meta.vc>;tag=meta1")
        req.add("To", f"<sip:+{number}@{hostname}>")
        req.add("Call-ID", f"outgoing:wacid.{tag}")
        req.add("CSeq", "1 INVITE")
        req.add("Contact", "<sip:+15550001111@127.0.0.1:5999;transport=tls>")
        req.add("Content-Type", "application/sdp")
        req.body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/SAVP 111\r\n"
        await conn.send_raw(req.to_bytes())
        while True:
            resp = await asyncio.wait_for(conn.read(), 5)
            assert isinstance(resp, Response), resp
            if resp.status >= 200:
                return resp.status
    finally:
        writer.close()


async def test_a_sip_number_whose_phone_changes_takes_meta_s_invites_for_the_new_one(
    make_client, meta, tmp_path
):
    """The phone is the SIP line's number (the Request-URI user Meta's INVITEs name, the From
    of calls out): a PATCH of it rebuilds the number's engine. Before, the engine kept the old
    number: Meta's INVITEs for the new phone were 404 (no such number), the old one's served
    on."""
    client = await make_client(
        api_tokens=("admin-token",), data_dir=str(tmp_path), sip_listen="127.0.0.1:0"
    )
    ca = TestCA(tmp_path)
    pair = ca.issue("own", "sip.customer.example")
    own = {"sipHostname": "sip.customer.example", "sipCert": str(pair.cert)}
    made = await post(client, "/numbers", sip_number(meta, **own, sipKey=str(pair.key)))
    [door] = client.app[SWITCHBOARD].sip_doors.open.values()
    port = door.ua.port
    # Served, without a SIP password yet: 403 (404 is a number the listener does not serve).
    assert await _invite_status(port, ca, "sip.customer.example", "15550004444") == 403
    resp = await client.patch(
        f"/numbers/{made['numberID']}", json={"phone": "+15550005555"}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    assert await _invite_status(port, ca, "sip.customer.example", "15550005555") == 403

    async def old_one_gone() -> bool:  # once the old engine, retired, has closed its line
        return await _invite_status(port, ca, "sip.customer.example", "15550004444") == 404

    await until(old_one_gone, 5.0, "the old phone no longer served")


async def test_a_sip_numbers_old_phone_takes_no_new_call_while_its_old_engine_ends_its_calls(
    make_client, meta, tmp_path
):
    """A PATCH of the phone while a call is live on the number: the call stays on the old
    engine until it ends (its line keeps its dialogs), but that engine is retired. Before, the
    old phone's line stayed in the listener until the old engine closed, so Meta's new INVITE
    to the old phone meanwhile was taken by the retired engine (here challenged: 403, no
    password yet); now it gets the 404 of a number the listener does not serve."""
    client = await make_client(
        api_tokens=("admin-token",), data_dir=str(tmp_path), sip_listen="127.0.0.1:0"
    )
    ca = TestCA(tmp_path)
    pair = ca.issue("own", "sip.customer.example")
    own = {"sipHostname": "sip.customer.example", "sipCert": str(pair.cert)}
    made = await post(client, "/numbers", sip_number(meta, **own, sipKey=str(pair.key)))
    switchboard = client.app[SWITCHBOARD]
    [door] = switchboard.sip_doors.open.values()
    port = door.ua.port
    old = switchboard.engines[made["numberID"]]
    switchboard.engines_in_use = lambda: [old]  # a call live on it (the manager's view)
    resp = await client.patch(
        f"/numbers/{made['numberID']}", json={"phone": "+15550005555"}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    assert await _invite_status(port, ca, "sip.customer.example", "15550005555") == 403
    assert await _invite_status(port, ca, "sip.customer.example", "15550004444") == 404
    assert old.line in door.members  # its live call's dialogs still reach it
    await asyncio.sleep(0.7)  # the retired engines' round: kept while its call lasts
    assert [r.engine for r in switchboard.retired] == [old]
    switchboard.engines_in_use = list  # the call ended
    await until(lambda: old.line not in door.members, 3, "the old engine closed")
