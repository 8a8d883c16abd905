"""Two numbers on Meta's SIP road behind one TLS listener (issue 46): the default number
(``BRIDGE_SIP_*``, host ``localhost``, then put on SIP through the API — ``BRIDGE_SIP_PASSWORD``
unset, so the password is the API's: Meta's is stored) and a number made at run time with its
own host name and certificate, put on SIP with ``POST /numbers/{id}/sip/enable`` (issue 50).
SIPp over TLS, its socat hop sending each host name in the client hello (SNI, RFC 6066 §3):
each INVITE is challenged and checked with its own number's password, a wrong password is
refused, a number the listener does not serve gets 404; audio both ways and the call's
``numberID``."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from bridge.api.keys import MANAGER, RECORDINGS, SWITCHBOARD
from bridge.numbers.model import DEFAULT_NUMBER

from ..fakes.cloudapi import BRIDGE_MID, MetaPeer, sip_answer
from ..integration.test_engine_cloudapi import hears_tone
from ..support.audio_files import make
from ..support.calls import events_until_ended, wait_state
from ..support.ports import free_port
from ..support.rtc_client import RtcClient
from ..support.sipp import TlsHops, _spawn, wait_port
from ..support.tls import peer_names
from ..support.waits import until
from .conftest import NUMBER, PASSWORD
from .test_sipp_bic import assert_digest
from .test_sipp_uic import apply_answer, keys

ADMIN = {"Authorization": "Bearer admin-token"}
HOST_B = "sip-b.example"
PHONE_B = "15550002222"


class NamedHop(TlsHops):
    """SIPp → socat (TLS client naming ``name``: SNI and the name checked) → the bridge."""

    def __init__(self, rig, name: str) -> None:
        super().__init__(rig.ca, rig.meta_cert, rig.dir)
        self.name = name

    async def start(self, bridge_port: int, sipp_port: int) -> None:
        if self.procs:
            return  # one hop for every call to this name
        self.procs.append(
            await _spawn(
                "socat",
                f"TCP-LISTEN:{self.to_bridge},bind=127.0.0.1,reuseaddr,fork",
                f"OPENSSL:127.0.0.1:{bridge_port},cafile={self.ca.path},verify=1,"
                f"commonname={self.name},snihost={self.name}",
                log=self.dir / "socat-named.log",
            )
        )
        await wait_port(self.to_bridge)


async def ringing(client) -> dict[str, Any]:
    for _ in range(500):
        calls = (await (await client.get("/call/status", headers=ADMIN)).json())["calls"]
        if calls:
            return calls[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no call rang")


async def call(rig, hop, business: str, password: str, host: str) -> tuple[Any, MetaPeer]:
    """One user-initiated call through ``hop`` with SIPp's ``uic.xml``: the SIPp run and the
    bridge's call (``None`` when the INVITE was refused)."""
    sipp = rig.sipp("uic.xml")
    await hop.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(660.0)
    offer = await meta.offer()
    wacid = f"wacid.{business}"
    subst = {"business": business, "bridge_host": host, "username": business}
    await sipp.start(
        remote=hop.to_bridge,
        keys={**keys(rig, offer, wacid), **subst, "password": password},
        pause_ms=4000,
    )
    return sipp, meta


async def sip_number_b(rig, meta) -> tuple[str, str]:
    """Number B made at run time on SIP with its own host name and certificate, then put on
    Meta's SIP with ``…/sip/enable``: its numberID and the password Meta made."""
    cert_b = rig.ca.issue("number-b", HOST_B)
    meta.add_number("2098765432", "second-token")
    body = {
        "phone": f"+{PHONE_B}",
        "engine": "cloudapi",
        "cloudapi": {
            **meta.number_fields("2098765432"),
            "signalling": "sip",
            "sipHostname": HOST_B,
            "sipCert": str(cert_b.cert),
            "sipKey": str(cert_b.key),
        },
    }
    resp = await rig.client.post("/numbers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    number_b = (await resp.json())["numberID"]
    resp = await rig.client.post(f"/numbers/{number_b}/sip/enable", json={}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    password_b = meta.accounts["2098765432"].sip_password
    assert password_b and password_b != PASSWORD
    return number_b, password_b


async def shared_rig(sip_rig, meta, tmp_path, **settings: Any):
    """The default number on SIP (Graph at the fake Meta) on a fixed port numbers share."""
    port = free_port()
    rig = await sip_rig(
        **meta.bridge_settings(),
        sip_listen=f"127.0.0.1:{port}",
        api_tokens=("admin-token",),
        data_dir=str(tmp_path / "data"),
        **settings,
    )
    return rig, port


async def test_two_sip_numbers_one_listener_own_passwords_names_and_404(sip_rig, meta, tmp_path):
    rig, port = await shared_rig(sip_rig, meta, tmp_path, sip_password="")
    number_b, password_b = await sip_number_b(rig, meta)
    assert meta.accounts["2098765432"].settings_posts[-1]["calling"]["sip"]["servers"] == [
        {"hostname": HOST_B, "port": port}
    ]

    # SNI: each name gets its own certificate; no name (or another) the deployment's.
    assert await peer_names(port, str(rig.ca.path), HOST_B) == [HOST_B]
    assert "localhost" in await peer_names(port, str(rig.ca.path), "localhost")

    # The settings' number on SIP through the API too (BRIDGE_SIP_PASSWORD unset): Meta's.
    resp = await rig.client.post("/numbers/default/sip/rotate", json={}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    password_default = meta.account.sip_password
    assert password_default not in (PASSWORD, password_b)

    hop_b = NamedHop(rig, HOST_B)
    rig.hops = hop_b  # stopped by the fixture with the rest
    for business, password, host, number_id in [
        (PHONE_B, password_b, HOST_B, number_b),
        (NUMBER, password_default, "localhost", "default"),
    ]:
        hop = hop_b if host == HOST_B else TlsHops(rig.ca, rig.meta_cert, rig.dir)
        sipp, peer = await call(rig, hop, business, password, host)
        rtc = None
        try:
            found = await ringing(rig.client)
            assert found["numberID"] == number_id, found
            rtc = RtcClient(rig.client, found["callID"], freq=440.0, headers=ADMIN)
            await rtc.offer()
            resp = await rig.client.post(
                "/call/answer", json={"callID": found["callID"]}, headers=ADMIN
            )
            assert resp.status == 200, await resp.text()
            await apply_answer(sipp, peer)
            contact = f"Contact: <sip:+{business}@{host}:{port};transport=tls>"
            assert contact in sipp.sent_and_received(), sipp.report()
            await asyncio.wait_for(peer.connected.wait(), 10)
            await asyncio.sleep(1.0)
            await hears_tone(rtc.recorder, 660, "agent hears the user")
            await hears_tone(peer.recorder, 440, "user hears the agent")
            assert await sipp.finish() == 0, sipp.report()
            await wait_state(rig.client, found["callID"], "ended", timeout=5, headers=ADMIN)
            assert "SIP/2.0 407" in sipp.sent_and_received()
        finally:
            if rtc is not None:
                await rtc.close()
            await peer.close()
            if hop is not hop_b:
                await hop.stop()

    # A wrong password: 407, then 403; a number this listener does not serve: 404, no 407.
    for business, password, refused in [
        (PHONE_B, PASSWORD, "SIP/2.0 403"),
        ("15550007777", PASSWORD, "SIP/2.0 404"),
        (NUMBER, PASSWORD, "SIP/2.0 403"),  # not the password Meta made and the API stored
    ]:
        sipp, peer = await call(rig, hop_b, business, password, HOST_B)
        try:
            assert await sipp.finish() != 0
            trace = sipp.sent_and_received()
            assert refused in trace, sipp.report()
            assert ("SIP/2.0 407" in trace) is (refused.endswith("403"))
        finally:
            await peer.close()
    assert not rig.engine.calls


async def meta_answers(rig, sipp, peer: MetaPeer) -> None:
    """SIPp as Meta for ``bic.xml``: it answers our INVITE with ``peer``'s SDP (Opus on 96, as
    the bridge's offer has it) along a route set through the rig's hops."""
    answer = sip_answer(await peer.offer(mid=BRIDGE_MID), opus_pt=96)
    keys = {
        "sdp": answer.replace("\r\n", "\n").strip(),
        "rr1": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls;lr",
    }
    await sipp.start(remote=None, keys=keys, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)


async def test_a_run_time_number_calls_out_as_itself_with_its_own_password(sip_rig, meta, tmp_path):
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    number_b, password_b = await sip_number_b(rig, meta)
    sipp = rig.sipp("bic.xml")
    text = sipp.scenario.read_text().replace(f"{NUMBER}@localhost", f"{PHONE_B}@{HOST_B}")
    sipp.scenario = rig.dir / "bic_b.xml"
    sipp.scenario.write_text(text)  # SIPp checks our From: number B at its host name
    peer = MetaPeer(660.0)
    try:
        await meta_answers(rig, sipp, peer)
        body = {"phone": "+5521999999999", "from": number_b}
        resp = await rig.client.post("/call/make", json=body, headers=ADMIN)
        assert resp.status == 201, await resp.text()
        made = await resp.json()
        assert made["numberID"] == number_b, made
        await wait_state(rig.client, made["callID"], "active", timeout=5, headers=ADMIN)
        resp = await rig.client.post("/call/hangup", json={"callID": made["callID"]}, headers=ADMIN)
        assert resp.status == 200
        assert await sipp.finish() == 0, sipp.report()
        trace = sipp.sent_and_received()
        auth = (await sipp.wait_log(r"AUTH-BEGIN(.*?)AUTH-END")).group(1)
        nonce = re.search(r'nonce="([^"]+)", opaque="meta-opaque-sha256"', trace).group(1)
        assert_digest(auth, nonce, PHONE_B, password_b)
        assert f"Contact: <sip:+{PHONE_B}@{HOST_B}:" in trace
    finally:
        await peer.close()


async def test_metas_terminate_webhook_ends_a_sip_call_whose_cancel_never_came(
    sip_rig, meta, tmp_path
):
    """Meta's ``sip.webhook_delivery``: the number's ``calls`` webhooks come beside SIP. A
    connect (no SDP on SIP) is known, not malformed; a terminate for a call still ringing
    after the grace for Meta's own CANCEL/BYE ends it here: ``487`` to Meta's INVITE, the call
    ``ended`` with Meta's reason (its error code, as on Graph: the SIP road ended it
    ``remote_canceled``, Meta's status and errors dropped) and duration."""
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    resp = await rig.client.patch(
        "/numbers/default/settings", json={"sip": {"webhookDelivery": "ENABLED"}}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    assert meta.account.settings_posts[-1] == {"calling": {"sip": {"webhook_delivery": "ENABLED"}}}
    sipp, peer = await call(rig, rig.hops, NUMBER, PASSWORD, "localhost")
    try:
        found = await ringing(rig.client)
        wacid = f"wacid.{NUMBER}"
        bad = rig.engine.stats.bad_messages
        item = {"id": wacid, "from": "15550001111", "to": NUMBER, "direction": "USER_INITIATED"}
        now = str(int(time.time()))
        connect = {"calls": [{**item, "event": "connect", "timestamp": now}]}
        ended = {"calls": [{**item, "event": "terminate", "timestamp": now, "status": "FAILED"}]}
        ended["calls"][0]["duration"] = 3
        ended["calls"][0]["errors"] = [{"code": 138020, "message": "Relay connection failed"}]
        for body in (connect, ended):
            resp = await meta.post(rig.client, meta.envelope(body))
            assert resp.status == 200, await resp.text()
        snapshot = await wait_state(rig.client, found["callID"], "ended", timeout=6, headers=ADMIN)
        assert snapshot["endReason"] == "relay_failed", snapshot
        assert snapshot["endDetail"].startswith("138020: Relay connection failed"), snapshot
        # (The snapshot reads ended as the manager ends the call; call.ended is published
        # after the call's runtime has closed: under load, a moment later.)
        said = (await until(lambda: rig.ended(found["callID"]), 5, "call.ended")).data
        assert (said["engineStatus"], said["engineDurationS"]) == ("FAILED", 3), said
        assert await sipp.finish() != 0  # uic.xml waits for a 200 that never comes
        assert "SIP/2.0 487 Request Terminated" in sipp.sent_and_received(), sipp.report()
        assert rig.engine.stats.bad_messages == bad and not rig.engine.calls
    finally:
        await peer.close()


async def test_metas_terminate_webhook_ends_our_sip_call_by_the_wacid_its_answer_named(
    sip_rig, meta, tmp_path
):
    """A call the business placed on the SIP road is keyed by our Call-ID; Meta's ``calls``
    webhooks name it by its wacid, which Meta's 200 carries (``x-wa-meta-wacid``). A
    ``terminate`` for that wacid with no BYE after it is the backstop it is for Meta's own
    calls: the call ends with Meta's reason and our BYE closes the dialog (before, the webhook
    found no call and the call stayed up)."""
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    await _webhooks_on(rig)
    sipp = rig.sipp("bic.xml")
    peer = MetaPeer(660.0)
    try:
        await meta_answers(rig, sipp, peer)
        resp = await rig.client.post("/call/make", json={"phone": "+5521999999999"}, headers=ADMIN)
        assert resp.status == 201, await resp.text()
        made = await resp.json()
        await wait_state(rig.client, made["callID"], "active", timeout=5, headers=ADMIN)
        [engine_id] = rig.engine.calls
        assert not engine_id.startswith("wacid."), engine_id  # ours, not Meta's
        item = {"id": "wacid.BIC1", "from": NUMBER, "to": "5521999999999"}
        ended = {"calls": [{**item, "direction": "BUSINESS_INITIATED", "event": "terminate"}]}
        ended["calls"][0]["timestamp"] = str(int(time.time()))
        ended["calls"][0]["status"] = "FAILED"
        ended["calls"][0]["errors"] = [{"code": 138020, "message": "Relay connection failed"}]
        resp = await meta.post(rig.client, meta.envelope(ended))
        assert resp.status == 200, await resp.text()
        snapshot = await wait_state(rig.client, made["callID"], "ended", timeout=6, headers=ADMIN)
        assert snapshot["endReason"] == "relay_failed", snapshot
        assert await sipp.finish() == 0, sipp.report()  # bic.xml took our BYE, answered 200
        assert "BYE-ROUTED" in sipp.logged(), sipp.report()
        assert not rig.engine.calls and not rig.engine.dialogs.by_meta_wacid
    finally:
        await peer.close()


async def _webhooks_on(rig) -> None:
    resp = await rig.client.patch(
        "/numbers/default/settings", json={"sip": {"webhookDelivery": "ENABLED"}}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()


def _meta_calls_webhook(event: str, **extra: Any) -> dict[str, Any]:
    """A ``calls`` webhook of Meta's about the user's call ``wacid.{NUMBER}`` (no SDP: SIP)."""
    item = {"id": f"wacid.{NUMBER}", "from": "15550001111", "to": NUMBER}
    now = str(int(time.time()))
    return {"calls": [{**item, "direction": "USER_INITIATED", "event": event, "timestamp": now}]}


async def test_connect_webhooks_before_and_after_the_invite_ring_the_call_once(
    sip_rig, meta, tmp_path
):
    """Meta's ``connect`` webhook for a SIP number's call, before its INVITE and again after
    it: the INVITE is the call, which rings once (keyed by its wacid); the webhooks add nothing.
    Meta's ``call_created`` (the start event its SIP webhooks send) is known too, not counted
    as malformed (it was: ``bridge_engine_bad_messages_total`` rose with every SIP call)."""
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    await _webhooks_on(rig)
    manager = rig.client.app[MANAGER]
    bad = rig.engine.stats.bad_messages
    async with manager.events.subscribe() as sub:
        for event in ("call_created", "connect"):
            resp = await meta.post(rig.client, meta.envelope(_meta_calls_webhook(event)))
            assert resp.status == 200
        await until(rig.engine.graph_side.inbox.queue.empty, 2, "the webhook taken")
        await asyncio.sleep(0.1)  # the last body taken from the queue is worked through
        assert rig.engine.stats.bad_messages == bad
        assert not rig.engine.calls and not manager.registry.live()
        sipp, peer = await call(rig, rig.hops, NUMBER, PASSWORD, "localhost")
        try:
            found = await ringing(rig.client)
            resp = await meta.post(rig.client, meta.envelope(_meta_calls_webhook("connect")))
            assert resp.status == 200
            await until(rig.engine.graph_side.inbox.queue.empty, 2, "the webhook taken")
            await asyncio.sleep(0.2)
            live = (await (await rig.client.get("/call/status", headers=ADMIN)).json())["calls"]
            assert [c["callID"] for c in live] == [found["callID"]]
            assert list(rig.engine.calls) == [f"wacid.{NUMBER}"]
            resp = await rig.client.post(
                "/call/hangup", json={"callID": found["callID"]}, headers=ADMIN
            )
            assert resp.status == 200
            events = await events_until_ended(sub)  # every call created meanwhile
            await sipp.finish()
        finally:
            await sipp.stop()
            await peer.close()
    assert [e.type for e in events if e.type in ("call.created", "call.ended")] == [
        "call.created",
        "call.ended",
    ]


async def test_a_terminate_webhook_before_the_invite_refuses_it(sip_rig, meta, tmp_path, caplog):
    """Meta's ``terminate`` webhook overtakes its INVITE (webhooks and SIP travel apart): the
    call is over before it reached the bridge, so the INVITE is refused with ``487`` and never
    rings; a repeated terminate changes nothing."""
    caplog.set_level(logging.WARNING)
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    await _webhooks_on(rig)
    ended = _meta_calls_webhook("terminate", status="COMPLETED")
    for _ in range(2):  # Meta delivers some webhooks more than once
        resp = await meta.post(rig.client, meta.envelope(ended))
        assert resp.status == 200
    await until(rig.engine.graph_side.inbox.queue.empty, 2, "the webhooks taken")
    sipp, peer = await call(rig, rig.hops, NUMBER, PASSWORD, "localhost")
    try:
        assert await sipp.finish() != 0  # uic.xml waits for a 200 that never comes
        assert "SIP/2.0 487 Request Terminated" in sipp.sent_and_received(), sipp.report()
        assert not rig.engine.calls
        live = (await (await rig.client.get("/call/status", headers=ADMIN)).json())["calls"]
        assert live == []
    finally:
        await peer.close()
    refused = [r for r in caplog.records if "came before its INVITE" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING


async def test_metas_voicemail_of_a_sip_call_is_kept(sip_rig, meta, tmp_path):
    """Meta's voicemail of a call the business turned down (``486`` on the SIP road, trigger
    ``REJECT``) comes as a Graph ``messages`` webhook whose id is the call's wacid, on a SIP
    number as on a Graph one: it is the call's ``voicemail`` recording and ``call.voicemail``.
    The SIP road fetched no artifact: the voicemail was dropped without a word."""
    rig, _ = await shared_rig(sip_rig, meta, tmp_path)
    sipp, peer = await call(rig, rig.hops, NUMBER, PASSWORD, "localhost")
    try:
        found = await ringing(rig.client)
        hangup = {"callID": found["callID"]}
        resp = await rig.client.post("/call/hangup", json=hangup, headers=ADMIN)
        assert resp.status == 200
        await wait_state(rig.client, found["callID"], "ended", timeout=5, headers=ADMIN)
        assert await sipp.finish() != 0  # uic.xml waits for a 200 that never comes
        assert "SIP/2.0 486" in sipp.sent_and_received(), sipp.report()
    finally:
        await peer.close()
    item = meta.media.voicemail_event(f"wacid.{NUMBER}", "15550001111", make("opus", 660.0, 1.0))
    assert (await meta.post(rig.client, meta.envelope(item, field="messages"))).status == 200
    said = await until(lambda: next((e for e in rig.events if e.type == "call.voicemail"), None), 5)
    assert said.call["callID"] == found["callID"] and said.data["mediaID"]
    rec = rig.client.app[RECORDINGS].index[said.data["recordingID"]]
    assert rec.kind == "voicemail" and rec.call_id == found["callID"]


async def test_a_sip_number_without_the_graph_api_has_no_settings_and_is_still_checked(
    sip_rig, caplog
) -> None:
    """Meta's SIP road with no Graph token: the number's calling settings cannot be read, so
    they are a 404 ``settings_not_supported`` and the health checks skip them (the check task
    died on them with an ERROR, which stopped every number's health checks)."""
    caplog.set_level(logging.INFO)
    rig = await sip_rig()
    switchboard = rig.client.app[SWITCHBOARD]
    assert await switchboard.setup.compare(DEFAULT_NUMBER, rig.engine) is None
    resp = await rig.client.get(f"/numbers/{DEFAULT_NUMBER}/settings")
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "settings_not_supported", body
    assert "BRIDGE_ENGINE_TOKEN" in body["error"]["message"]
    await switchboard.compare_setup(DEFAULT_NUMBER)  # what the health loop does: no raise
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
