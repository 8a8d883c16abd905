"""Business-initiated calls on Meta's SIP road, Meta played by the real SIPp over TLS: our
INVITE challenged with one 407 carrying SHA-256 and MD5 challenges, as Meta's edge sends it,
and sent again with the number's SHA-256 digest answer (checked here, its uri the
Request-URI), 183 → ringing, 200 → active with ACK along the reversed route set, audio both
ways with an aiortc Meta peer (ICE-lite, sha-256), our BYE along the route set; 480 →
no_answer, 486 → rejected, 403 → failed with a message naming what must match; a 407 we
cannot answer and a refused answer each logged once, saying which challenge failed and why."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re

import pytest

from ..fakes.cloudapi import BRIDGE_MID, MetaPeer, sip_answer
from ..integration.test_engine_cloudapi import assert_tone, heard
from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.waits import until, until_passes
from .conftest import NUMBER, PASSWORD


def assert_digest(header: str, nonce: str, username: str, password: str) -> dict[str, str]:
    """RFC 7616 §3.4.1 (SHA-256, qop=auth), computed here from the header's own fields: the
    answer to the first of Meta's two challenges, with that challenge's nonce and opaque."""

    def sha256(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)
    fields = {key: quoted or bare for key, quoted, bare in pairs}
    assert fields["username"] == username and fields["realm"] == "wa.meta.vc", fields
    assert fields["algorithm"] == "SHA-256", fields
    assert fields["nonce"] == nonce and fields["qop"] == "auth", fields
    assert fields["opaque"] == "meta-opaque-sha256", fields
    ha1 = sha256(f"{username}:wa.meta.vc:{password}")
    ha2 = sha256(f"INVITE:{fields['uri']}")
    expected = sha256(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    assert fields["response"] == expected
    return fields


async def test_bic_407_then_200_audio_and_bridge_bye_along_the_route_set(sip_rig):
    rig = await sip_rig()
    sipp = rig.sipp("bic.xml")
    meta = MetaPeer(660.0)
    rtc = None
    try:
        meta_offer = await meta.offer(mid=BRIDGE_MID)
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
        assert trace.count("Proxy-Authenticate: Digest") == 2  # one 407, two challenges
        auth = (await sipp.wait_log(r"AUTH-BEGIN(.*?)AUTH-END")).group(1)
        # The SHA-256 challenge's nonce, as SIPp's 407 sent it; never the MD5 one's.
        nonce = re.search(r'nonce="([^"]+)", opaque="meta-opaque-sha256"', trace).group(1)
        fields = assert_digest(auth, nonce, NUMBER, PASSWORD)
        # The digest uri is the Request-URI, as Meta's documented examples send it, so its
        # user is the To's (Meta refuses "Proxy auth uri does not match SIP to uri").
        m = await sipp.wait_log(r"RURI-BEGIN\[?(.*?)\]?RURI-END TO-BEGIN\[?(.*?)\]?TO-END")
        ruri, to = m.group(1), m.group(2)
        assert fields["uri"] == ruri, (fields["uri"], ruri)
        assert ruri.startswith("sip:+5521999999999@") and ruri.endswith(";transport=tls")
        assert "<sip:+5521999999999@" in to, to
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
    sipp = rig.sipp("bic_fail.xml", STATUS=status, REASON=reason, EXTRA="Server: fake-meta")
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


async def test_bic_refused_for_want_of_permission_says_a_companion_call_granted_none(sip_rig):
    """Meta refuses our INVITE naming 138006 (RFC 3326 ``Reason``) to a user who called the
    business two minutes ago: as on Graph, the end says that call granted no callback
    permission (a companion device's does not), not only "no permission"."""
    rig = await sip_rig()
    reason = 'Reason: Q.850;cause=21;text="138006 No permission to call this user"'
    sipp = rig.sipp("bic_fail.xml", STATUS="403", REASON="Forbidden", EXTRA=reason)
    await sipp.start(remote=None, keys={}, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    permissions = rig.engine.graph_side.permissions
    permissions.heard_from("5521999999999", called=True, at=permissions.clock() - 120)
    resp = await rig.client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
    assert ended["endReason"] == "no_call_permission", ended
    assert "companion device" in ended["endDetail"], ended
    event = await until(lambda: rig.ended(call["callID"]), 10, "call.ended")
    assert event.data["cause"] == "no_callback_from_companion", event.data
    assert await sipp.finish() == 0, sipp.report()


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


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_bic_407_with_no_challenge_we_answer_says_so(sip_rig, caplog):
    """Only challenges we cannot answer (SHA-512 is no digest algorithm; auth-int we do not
    do): no credentials are sent, and the one WARNING says which challenge failed and why,
    not that the password is wrong."""
    rig = await sip_rig()
    extra = (
        'Proxy-Authenticate: Digest realm="wa.meta.vc", nonce="n1", algorithm=SHA-512, '
        'qop="auth"\n      Proxy-Authenticate: Digest realm="wa.meta.vc", nonce="n2", '
        'algorithm=MD5, qop="auth-int"'
    )
    sipp = rig.sipp(
        "bic_fail.xml", STATUS="407", REASON="Proxy Authentication Required", EXTRA=extra
    )
    await sipp.start(remote=None, keys={}, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    caplog.set_level(logging.WARNING)
    resp = await rig.client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    ended = await wait_state(rig.client, call["callID"], "ended", timeout=10)
    assert ended["endReason"] == "failed"
    await sipp.wait_log("ACKED")
    assert await sipp.finish() == 0, sipp.report()
    assert "Proxy-Authorization" not in sipp.sent_and_received()
    about = [w for w in _warnings(caplog) if "challenge" in w]
    assert len(about) == 1, about
    assert "challenge 1 of 2: algorithm=SHA-512 is not one we support" in about[0]
    assert "challenge 2 of 2: algorithm=MD5: qop=auth-int" in about[0]
    assert "No credentials were sent" in about[0] and "password" not in about[0].lower()


async def test_bic_digest_answer_refused_names_the_algorithm(sip_rig, caplog):
    """Meta challenges our SHA-256 answer again (no stale=true): the call ends with one WARNING
    that names what we answered with (algorithm, username, uri) and what to check."""
    rig = await sip_rig()
    sipp = rig.sipp("bic_auth_refused.xml")
    await sipp.start(remote=None, keys={}, server=True)
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    caplog.set_level(logging.WARNING)
    resp = await rig.client.post("/call/make", json={"phone": "5521999999999"})
    assert resp.status == 201, await resp.text()
    call = await resp.json()
    ended = await wait_state(rig.client, call["callID"], "ended", timeout=10)
    assert ended["endReason"] == "failed"
    auth = (await sipp.wait_log(r"REFUSED-ACKED AUTH-BEGIN(.*?)AUTH-END")).group(1)
    assert "algorithm=SHA-256" in auth and 'opaque="o-sha-1"' in auth
    assert await sipp.finish() == 0, sipp.report()
    assert sipp.sent_and_received().count("Proxy-Authorization: Digest") == 1  # no third try
    about = [w for w in _warnings(caplog) if "digest" in w]
    assert len(about) == 1, about
    assert "Meta refused our SHA-256 digest answer" in about[0]
    assert f"username {NUMBER}" in about[0] and "uri sip:+5521999999999@" in about[0]
    assert "BRIDGE_SIP_PASSWORD" in about[0]
