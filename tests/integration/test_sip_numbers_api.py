"""A Cloud API number put on Meta's SIP road at run time (issue 46): what the API refuses, with
a clear 4xx (the calls themselves: ``tests/sip/test_sipp_numbers.py``)."""

from __future__ import annotations

from typing import Any

from ..support.tls import TestCA
from .test_numbers import bearer, new_tenant, post


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
