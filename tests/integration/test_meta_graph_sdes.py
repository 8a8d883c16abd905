"""Meta's Graph signalling with SDES media (``srtp_key_exchange_protocol: SDES`` in the number's
settings, ``BRIDGE_CLOUDAPI_MEDIA=sdes``): Meta's offers and answers in the webhooks and the
Graph actions are ``RTP/SAVP`` with ``a=crypto`` and no ICE or DTLS, and Meta refuses a
business SDP of the other kind. The WhatsApp user's media is the tests' SDES endpoint, which
like Meta sends nothing before the bridge's first packet."""

from __future__ import annotations

import asyncio

import pytest

from ..support.calls import wait_state
from ..support.waits import until, until_passes
from .test_engine_cloudapi import assert_tone, connect_browser, heard, the_live_call

META_HZ = 660.0
AGENT_HZ = 440.0


@pytest.fixture
def sclient(make_client, meta):
    async def factory(**kw):
        meta.account.calling["srtp_key_exchange_protocol"] = "SDES"
        return await make_client(**{**meta.bridge_settings(), "cloudapi_media": "sdes", **kw})

    return factory


def meta_hears_the_agent(media) -> None:
    said = media.heard()[-16_000:]
    assert said.size == 16_000, said.size
    assert_tone(said, 16_000, AGENT_HZ, "WhatsApp user hears the agent")


async def test_a_users_call_over_graph_with_sdes_media(sclient, meta):
    client = await sclient()
    mcall = await meta.user_calls(client, "15550001111")
    answer = await until(lambda: mcall.pre_accept_sdp, 5, "pre_accept")
    assert "RTP/SAVP" in answer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in answer
    assert "a=fingerprint" not in answer and "a=ice-ufrag" not in answer
    media = mcall.peer.media
    # The bridge speaks first (before anyone answered): Meta then may send.
    await until(lambda: media.gate.first_rtp_at, 3, "the bridge's first SRTP packet")
    call = await the_live_call(client)
    rtc = await connect_browser(client, call["callID"], freq=AGENT_HZ)
    try:
        resp = await client.post("/call/answer", json={"callID": call["callID"]})
        assert resp.status == 200 and (await resp.json())["state"] == "active"
        assert not meta.refused
        tone = asyncio.create_task(media.play_tone(META_HZ, 0.5 * 32767, 3.0))
        await until_passes(
            lambda: assert_tone(
                heard(rtc.recorder), rtc.recorder.rate, META_HZ, "agent hears the user (SDES)"
            ),
            3.0,
        )
        await until_passes(lambda: meta_hears_the_agent(media), 3.0)
        assert media.auth_failed == 0 and media.gate.first_sent_at >= media.gate.first_rtp_at
        await tone
        resp = await meta.post(client, meta.envelope(meta.terminate_event(mcall, duration=4)))
        assert resp.status == 200
        ended = await wait_state(client, call["callID"], "ended", timeout=3)
        assert ended["endReason"] == "remote_hangup"
    finally:
        await rtc.close()


async def test_a_business_call_over_graph_with_sdes_media(sclient, meta):
    client = await sclient()
    resp = await client.post("/call/make", json={"phone": "5521999990000"})
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    connect = next(a for a in meta.actions if a["action"] == "connect")
    assert "RTP/SAVP" in connect["session"]["sdp"] and "a=crypto:" in connect["session"]["sdp"]
    mcall = next(c for c in meta.meta_calls.values() if c.opaque == made["callID"])
    body = meta.envelope(meta.answer_event(mcall), meta.status_event(mcall, "ACCEPTED"))
    assert (await meta.post(client, body)).status == 200
    await wait_state(client, made["callID"], "active", timeout=3)
    media = mcall.peer.media
    await until(lambda: media.gate.first_rtp_at, 3, "the bridge's first SRTP packet")
    rtc = await connect_browser(client, made["callID"], freq=AGENT_HZ)
    try:
        tone = asyncio.create_task(media.play_tone(META_HZ, 0.5 * 32767, 3.0))
        await until_passes(
            lambda: assert_tone(
                heard(rtc.recorder), rtc.recorder.rate, META_HZ, "agent hears the user (BIC)"
            ),
            3.0,
        )
        await until_passes(lambda: meta_hears_the_agent(media), 3.0)
        await tone
        assert (await client.post("/call/hangup", json={"callID": made["callID"]})).status == 200
    finally:
        await rtc.close()


async def test_meta_refuses_the_other_kind_of_media(make_client, meta):
    """A bridge running DTLS on a number Meta has on SDES: its connect is refused (100), and
    the call fails with Meta's reason rather than ringing with no media possible."""
    meta.account.calling["srtp_key_exchange_protocol"] = "SDES"
    client = await make_client(**meta.bridge_settings())
    resp = await client.post("/call/make", json={"phone": "5521999990001"})
    error = (await resp.json())["error"]
    assert resp.status >= 400 and "RTP/SAVP" in error["message"], error
    assert len(meta.refused) == 1
