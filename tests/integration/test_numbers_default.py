"""The default number (``BRIDGE_ENGINE``'s) can do what any number can (issue 60): its
recording policy and label through the API (``PATCH /numbers/default``), stored, used after a
restart too (``bridge/numbers/defined.py``: a field no setting defines is the API's)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.api.keys import RECORDINGS

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def dclient(make_client, tmp_path):
    """``await dclient(**settings)``: a bridge on the simulator over one data dir (a second
    call is a restart on the same store)."""

    async def factory(**kw: Any) -> Any:
        opts = {"api_tokens": ("admin-token",), "data_dir": str(tmp_path / "data"), **kw}
        return await make_client(**opts)

    (tmp_path / "data").mkdir()
    return factory


async def _call(client) -> str:
    resp = await client.post("/call/make", json={"phone": "5521999999999"}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 201 and body["numberID"] == "default", body
    return str(body["callID"])


async def _record(client, call_id: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/call/record", json={"callID": call_id}, headers=ADMIN)
    return resp.status, await resp.json()


async def _patch(client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.patch("/numbers/default", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def test_the_api_forbids_recording_on_the_default_number(dclient):
    client = await dclient()
    status, shown = await _patch(client, {"recording": "forbidden", "label": "front desk"})
    assert status == 200 and shown["recording"] == "forbidden", shown
    assert shown["label"] == "front desk"
    call_id = await _call(client)
    status, body = await _record(client, call_id)
    assert status == 403 and body["error"]["code"] == "recording_forbidden", body
    assert "number default" in body["error"]["message"]
    assert not client.app[RECORDINGS].index

    # Kept in the store: the same after a restart.
    again = await dclient()
    shown = await (await again.get("/numbers/default", headers=ADMIN)).json()
    assert (shown["recording"], shown["label"]) == ("forbidden", "front desk")
    status, body = await _record(again, await _call(again))
    assert status == 403 and body["error"]["code"] == "recording_forbidden", body
    # Allowed again through the API: the call records.
    status, shown = await _patch(again, {"recording": "allowed"})
    assert status == 200 and shown["recording"] == "allowed"
    call_id = await _call(again)
    status, body = await _record(again, call_id)
    assert status == 201, body
