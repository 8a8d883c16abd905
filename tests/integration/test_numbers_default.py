"""The default number (``BRIDGE_ENGINE``'s) can do what any number can (issue 60): its
recording policy through the API (``PATCH /numbers/default``) or the settings
(``BRIDGE_RECORDING_POLICY``), one rule between them (``bridge/numbers/defined.py``): a field a
setting defines is the operator's (409 ``defined_by_operator`` naming it), an unset one is the
API's and its stored value is used, after a restart too."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bridge.api.keys import RECORDINGS

from ..support.calls import wait_state

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


async def test_what_the_settings_define_on_the_default_number_is_refused(dclient, caplog):
    caplog.set_level(logging.INFO, logger="bridge.calls.following")
    client = await dclient(recording_policy="forbidden", record_all=True)
    shown = await (await client.get("/numbers/default", headers=ADMIN)).json()
    assert shown["recording"] == "forbidden"
    assert "createdAt" not in shown, shown  # nothing created it (was 0)
    call_id = await _call(client)
    await wait_state(client, call_id, "active", timeout=5, headers=ADMIN)
    status, body = await _record(client, call_id)
    assert status == 403 and body["error"]["code"] == "recording_forbidden", body
    # BRIDGE_RECORD_ALL did not record it either.
    said = f"call {call_id}: not recorded (forbidden by number default)"
    assert [r for r in caplog.records if r.getMessage() == said], caplog.text
    assert not client.app[RECORDINGS].index
    for patch, field, setting in [
        ({"recording": "allowed"}, "recording", "unset BRIDGE_RECORDING_POLICY"),
        ({"phone": "+15550783881"}, "phone", "change BRIDGE_SIP_NUMBER"),
        ({"sim": {"peer": "tone"}}, "sim.peer", "change BRIDGE_SIM_PEER"),
    ]:
        status, body = await _patch(client, patch)
        error = body["error"]
        assert status == 409 and error["code"] == "defined_by_operator", (patch, error)
        assert f"'{field}'" in error["message"] and setting in error["message"], error
    resp = await client.delete("/numbers/default", headers=ADMIN)  # was 400 bad_request
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "defined_by_operator", error
    assert "BRIDGE_ENGINE" in error["message"], error
    # The same value as the setting's is no change: accepted; a field no setting defines too.
    status, shown = await _patch(client, {"recording": "forbidden", "label": "lab"})
    assert status == 200 and shown["label"] == "lab", shown
    status, body = await _record(client, await _call(client))
    assert status == 403, body


async def test_a_stored_policy_the_setting_contradicts_is_ignored_and_said_once(dclient, caplog):
    client = await dclient()
    status, _ = await _patch(client, {"recording": "forbidden", "label": "kept"})
    assert status == 200
    caplog.set_level(logging.WARNING)
    again = await dclient(recording_policy="allowed")  # a restart, the operator's policy set
    shown = await (await again.get("/numbers/default", headers=ADMIN)).json()
    assert (shown["recording"], shown["label"]) == ("allowed", "kept")  # the label: the API's
    status, body = await _record(again, await _call(again))
    assert status == 201, body
    said = [r for r in caplog.records if "BRIDGE_RECORDING_POLICY" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, said
    assert "number default" in said[0].getMessage() and "recording" in said[0].getMessage()
