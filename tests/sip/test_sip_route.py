"""A route's ``sip`` step (issue 49) with real phones: a sim WhatsApp call (its voice 440 Hz)
rings an agent who does not answer, then a PBX phone nobody picks up (SIPp: ringing until our
CANCEL after ``timeoutS``, then its 487 in ``route.sip``), then a phone through a trunk whose
only codec the phone refuses (baresip's own ``488``: the next step, the code in
``route.sip``), then the same phone through a trunk it can talk on (baresip, G.711, its voice
660 Hz): the WhatsApp call is answered only then, into the phone, and both sides hear each
other; the phone's hang-up ends the call."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from ..integration.test_desk import Agent, incoming
from ..support.calls import peer_heard, wait_state
from ..support.requires import needs
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes
from .test_sip_participant import PEER_HZ, PHONE_HZ, level_dbfs, of

pytestmark = needs(shutil.which("baresip") is not None, "baresip", "apt-get install baresip")


async def trunk(client: Any, port: int, codec: str, **extra: Any) -> str:
    uri = f"sip:127.0.0.1:{port};transport=udp"
    body = {"name": f"desk {codec}", "uri": uri, "codecs": [codec], **extra}
    resp = await client.post("/trunks", json=body)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["trunkID"])


async def test_a_route_rings_an_agent_then_a_phone_through_a_trunk(bridge, phone, tmp_path) -> None:
    from ..support.sipp import Sipp, tools_missing

    if tools_missing():
        pytest.skip(tools_missing())
    p = await phone("PCMU")
    sipp = Sipp(tmp_path, "pbx_phone_no_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1")
    ringing = await trunk(bridge, sipp.port, "PCMU", keepalive=0)  # SIPp wants the INVITE first
    refused, good = await trunk(bridge, p.port, "PCMA"), await trunk(bridge, p.port, "PCMU")
    uri = f"sip:1001@127.0.0.1:{p.port}"
    steps = [
        {"ring": {"agents": ["ann"], "timeoutS": 0.5}},
        {"sip": {"uri": "sip:2002@127.0.0.1", "trunkID": ringing, "timeoutS": 1}},
        {"sip": {"uri": uri, "trunkID": refused, "timeoutS": 10}},
        {"sip": {"uri": uri, "trunkID": good, "timeoutS": 10, "headers": {"X-Queue": "sales"}}},
        {"hangup": {}},
    ]
    resp = await bridge.post("/routes", json={"name": "main", "numbers": "default", "steps": steps})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["steps"][2]["sip"]["trunkID"] == refused
    ann = await Agent.connect(bridge, "ann")
    cid = await incoming(bridge)
    await ann.next("ringing")
    await ann.next("ringing.stopped", timeout=3)
    try:
        await until(lambda: len(of(bridge, "route.sip")) == 3, 15, "the sip steps' outcomes")
        assert await sipp.finish() == 0, sipp.report()
    finally:
        await sipp.stop()
    nobody, first, second = (e.data for e in of(bridge, "route.sip"))
    assert nobody == {
        "participantID": "sip",
        "uri": "sip:2002@127.0.0.1",
        "outcome": "no_answer",
        "sipCode": 487,
    }
    assert first == {"participantID": "sip", "uri": uri, "outcome": "rejected", "sipCode": 488}
    assert second == {"participantID": "sip", "uri": uri, "outcome": "answered", "sipCode": 200}
    # Nobody heard the caller before the phone answered: the call was answered after it.
    types = [e.type for e in bridge.events]
    assert types.index("call.active") > types.index("participant.joined")
    await wait_state(bridge, cid, "active")

    def phone_hears_whatsapp() -> None:
        samples, rate = p.heard(1.0)
        assert dominant_frequency(samples, rate) == pytest.approx(PEER_HZ, abs=5)
        assert level_dbfs(samples) > -25

    def whatsapp_hears_phone() -> None:
        samples = peer_heard(bridge, cid, 50)
        assert dominant_frequency(samples, 16000) == pytest.approx(PHONE_HZ, abs=5)
        assert level_dbfs(samples) > -30

    await until(lambda: p.dump_bytes() > 16000, 10, "the phone's audio")
    await until_passes(phone_hears_whatsapp, 10)
    await until_passes(whatsapp_hears_phone, 10)
    assert "X-Queue: sales" in p.log() and f"X-WA-Call-ID: {cid}" in p.log()
    snap = await (await bridge.get(f"/call/{cid}")).json()
    shown = [x for x in snap["participants"] if x["participantID"] == "sip"]
    assert shown and shown[0]["role"] == "agent" and shown[0]["sip"]["state"] == "joined"
    # The phone hangs up: the WhatsApp call it was bridged to ends (no later step runs).
    await p.command("hangup")
    ended = await wait_state(bridge, cid, "ended", timeout=10)
    assert ended["endReason"] != "declined", ended
