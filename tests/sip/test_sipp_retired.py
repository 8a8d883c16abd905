"""A call live on a SIP number whose engine was rebuilt meanwhile (a PATCH of its engine block):
the call stays on the old, retired engine, and Meta's ``terminate`` webhook, the backup for a
BYE lost on the way, must reach that engine (SIPp over TLS, a real Meta-side media peer)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bridge.api.keys import SWITCHBOARD
from bridge.engines.cloudapi import sip_dialogs

from ..fakes.cloudapi import MetaPeer
from ..support.calls import wait_state
from .conftest import NUMBER
from .test_sipp_numbers import (
    ADMIN,
    HOST_B,
    PHONE_B,
    NamedHop,
    meta_answers,
    ringing,
    shared_rig,
    sip_number_b,
)
from .test_sipp_uic import apply_answer


@pytest.mark.parametrize("direction", ["USER_INITIATED", "BUSINESS_INITIATED"])
async def test_metas_terminate_ends_a_sip_call_live_on_its_numbers_retired_engine(
    sip_rig, meta, tmp_path, monkeypatch, direction
):
    """The SIP road's engine named no calls in its webhooks (any worker took them), so the
    front door never found the retired engine that carries the call: Meta's terminate went to
    the number's new engine, which has no such call, and a call whose BYE was lost stayed up.
    Now it reaches the engine that carries the call (ours by the wacid Meta's 200 named), which
    ends it with Meta's reason and closes the dialog with its own BYE."""
    monkeypatch.setattr(sip_dialogs, "BYE_GRACE_S", 0.2)  # how long Meta's BYE may lag
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    number_b, password_b = await sip_number_b(rig, meta)
    switchboard = rig.client.app[SWITCHBOARD]
    peer = MetaPeer(660.0)
    try:
        if direction == "USER_INITIATED":
            sipp, call_id, wacid = await _user_calls(rig, peer, number_b, password_b)
        else:
            sipp, call_id, wacid = await _business_calls(rig, peer, number_b)
        old = switchboard.engines[number_b]
        meta.numbers["2098765432"] = "second-token-rotated"  # rotated at Meta, then here
        rotated = {"cloudapi": {"accessToken": "second-token-rotated"}}
        resp = await rig.client.patch(f"/numbers/{number_b}", json=rotated, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        assert switchboard.engines[number_b] is not old  # new calls: the new engine

        item = {"id": wacid, "from": "15550001111", "to": PHONE_B, "event": "terminate"}
        item.update(direction=direction, timestamp=str(int(time.time())), status="FAILED")
        item["errors"] = [{"code": 138020, "message": "Relay connection failed"}]
        body = meta.envelope({"calls": [item]}, number="2098765432")
        resp = await meta.post(rig.client, body)  # Meta's BYE lost: only the webhook came
        assert resp.status == 200, await resp.text()
        ended = await wait_state(rig.client, call_id, "ended", timeout=3, headers=ADMIN)
        assert ended["endReason"] == "relay_failed", ended  # Meta's reason
        await sipp.wait_log("BYE-ROUTED")  # the old engine's BYE closed the dialog
        assert await sipp.finish() == 0, sipp.report()
        assert not old.calls
    finally:
        await peer.close()


async def _user_calls(rig, peer: MetaPeer, number_b: str, password_b: str) -> tuple[Any, str, str]:
    """A user calls number B (``uic_bridge_bye.xml``: answered, then it waits for the bridge's
    BYE): the SIPp run, the call's id and its wacid."""
    hop = NamedHop(rig, HOST_B)
    rig.hops = hop  # stopped by the fixture with the rest
    sipp = rig.sipp("uic_bridge_bye.xml")
    await hop.start(rig.engine.ua.port, sipp.port)
    wacid = f"wacid.{PHONE_B}"
    keys = {
        "business": PHONE_B,
        "bridge_host": HOST_B,
        "username": PHONE_B,
        "password": password_b,
        "rr1": f"sip:127.0.0.1:{hop.from_bridge};transport=tls;lr",
        "wacid": wacid,
        "cta": "button:support-42",
        "sdp": (await peer.offer()).replace("\r\n", "\n").strip(),
    }
    await sipp.start(remote=hop.to_bridge, keys=keys)
    found = await ringing(rig.client)
    assert found["numberID"] == number_b, found
    resp = await rig.client.post("/call/answer", json={"callID": found["callID"]}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await apply_answer(sipp, peer)
    await sipp.wait_log("ACKED")
    return sipp, found["callID"], wacid


async def _business_calls(rig, peer: MetaPeer, number_b: str) -> tuple[Any, str, str]:
    """Number B calls a user (``bic.xml``: Meta's 200 names the wacid, then it waits for the
    bridge's BYE): the SIPp run, the call's id and its wacid (not the engine's key: ours)."""
    sipp = rig.sipp("bic.xml")
    text = sipp.scenario.read_text().replace(f"{NUMBER}@localhost", f"{PHONE_B}@{HOST_B}")
    sipp.scenario = rig.dir / "bic_b.xml"
    sipp.scenario.write_text(text)  # SIPp checks our From: number B at its host name
    await meta_answers(rig, sipp, peer)
    body = {"phone": "+5521999999999", "from": number_b}
    resp = await rig.client.post("/call/make", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    await wait_state(rig.client, made["callID"], "active", timeout=5, headers=ADMIN)
    return sipp, made["callID"], "wacid.BIC1"
