"""Meta's third road: SIP over TLS with SDES-SRTP media (``BRIDGE_CLOUDAPI_MEDIA=sdes``).

Meta's signalling is the real SIPp over TLS (as in ``test_sipp_uic.py``); Meta's media is an
SDES endpoint written from the RFCs on libsrtp and libopus (``tests/support/sdes_peer.py``):
``RTP/SAVP`` with ``a=crypto`` (RFC 4568, ``AES_CM_128_HMAC_SHA1_80``), no ICE, no DTLS. The
agent is a browser-like aiortc peer. The bridge's answer carries its own key; the first SRTP
packet leaves once the call is answered (Meta waits for it), before any voice exists; tones
are heard both ways, key presses go both ways (RFC 4733), and RTCP sender reports come; a
business-initiated call carries our SDES offer (SIPp answering with Meta's SDES SDP)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.audio.analysis import rms_dbfs

from ..integration.test_engine_cloudapi import assert_tone, heard
from ..support.calls import wait_state
from ..support.rtc_client import RtcClient
from ..support.sdes_peer import SdesEndpoint
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes
from .test_sipp_uic import keys, ringing_call

META_HZ = 660.0
AGENT_HZ = 440.0


async def test_uic_over_sdes_audio_both_ways_dtmf_and_rtcp(sip_rig):
    rig = await sip_rig(cloudapi_media="sdes")
    sipp = rig.sipp("uic.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = SdesEndpoint()
    await meta.start()
    rtc = None
    try:
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, meta.sdp()), pause_ms=7000)
        call = await ringing_call(rig.client)
        assert call["state"] == "ringing"
        rtc = RtcClient(rig.client, call["callID"], freq=AGENT_HZ)
        await rtc.offer()
        resp = await rig.client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200, await resp.text()
        m = await sipp.wait_log(r"ANSWER-BEGIN(.*?)ANSWER-END")
        answer = m.group(1).strip()
        # SDES, not WebRTC: RTP/SAVP with the bridge's own key, no ICE, no fingerprint.
        assert "RTP/SAVP" in answer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in answer
        assert "a=fingerprint" not in answer and "a=ice-ufrag" not in answer
        meta.take(answer)
        # The bridge speaks first: Meta hears packets before it has sent any.
        await until(lambda: meta.packets, 3, "the bridge's first SRTP packet")
        assert meta.auth_failed == 0
        tone = asyncio.create_task(meta.play_tone(META_HZ, 0.5 * 32767, 2.5))  # -9 dBFS RMS
        await asyncio.sleep(2.0)
        assert_tone(heard(rtc.recorder), rtc.recorder.rate, META_HZ, "agent hears the user (SDES)")
        said = meta.heard()[-16_000:].astype(np.float64)
        assert said.size == 16_000, said.size
        assert dominant_frequency(said, 16_000) == pytest.approx(AGENT_HZ, abs=5)
        assert rms_dbfs(said / 32768) > -20.0, rms_dbfs(said / 32768)
        await tone
        assert meta.gate.first_sent_at >= meta.gate.first_rtp_at  # Meta waited for it
        # Key presses both ways (RFC 4733 on 126, as on WebRTC legs).
        await meta.press(5)
        await until(
            lambda: any(e.type == "call.dtmf" and e.data.get("digit") == "5" for e in rig.events),
            3,
            "the user's key press reached the call's events",
        )
        resp = await rig.client.post("/call/dtmf", json={"callID": call["callID"], "digits": "7"})
        assert resp.status == 202 and (await resp.json())["method"] == "rfc4733"
        await until(lambda: any(ev == 7 for _, ev, _, _ in meta.events()), 3, "Meta heard 7")
        # RTCP both ways (RFC 3550): the bridge's sender reports arrive, Meta's reports count.
        await until(lambda: meta.sender_reports(), 5, "the bridge's RTCP sender report")
        stats = await (await rig.client.get(f"/call/{call['callID']}/stats")).json()
        assert stats["leg"]["open"] is True
        assert await sipp.finish() == 0, sipp.report()
        ended = await wait_state(rig.client, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "remote_hangup"
    finally:
        if rtc is not None:
            await rtc.close()
        meta.close()


async def test_bic_over_sdes_our_offer_audio_both_ways_and_bridge_bye(sip_rig):
    """A business-initiated call with our SDES offer: RTP/SAVP with our key on Opus 111 and
    telephone-event 126, no ICE, no fingerprint; Meta's SDES answer in SIPp's 200; the first
    packet leaves at once, tones heard both ways; our BYE along the route set."""
    rig = await sip_rig(cloudapi_media="sdes")
    sipp = rig.sipp("bic.xml")
    meta = SdesEndpoint()
    await meta.start()
    rtc = None
    try:
        keys = {
            "sdp": meta.sdp().replace("\r\n", "\n").strip(),
            "rr1": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls;lr",
        }
        await sipp.start(remote=None, keys=keys, server=True)
        await rig.hops.start(rig.engine.ua.port, sipp.port)
        resp = await rig.client.post("/call/make", json={"phone": "+5521999999999"})
        assert resp.status == 201, await resp.text()
        call = await resp.json()
        m = await sipp.wait_log(r"OFFER-BEGIN(.*?)OFFER-END")
        offer = m.group(1).strip()
        assert "RTP/SAVP 111 126" in offer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in offer
        assert "a=fingerprint" not in offer and "a=ice-ufrag" not in offer
        meta.take(offer)
        await wait_state(rig.client, call["callID"], "active", timeout=5)
        await sipp.wait_log("ACK-ROUTED")
        await until(lambda: meta.packets, 3, "the bridge's first SRTP packet")
        rtc = RtcClient(rig.client, call["callID"], freq=AGENT_HZ)
        await rtc.offer()
        tone = asyncio.create_task(meta.play_tone(META_HZ, 0.5 * 32767, 4.0))
        await until_passes(
            lambda: assert_tone(
                heard(rtc.recorder), rtc.recorder.rate, META_HZ, "agent hears the user (BIC)"
            ),
            3.0,
        )

        def meta_hears_the_agent() -> None:
            said = meta.heard()[-16_000:].astype(np.float64)
            assert said.size == 16_000, said.size
            assert dominant_frequency(said, 16_000) == pytest.approx(AGENT_HZ, abs=5)
            assert rms_dbfs(said / 32768) > -20.0, rms_dbfs(said / 32768)

        await until_passes(meta_hears_the_agent, 3.0)
        assert meta.auth_failed == 0
        await tone
        resp = await rig.client.post("/call/hangup", json={"callID": call["callID"]})
        assert resp.status == 200
        await sipp.wait_log("BYE-ROUTED")
        assert await sipp.finish() == 0, sipp.report()
    finally:
        if rtc is not None:
            await rtc.close()
        meta.close()
