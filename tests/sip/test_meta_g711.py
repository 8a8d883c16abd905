"""G.711 from Meta (issue 60): a number with ``additionalCodecs`` gets Meta's offers with PCMA
beside Opus; a WhatsApp call answered straight into a G.711 PBX phone (baresip over a trunk) is
answered in PCMA, and the two legs' packets go through untouched — no codec work — until a
browser joins: then the WhatsApp leg, still on PCMA, is decoded and coded again."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.api.keys import MANAGER

from ..fakes.cloudapi import MetaPeer
from ..integration.test_participants import join
from ..support.baresip_phone import BaresipPhone
from ..support.calls import wait_state
from ..support.meta_g711 import (
    BROWSER_HZ,
    META_HZ,
    PHONE_HZ,
    level_dbfs,
    tones_forwarded_untouched,
    whatsapp_heard,
)
from ..support.spectrum import band_energy, dominant_frequency
from ..support.waits import until, until_passes
from .test_sipp_uic import apply_answer, keys


async def test_bad_additional_codecs_are_refused_before_meta(make_client, meta) -> None:
    client = await make_client(**meta.bridge_settings())
    for bad in (["G729"], ["PCMA", "PCMA"], "PCMA"):
        resp = await client.patch("/numbers/default/settings", json={"additionalCodecs": bad})
        body = await resp.json()
        assert resp.status == 400 and body["error"], (bad, body)
    assert meta.account.settings_posts == []


async def test_whatsapp_on_g711_to_a_g711_phone_forwards_packets_untouched(
    make_client, meta, phone, tmp_path
) -> None:
    meta.user_tone_hz = META_HZ
    client = await make_client(
        **meta.bridge_settings(), data_dir=str(tmp_path), sip_trunk_listen="127.0.0.1:0"
    )
    resp = await client.patch("/numbers/default/settings", json={"additionalCodecs": ["PCMA"]})
    assert resp.status == 200, await resp.text()
    assert meta.account.calling["audio"] == {"additional_codecs": ["PCMA"]}
    p: BaresipPhone = await phone("PCMA")
    trunk = {
        "name": "reception",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "codecs": ["PCMA"],
        "answer": {"numbers": ["default"], "uri": f"sip:1001@127.0.0.1:{p.port}"},
    }
    assert (await client.post("/trunks", json=trunk)).status == 201

    mcall = await meta.user_calls(client, "15550007777")
    await until(lambda: mcall.pre_accept_sdp is not None, 10, "the bridge's pre_accept")
    answer = mcall.pre_accept_sdp.splitlines()
    [m_line] = [ln for ln in answer if ln.startswith("m=audio")]
    assert m_line.split()[3:] == ["8", "126"], m_line  # PCMA and telephone-event only
    assert "a=rtpmap:8 PCMA/8000" in answer and not any("opus" in ln for ln in answer)
    await until(lambda: mcall.peer.connected.is_set(), 10, "Meta's side connected")

    manager = client.app[MANAGER]
    await until(lambda: p.dump_bytes() > 16000, 15, "the phone's audio")
    cid = (await (await client.get("/call/status")).json())["calls"][0]["callID"]
    rt = manager.find_runtime(cid)
    (leg,) = rt.attached("sip")
    whatsapp = rt.media.webrtc_leg
    assert whatsapp.codec == "PCMA" and leg.media.codec == "PCMA"

    # What the phone is sent, payload by payload, against what Meta's side sent.
    to_phone: list[bytes] = []
    send_rtp = leg.media.socket.send_rtp

    def spy(packet: bytes) -> None:
        if len(to_phone) < 500 and packet[1] & 0x7F == 8:
            to_phone.append(packet[12:])
        send_rtp(packet)

    leg.media.socket.send_rtp = spy

    def phone_hears_whatsapp() -> None:
        samples, rate = p.heard(1.0)
        heard, level = dominant_frequency(samples, rate), level_dbfs(samples)
        assert heard == pytest.approx(META_HZ, abs=5) and level > -30, (heard, level)

    def whatsapp_hears_phone() -> None:
        heard, level = whatsapp_heard(mcall.peer)
        assert heard == pytest.approx(PHONE_HZ, abs=5) and level > -30, (heard, level)

    def forwarded() -> tuple[int, int]:
        return leg.media.track.forwarded_frames, whatsapp.leg_json()["framesForwarded"]

    await until(lambda: min(forwarded()) > 100, 10, "two seconds forwarded each way")
    await until_passes(phone_hears_whatsapp, 10)
    await until_passes(whatsapp_hears_phone, 10)
    await until(lambda: len(to_phone) >= 100, 5, "packets to the phone")
    sent_by_meta = set(mcall.peer.audio_sent)
    exact = sum(payload in sent_by_meta for payload in to_phone)
    assert exact == len(to_phone), f"{exact} of {len(to_phone)} bit-exact"
    assert all(len(x) == 160 for x in to_phone)  # 20 ms of G.711 each
    # Nothing on the bus reads them: neither side was decoded while forwarded (no codec work).
    assert whatsapp.leg_json()["packetsNotDecoded"] > 50
    assert leg.media.leg.playout.not_decoded > 50
    print(f"forwarded to the phone, to WhatsApp: {forwarded()}; {exact} payloads bit-exact")

    # A browser joins as a listener: WhatsApp's PCMA is decoded for it (it speaks Opus), the
    # phone's packets no longer go through as they are; the leg stays on PCMA.
    browser = await join(client, cid, "coach", "listen", BROWSER_HZ)
    try:
        before = forwarded()
        await until(lambda: forwarded() == before, 2, "forwarding stopped")

        def browser_hears_both() -> None:
            assert len(browser.recorder.chunks) >= 50, "the browser hears nothing yet"
            samples = np.concatenate(browser.recorder.chunks[-50:]).astype(np.float64)
            rate = browser.recorder.rate
            assert band_energy(samples, rate, META_HZ) > 0.2
            assert band_energy(samples, rate, PHONE_HZ) > 0.2

        await until_passes(browser_hears_both, 10)
        assert forwarded() == before, (before, forwarded())
        await until_passes(phone_hears_whatsapp, 5)
        await until_passes(whatsapp_hears_phone, 5)
        assert whatsapp.codec == "PCMA"
    finally:
        await browser.close()
    await client.post("/call/hangup", json={"callID": cid})
    await wait_state(client, cid, "ended")


async def test_sip_road_answers_metas_g711_in_kind_for_a_g711_phone(sip_rig, phone, tmp_path):
    """Meta's SIP road (SIPp's INVITE over TLS, Meta's media an aiortc peer): an offer with
    PCMA beside Opus, for a number a PCMA PBX phone answers, is answered in PCMA, and the two
    legs' packets go through untouched both ways."""
    p: BaresipPhone = await phone("PCMA")
    rig = await sip_rig(data_dir=str(tmp_path / "data"), sip_trunk_listen="127.0.0.1:0")
    trunk = {
        "name": "reception",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "codecs": ["PCMA"],
        "answer": {"numbers": ["default"], "uri": f"sip:1001@127.0.0.1:{p.port}"},
    }
    assert (await rig.client.post("/trunks", json=trunk)).status == 201
    sipp = rig.sipp("uic.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    meta = MetaPeer(META_HZ)
    try:
        offer = await meta.offer(("PCMA",))
        assert "a=rtpmap:8 PCMA/8000" in offer
        await sipp.start(remote=rig.hops.to_bridge, keys=keys(rig, offer), pause_ms=8000)
        answer = (await apply_answer(sipp, meta)).splitlines()
        [m_line] = [ln for ln in answer if ln.startswith("m=audio")]
        assert m_line.split()[3:] == ["8", "126"], m_line  # PCMA and telephone-event only
        assert not any("opus" in ln for ln in answer)
        await asyncio.wait_for(meta.connected.wait(), 10)
        cid = (await (await rig.client.get("/call/status")).json())["calls"][0]["callID"]
        rt = rig.client.app[MANAGER].find_runtime(cid)
        (leg,) = rt.attached("sip")
        whatsapp = rt.media.webrtc_leg
        assert whatsapp.codec == "PCMA" and leg.media.codec == "PCMA"
        await tones_forwarded_untouched(p, meta, leg, whatsapp)
        await rig.client.post("/call/hangup", json={"callID": cid})
        await wait_state(rig.client, cid, "ended")
    finally:
        await meta.close()
