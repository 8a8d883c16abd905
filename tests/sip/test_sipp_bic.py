"""Business-initiated calls on Meta's SIP road, Meta played by the real SIPp over TLS: our
INVITE challenged with 407 and sent again with the number's digest credentials (SIPp's
verifyauth checks them), 183 → ringing, 200 → active with ACK along the reversed route set,
audio both ways with an aiortc Meta peer (ICE-lite, sha-256), our BYE along the route set;
480 → no_answer, 486 → rejected, 403 → failed with a message naming what must match."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re

import pytest

from ..fakes.cloudapi import MetaPeer, sip_answer
from ..integration.test_engine_cloudapi import assert_tone, heard
from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.waits import until, until_passes
from .conftest import NUMBER, PASSWORD


def assert_digest(header: str, nonce: str, username: str, password: str) -> None:
    """RFC 2617 §3.2.2 with qop=auth, computed here from the header's own fields."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)
    fields = {key: quoted or bare for key, quoted, bare in pairs}
    assert fields["username"] == username and fields["realm"] == "wa.meta.vc", fields
    assert (
        fields["nonce"] == nonce and fields["qop"] == "auth" and fields["opaque"] == "meta-opaque"
    )
    ha1 = md5(f"{username}:wa.meta.vc:{password}")
    ha2 = md5(f"INVITE:{fields['uri']}")
    expected = md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    assert fields["response"] == expected


async def test_bic_407_then_200_audio_and_bridge_bye_along_the_route_set(sip_rig):
    rig = await sip_rig()
    sipp = rig.sipp("bic.xml")
    meta = MetaPeer(660.0)
    rtc = None
    try:
        meta_offer = await meta.offer()
        # Meta's answer must be in SIPp's 200 before the bridge's offer exists: the bridge's
        # offer (aiortc's) always puts Opus on payload type 96.
        answer = sip_answer(meta_offer, opus_pt=96)
        keys = {
            "sdp": answer.replace("\r\n", "\n").strip(),
            "rr1": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls;lr",
        }
        await sipp.start(remote=None, keys=keys, server=True)
        await rig.hops.start(rig.engine.ua.port, sipp.port)

        resp = await rig.client.post("/call/make", json={"phone": "+5521999999999"})
        assert resp.status == 201, await resp.text()
        call = await resp.json()
        m = await sipp.wait_log(r"OFFER-BEGIN(.*?)OFFER-END")
        offer = m.group(1).strip().replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"
        assert "a=rtpmap:96 opus/48000" in offer and "a=fingerprint:sha-256" in offer
        await meta.apply_answer(offer.replace("a=setup:actpass", "a=setup:active"))
        ringing = await wait_state(rig.client, call["callID"], "ringing", timeout=5)
        assert ringing["direction"] == "outbound"
        await wait_state(rig.client, call["callID"], "active", timeout=5)
        await sipp.wait_log("ACK-ROUTED")  # SIPp checked the ACK's Request-URI and Route set

        rtc = RtcClient(rig.client, call["callID"], freq=440.0)
        await rtc.offer()
        await asyncio.wait_for(meta.connected.wait(), 10)
        await until_passes(
            lambda: assert_tone(
                heard(rtc.recorder), rtc.recorder.rate, 660, "agent hears the WhatsApp user"
            )
        )
        await until_passes(
            lambda: assert_tone(
                heard(meta.recorder), meta.recorder.rate, 440, "WhatsApp user hears agent"
            )
        )

        resp = await rig.client.post("/call/hangup", json={"callID": call["callID"]})
        assert resp.status == 200
        await sipp.wait_log("BYE-ROUTED")
        assert await sipp.finish() == 0, sipp.report()
        trace = sipp.sent_and_received()
        assert trace.count("Proxy-Authorization: Digest") == 1
        auth = (await sipp.wait_log(r"AUTH-BEGIN(.*?)AUTH-END")).group(1)
        nonce = re.search(r'nonce="([^"]+)"', trace).group(1)  # the one SIPp's 407 sent
        assert_digest(auth, nonce, NUMBER, PASSWORD)
    finally:
        if rtc is not None:
            await rtc.close()
        await meta.close()


@pytest.mark.parametrize(
    "status, reason, end_reason",
    [
        ("480", "Temporarily Unavailable", "no_answer"),
        ("486", "Busy Here", "rejected"),
        ("403", "Forbidden (does not match any SIP server configured)", "failed"),
    ],
)
async def test_bic_not_taken(sip_rig, caplog, status, reason, end_reason):
    rig = await sip_rig()
    sipp = rig.sipp("bic_fail.xml", STATUS=status, REASON=reason)
    await sipp.start(remote=None, keys={}, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    caplog.set_level(logging.WARNING)
    resp = await rig.client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    await wait_state(rig.client, call["callID"], "ringing", timeout=5)
    ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
    assert ended["endReason"] == end_reason
    await sipp.wait_log("ACKED")  # the final response was ACKed on its transaction
    assert await sipp.finish() == 0, sipp.report()
    event = await until(lambda: rig.ended(call["callID"]), 10, "call.ended")
    assert event is not None and event.data["sipStatus"] == int(status)
    await until(lambda: not rig.engine.calls, 2, "the engine forgot the call")
    if status == "403":
        warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "BRIDGE_SIP_HOSTNAME" in warning and "sip:+15550009999@localhost" in warning


async def test_bic_hangup_while_ringing_cancels(sip_rig):
    rig = await sip_rig()
    sipp = rig.sipp("bic_cancel.xml")
    await sipp.start(remote=None, keys={}, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    resp = await rig.client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    await wait_state(rig.client, call["callID"], "ringing", timeout=5)
    resp = await rig.client.post("/call/hangup", json={"callID": call["callID"]})
    assert resp.status == 200
    m = await sipp.wait_log(r"CANCELLED invite-branch=(\S+) cancel-branch=(\S+)")
    assert m.group(1) == m.group(2)  # §9.1: the CANCEL's Via branch is the INVITE's
    await sipp.wait_log("ACKED")  # the 487 was ACKed
    assert await sipp.finish() == 0, sipp.report()
    ended = await wait_state(rig.client, call["callID"], "ended", timeout=2)
    assert ended["endReason"] == "canceled"
