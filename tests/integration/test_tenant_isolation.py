"""Tenant isolation, generated from the OpenAPI document (issue 46): every operation the bridge
serves is called with *another* tenant's key, its path and body naming the first tenant's call,
number, tenant, key, recording and asset. None may succeed on them, none may answer with their
data, and the first tenant's call goes on untouched. A route added to the document is covered
without a line here; a route added without the document fails test_openapi."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from typing import Any

import numpy as np

from bridge.api.schema import openapi_document

from ..support.calls import wait_state
from .test_numbers import ADMIN, bearer, new_tenant, post, sim_number

OPS_ROUTES = {"/openapi.json", "/healthz", "/readyz", "/metrics", "/engine/webhook"}
"""Not a tenant's: operations' and Meta's own (no tenant data behind them)."""
PAGES = {"/", "/report", "/web/{filename}"}
"""The packaged pages and scripts: files, no data (the pages read the API with a key)."""
STREAMS = {"/call/events", "/agents/connect"}
"""Endless: the SSE filter has its own test (test_numbers.py)."""
INTERNAL = {"/call/handover", "/call/adopt"}
"""Between instances only (404 without the internal secret)."""
OWN_LISTS = {
    ("get", "/call/status"),
    ("get", "/numbers"),
    ("get", "/trunks"),
    ("get", "/call/reports"),
    ("get", "/call/audio-assets"),
    ("get", "/call/webrtc/config"),
    ("get", "/agents"),
    ("get", "/routes"),
}
"""Lists of the caller's own things and the caller's own settings: 200, without the other's."""


def wav_bytes() -> bytes:
    tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * 8000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    return out.getvalue()


async def test_no_route_gives_one_tenant_anothers_data(make_client, tmp_path) -> None:
    client = await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path))
    acme, globex = await new_tenant(client, "Acme"), await new_tenant(client, "Globex")
    acme_key, globex_key = bearer(acme["apiKey"]), bearer(globex["apiKey"])
    number = await sim_number(client, "+15556660001", 600.0, headers=acme_key)
    call = await post(client, "/call/make", {"phone": "5521999999999"}, headers=acme_key)
    cid = call["callID"]
    await wait_state(client, cid, "active", headers=acme_key)
    recording = await post(client, "/call/record", {"callID": cid}, headers=acme_key)
    await asyncio.sleep(0.3)
    stopped = await post(client, "/call/record/stop", {"callID": cid}, headers=acme_key, status=200)
    recording_id = stopped["recordings"][0]["recordingId"]
    assert recording["recording"] is True
    form = {"audio": wav_bytes()}
    resp = await client.post("/call/audio-assets", data=form, headers=acme_key)
    asset = await resp.json()
    assert resp.status == 201, asset
    trunk = await post(
        client,
        "/trunks",
        {"name": "pbx", "uri": "sip:127.0.0.1:5999", "keepalive": 0},
        headers=acme_key,
    )
    route = await post(
        client,
        "/routes",
        {"name": "acme", "numbers": "default", "steps": [{"hangup": {}}]},
        headers=acme_key,
    )
    secrets = {
        cid,
        number["numberID"],
        acme["tenantID"],
        recording_id,
        asset["assetId"],
        route["routeID"],
    }
    secrets.add(trunk["trunkID"])
    values = {
        "callID": cid,
        "numberID": number["numberID"],
        "trunkID": trunk["trunkID"],
        "tenantID": acme["tenantID"],
        "keyID": acme["keys"][0]["keyID"],
        "recordingId": recording_id,
        "assetId": asset["assetId"],
        "streamId": "st_1",
        "agentID": "ag_1",
        "routeID": route["routeID"],
        "phone": "5521999999999",
    }
    doc = openapi_document()
    tried = 0
    for path, item in doc["paths"].items():
        if path in OPS_ROUTES | PAGES | STREAMS | INTERNAL:
            continue
        for method, _op in item.items():
            url = path
            for name, value in values.items():
                url = url.replace("{" + name + "}", value)
            assert "{" not in url, f"no value for a parameter of {path}"
            body = {"callID": cid, "phone": "5521999999999", "from": number["numberID"]}
            if path in ("/numbers", "/call/sim/incoming"):
                body = {"phone": "+15556660002", "engine": "sim", "tenantID": acme["tenantID"]}
                if path == "/call/sim/incoming":
                    body = {"phone": "5521999999999", "to": number["numberID"]}
            kwargs: dict[str, Any] = {"headers": globex_key}
            if method in ("post", "patch", "put", "delete"):
                kwargs["data"] = json.dumps(body)
                kwargs["headers"] = {**globex_key, "Content-Type": "application/json"}
            resp = await client.request(method.upper(), url, **kwargs)
            text = await resp.text()
            tried += 1
            sent = url + str(kwargs.get("data", ""))  # an error may name what was asked for
            leaked = [s for s in secrets if s in text and s not in sent]
            if (method, path) in OWN_LISTS:
                assert resp.status == 200, (method, path, text[:300])
                assert not leaked, (method, path, leaked)
            else:
                assert resp.status in (400, 403, 404, 405), (method, path, resp.status, text[:300])
                assert not leaked, (method, path, leaked)
    every = sum(len(item) for item in doc["paths"].values())
    skipped = sum(
        len(item)
        for path, item in doc["paths"].items()
        if path in OPS_ROUTES | PAGES | STREAMS | INTERNAL
    )
    assert tried == every - skipped > 30  # every operation of the document but those named
    print(f"{tried} operations tried with another tenant's key")
    # Nothing Globex did touched Acme's call, number or asset.
    mine = await (await client.get(f"/call/{cid}", headers=acme_key)).json()
    assert mine["state"] == "active" and not mine["muted"] and not mine["held"]
    assert (await client.get(f"/numbers/{number['numberID']}", headers=acme_key)).status == 200
    listed = await (await client.get("/call/audio-assets", headers=acme_key)).json()
    assert [a["assetId"] for a in listed["assets"]] == [asset["assetId"]]
    resp = await client.get(f"/call/recordings/{recording_id}", headers=acme_key)
    assert resp.status == 200 and (await resp.read())[:4] == b"RIFF"
    assert (await client.get("/call/status", headers=ADMIN)).status == 200


async def test_a_tenants_reports_are_its_newest_among_everyones(make_client, tmp_path) -> None:
    """``GET /call/reports?limit=1`` with a tenant's key is that tenant's newest record, found
    among newer ones of others (the limit was taken across every tenant first: none came back
    when the newest record was another tenant's)."""
    client = await make_client(
        api_tokens=("admin-token",), data_dir=str(tmp_path), call_reports=True
    )
    acme, globex = await new_tenant(client, "Acme"), await new_tenant(client, "Globex")
    acme_key, globex_key = bearer(acme["apiKey"]), bearer(globex["apiKey"])
    await sim_number(client, "+15556660001", 600.0, headers=acme_key)
    await sim_number(client, "+15556660002", 700.0, headers=globex_key)
    made: dict[str, list[str]] = {"acme": [], "globex": []}
    for who, key in (("acme", acme_key), ("globex", globex_key), ("globex", globex_key)):
        call = await post(client, "/call/make", {"phone": "5521999999999"}, headers=key)
        await wait_state(client, call["callID"], "active", headers=key)
        await post(client, "/call/hangup", {"callID": call["callID"]}, headers=key, status=200)
        made[who].append(call["callID"])

    async def listed(key: dict[str, str], limit: int) -> list[str]:
        resp = await client.get(f"/call/reports?limit={limit}", headers=key)
        return (await resp.json())["reports"]

    await until_stored(lambda: listed(ADMIN, 3), 3)
    assert await listed(acme_key, 1) == made["acme"]
    assert await listed(globex_key, 5) == made["globex"][::-1]
    assert len(await listed(ADMIN, 2)) == 2


async def until_stored(read: Any, count: int) -> None:
    for _ in range(50):
        if len(await read()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} records stored")


async def test_a_forwarded_request_is_the_tenant_the_forwarding_worker_found(
    make_client, tmp_path
) -> None:
    """A request another worker forwards keeps the principal that worker found for its token
    (``X-Bridge-Tenant``). Re-deriving it here served a tenant's key this worker did not know
    yet (a key minted a moment ago: the catalog reaches each worker in ~0.1 s) as the
    service's: every tenant's calls. Without the header (an older worker), an unknown key is
    refused; from a client, the header is nobody's word."""
    secret = "s" * 32
    client = await make_client(
        api_tokens=("admin-token",), data_dir=str(tmp_path), internal_secret=secret
    )
    await post(client, "/call/make", {"phone": "5521999999999"})  # the service's call
    acme = await new_tenant(client, "Acme")
    forwarded = {"X-Bridge-Internal": secret, "Authorization": "Bearer key_not_here_yet"}

    async def listed(headers: dict[str, str]) -> tuple[int, list]:
        resp = await client.get("/call/status", headers=headers)
        body = await resp.json()
        return resp.status, body.get("calls", [])

    assert await listed({**forwarded, "X-Bridge-Tenant": acme["tenantID"]}) == (200, [])
    status, calls = await listed({**forwarded, "X-Bridge-Tenant": ""})  # the service's token
    assert status == 200 and len(calls) == 1
    assert (await listed(forwarded))[0] == 401  # an older worker's: the key unknown here
    own = bearer(acme["apiKey"])
    assert await listed({**own, "X-Bridge-Tenant": ""}) == (200, [])  # not the service's


def test_the_forwarding_worker_names_the_principal_and_drops_a_clients_own() -> None:
    """What a client sends as an instance's header, in any case, is not forwarded: the target
    reads the first it finds, and a client's ``x-bridge-tenant:`` (empty: the service) before
    the forwarder's would have made a tenant's request the service's."""
    from aiohttp.test_utils import make_mocked_request

    from bridge.api import routing
    from bridge.api.tenancy import PRINCIPAL, Principal

    request = make_mocked_request(
        "GET",
        "/call/status",
        headers={
            "Authorization": "Bearer key_acme",
            "x-bridge-tenant": "",
            "x-bridge-internal": "guess",
            "X-BRIDGE-OWNER": "w9",
        },
    )
    request[PRINCIPAL] = Principal("ten_acme")
    headers = routing._forward_headers(request, "s" * 32, "w2")
    instance = {k: v for k, v in headers.items() if k.lower().startswith("x-bridge-")}
    assert instance == {
        "X-Bridge-Internal": "s" * 32,
        "X-Bridge-Owner": "w2",
        "X-Bridge-Tenant": "ten_acme",
    }
    assert headers["Authorization"] == "Bearer key_acme"
