"""Every operation of the OpenAPI document that takes a body, sent the bodies apps get wrong
(not JSON, an array, every field of the wrong type, too large, half sent) against the real
app: each is
answered 4xx with the one error body, with a status the document lists for that operation —
never a 500, an HTML page, a hang or a status the contract does not name."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge.api.keys import ENGINE
from bridge.api.schema import _schema, call_body_routes, openapi_document

from .test_api import assert_error, make_call

PLAY_MAX = 4096
"""``BRIDGE_PLAY_URL_MAX_BYTES`` here, so that ``/call/play``'s larger body bound is passed
by a small body too."""

OVERSIZE = 4 * PLAY_MAX + 70_000
"""Past every JSON bound (64 KiB; ``/call/play``'s, its audio in base64 and 64 KiB)."""


def _body_operations() -> list[tuple[str, str]]:
    doc = openapi_document()
    return [
        (method, path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]


BEFORE_THE_BODY = {
    # Internal routes: a request without the internal secret is no route at all.
    ("post", "/call/adopt"): (404, "not_found"),
    ("post", "/call/handover"): (404, "not_found"),
    # The sim engine's number has none of Meta's settings: refused before the body is read.
    ("patch", "/numbers/{numberID}/settings"): (404, "settings_not_supported"),
    ("post", "/numbers/{numberID}/sip/enable"): (404, "settings_not_supported"),
    ("post", "/numbers/{numberID}/sip/rotate"): (404, "settings_not_supported"),
    ("post", "/numbers/{numberID}/call-button"): (404, "call_button_not_supported"),
}
"""Operations answered before their body is read, with what they answer."""

READ_THEN_REFUSED = {
    # The sim engine takes no webhooks, whatever they carry (once they arrived whole).
    ("post", "/engine/webhook"): (400, "webhook_not_supported"),
}
"""Operations that read their body and then refuse it whatever it is."""


def _wrong_types(method: str, path: str) -> bytes:
    """A body with every field the schema names, each a list of lists (no field is that)."""
    op = openapi_document()["paths"][path][method]
    schema = _schema(op["requestBody"]["content"]["application/json"]["schema"])
    return json.dumps({name: [[1]] for name in schema.get("properties", {})}).encode()


PROBES: dict[str, Any] = {
    "not JSON": (b"{callID: nope", 400, "invalid_json"),
    "an array": (b'[{"callID": "x"}]', 400, "invalid_json"),
    "wrong types": (_wrong_types, 400, None),  # the route's code: invalid_settings, …
    "too large": (b'{"pad": "' + b"a" * OVERSIZE + b'"}', 413, "too_large"),
}


async def _half_sent(client: Any, method: str, url: str) -> tuple[int, dict[str, Any]]:
    """``url`` asked with half of its body sent, on a raw socket: the status and JSON body
    of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = b'{"callID": "c1", "pad": "0123456789"}'
    writer.write(
        f"{method.upper()} {url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        payload = await asyncio.wait_for(reader.readexactly(length), 5)
    finally:
        writer.close()
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.parametrize(
    ("method", "path"), _body_operations(), ids=[f"{m} {p}" for m, p in _body_operations()]
)
async def test_every_bad_body_is_a_documented_4xx_with_the_error_body(
    make_client, method: str, path: str
) -> None:
    client = await make_client(play_url_max_bytes=PLAY_MAX, body_timeout=0.5)
    call = await make_call(client)
    tenant = await (await client.post("/tenants", json={"name": "t"})).json()
    trunk = await (await client.post("/trunks", json={"name": "k", "uri": "sip:127.0.0.1"})).json()
    ids = {
        "callID": call["callID"],
        "numberID": "default",
        "tenantID": tenant["tenantID"],
        "trunkID": trunk["trunkID"],
        "agentID": "a1",
    }
    await _probe(client, method, path, path.format(**ids))


async def _probe(client: Any, method: str, path: str, url: str) -> None:
    """Each of :data:`PROBES` and a half-sent body to ``url``: the answer expected, with the
    error body, at a status the document lists for the operation."""
    documented = set(openapi_document()["paths"][path][method]["responses"])
    before = BEFORE_THE_BODY.get((method, path)) if client.app[ENGINE].name == "sim" else None
    for name, (body, status, code) in PROBES.items():
        raw = body(method, path) if callable(body) else body
        status, code = before or READ_THEN_REFUSED.get((method, path), (status, code))
        resp = await asyncio.wait_for(
            client.request(method, url, data=raw, headers={"Content-Type": "application/json"}),
            5,
        )
        assert resp.content_type == "application/json", (name, resp.status, await resp.text())
        payload = await resp.json()
        assert resp.status == status, (name, payload)
        assert code is None or payload["error"]["code"] == code, (name, payload)
        assert_error(payload)
        assert str(resp.status) in documented, f"{name}: {resp.status} is not in the document"
    # A body never sent whole: 408 once BRIDGE_BODY_TIMEOUT passes, not a handler held.
    status, payload = await _half_sent(client, method, url)
    assert (status, payload["error"]["code"]) == (before or (408, "body_timeout")), payload
    assert_error(payload)
    assert str(status) in documented, f"half sent: {status} is not in the document"


META_OPERATIONS = [
    ("patch", "/numbers/{numberID}/settings"),
    ("post", "/numbers/{numberID}/sip/enable"),
    ("post", "/numbers/{numberID}/sip/rotate"),
    ("post", "/numbers/{numberID}/call-button"),
    ("post", "/call/permissions"),
]


@pytest.mark.parametrize(("method", "path"), META_OPERATIONS, ids=[p for _, p in META_OPERATIONS])
async def test_the_cloud_api_numbers_routes_answer_bad_bodies_as_documented(
    make_client, meta, method: str, path: str
) -> None:
    """The routes the sim engine answers 404 before their body (Meta's settings, its SIP
    road, the call button, call permissions), on a Cloud API number (the fake Meta)."""
    client = await make_client(**meta.bridge_settings(), body_timeout=0.5)
    await _probe(client, method, path, path.format(numberID="default"))


def _call_operations() -> list[tuple[str, str]]:
    """The operations about one call: a ``{callID}`` in the path, or a ``callID`` the body
    must carry (what a cluster's routing finds the call's owner by)."""
    return [
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if "{callID}" in path or (method == "post" and path in call_body_routes())
    ]


async def test_every_call_route_says_503_when_redis_is_away_as_the_document_does(
    make_client, redis
) -> None:
    """With a cluster's Redis away, a request about a call cannot find its owner: 503
    ``directory_unavailable`` with ``Retry-After``, on every route about a call. The document
    listed no 503 for thirteen of them (mute, hold, DTMF, the WebRTC close, transfers, the
    participant's role, stopping a playback, the streams' and agents' routes, a call's
    snapshot and its stats)."""
    client = await make_client(directory=redis.url, internal_secret="s" * 32)
    await redis.stop()
    undocumented = []
    for method, path in _call_operations():
        url = path.format(callID="c1", agentID="a1", streamId="s1")
        body = {"callID": "c1"} if method == "post" else None
        resp = await asyncio.wait_for(client.request(method, url, json=body), 5)
        payload = await resp.json()
        assert resp.status == 503, (method, path, payload)
        assert payload["error"]["code"] == "directory_unavailable", payload
        assert resp.headers["Retry-After"] == "5"
        assert_error(payload)
        if "503" not in openapi_document()["paths"][path][method]["responses"]:
            undocumented.append(f"{method.upper()} {path}")
    assert len(_call_operations()) > 20
    assert undocumented == []


def _open_operations() -> list[tuple[str, str]]:
    """The operations the document asks no API token for (``security: []``, or none)."""
    return [
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method, op in item.items()
        if not op.get("security")
    ]


async def test_the_open_operations_answer_without_a_token_as_the_document_says(
    make_client,
) -> None:
    """On a bridge with API tokens, each operation the document leaves open, asked without a
    token, answers a status the document lists. ``GET /engine/webhook`` (Meta's subscription
    check, which its verify token authenticates) was 401 on every bridge with no Cloud API
    number, where the document says open and 404."""
    client = await make_client(api_tokens=("tok",))
    wrong = []
    for method, path in _open_operations():
        url = path.format(filename="bridge-client.js")
        query = {"hub.mode": "subscribe", "hub.verify_token": "v", "hub.challenge": "42"}
        resp = await asyncio.wait_for(client.request(method, url, params=query), 5)
        if str(resp.status) not in openapi_document()["paths"][path][method]["responses"]:
            wrong.append(f"{method.upper()} {path}: {resp.status} {await resp.text()}")
        elif resp.status >= 400:
            assert_error(await resp.json())
    assert {"/engine/webhook", "/healthz", "/"} <= {path for _, path in _open_operations()}
    assert wrong == []
