"""Schemathesis hooks for the live-bridge run (tests/test_openapi.py): the check that every 4xx
carries the JSON error body, and no call id that is really another route's name."""

from __future__ import annotations

from typing import Any

import schemathesis

RESERVED = {"status", "events", "audio-assets"}


@schemathesis.check
def json_error_body_on_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except Exception as exc:
        raise AssertionError(f"{response.status_code} without a JSON body: {exc}") from None
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    return None


@schemathesis.hook
def filter_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> bool:
    """``/call/events`` is an endless stream: never reach it through ``/call/{callID}``."""
    value = (path_parameters or {}).get("callID")
    return not (isinstance(value, str) and value.strip("/").split("/")[0] in RESERVED)


LOCAL = "http://127.0.0.1"
URL_FIELDS = {"url", "graphURL", "webhookURL"}
ENGINES_WITH_A_PEER = {"cloudapi", "zuckzapgo", "wadial"}


def _loopback_sip(value: Any) -> bool:
    """A SIP URI whose host is 127.0.0.1 (any user, port and parameters)."""
    if not isinstance(value, str) or not value.startswith(("sip:", "sips:")):
        return isinstance(value, str) and ":" not in value  # no URI: refused with a 400
    host = value.split(":", 1)[1].split("@")[-1]
    return host == "127.0.0.1" or host.startswith(("127.0.0.1:", "127.0.0.1;"))


def _reaches_out(value: Any) -> bool:
    """Whether a body would make the bridge reach a host other than loopback: a number whose
    engine connects somewhere (its URL, Meta's Graph for the token check), a tenant's webhook."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in URL_FIELDS and isinstance(item, str) and not item.startswith(LOCAL):
                return True
            if key == "engine" and item in ENGINES_WITH_A_PEER:
                return True
            if key in ENGINES_WITH_A_PEER and isinstance(item, dict):
                return True
            if key == "uri" and not _loopback_sip(item):
                return True  # a trunk (or a SIP participant) only ever at 127.0.0.1
            if _reaches_out(item):
                return True
    if isinstance(value, list):
        return any(_reaches_out(item) for item in value)
    return False


REACHING = ("/numbers", "/tenants", "/trunks", "/call/participants", "/routes")
"""Operations whose bodies name hosts the bridge then connects to on its own (an engine, a
tenant's webhook, a PBX, a route's ``sip`` step); other bodies' URLs (a fork's, a model's) are
refused by the bridge's allow-lists before any connection."""


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    """Tests send traffic to loopback only: no generated number, tenant or trunk may point the
    bridge at another host."""
    operation = getattr(ctx, "operation", None)
    path = str(getattr(operation, "path", "") or "")
    return not (path.startswith(REACHING) and _reaches_out(body))
