"""G.711 on Meta's SIP road with SDES-SRTP media (issue 60), business-initiated: a PBX phone of
PCMA (baresip behind a trunk) dials a WhatsApp user; the bridge's INVITE to Meta (the real
SIPp over TLS, ``bic.xml``) offers PCMA before Opus, Meta's SDES side (tests/support/
sdes_peer.py) answers PCMA alone, and the call runs in PCMA: Meta gets 160-byte PCMA packets
carrying the phone's tone, the phone hears Meta's, and neither leg decodes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridge.api.keys import MANAGER, TRUNKS

from ..support.baresip_phone import BaresipPhone
from ..support.calls import wait_state
from ..support.meta_g711 import (
    META_HZ,
    PHONE_HZ,
    level_dbfs,
    m_line_payloads,
    phone_hears_whatsapp,
)
from ..support.sdes_peer import SdesEndpoint
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes

USER = "15550007777"


def meta_hears_the_phone(meta: SdesEndpoint) -> None:
    audio = [p for p in meta.packets[-50:] if p[1] != 126]
    assert audio and {p[1] for p in audio} == {8} and {len(p[4]) for p in audio} == {160}
    heard = np.concatenate(meta.g711[-50:]).astype(np.float64)
    freq, level = dominant_frequency(heard, 8000), level_dbfs(heard)
    assert freq == pytest.approx(PHONE_HZ, abs=5) and level > -30, (freq, level)


async def test_a_pbx_phones_call_offers_pcma_over_sdes_and_runs_in_it(sip_rig, phone, tmp_path):
    p: BaresipPhone = await phone("PCMA")
    rig = await sip_rig(
        cloudapi_media="sdes", data_dir=str(tmp_path / "data"), sip_trunk_listen="127.0.0.1:0"
    )
    trunk = {
        "name": "reception",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "codecs": ["PCMA"],
        "inbound": {"allowFrom": ["127.0.0.1/32"]},
    }
    assert (await rig.client.post("/trunks", json=trunk)).status == 201
    sipp = rig.sipp("bic.xml")
    meta = SdesEndpoint()
    await meta.start()
    tone: asyncio.Task[None] | None = None
    try:
        keys = {
            "sdp": meta.sdp(codecs=("PCMA",)).replace("\r\n", "\n").strip(),
            "rr1": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls;lr",
        }
        await sipp.start(remote=None, keys=keys, server=True)
        await rig.hops.start(rig.engine.ua.port, sipp.port)
        await p.command("dial", f"sip:+{USER}@127.0.0.1:{rig.client.app[TRUNKS].port}")
        m = await sipp.wait_log(r"OFFER-BEGIN(.*?)OFFER-END", timeout=15)
        offer = m.group(1).strip()
        # PCMA preferred, Opus to fall back on, telephone-event last; SDES, not WebRTC.
        assert m_line_payloads(offer) == ["8", "111", "126"], offer
        assert "RTP/SAVP" in offer and "a=rtpmap:8 PCMA/8000" in offer and "PCMU" not in offer
        assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80" in offer and "a=fingerprint" not in offer
        meta.take(offer)
        await sipp.wait_log("ACK-ROUTED")
        cid = await until(lambda: _call_id(rig.client), 10, "the call")
        rt = rig.client.app[MANAGER].find_runtime(cid)
        (leg,) = await until(lambda: rt.attached("sip") or None, 15, "the PBX's leg")
        # The WhatsApp side's leg is the runtime's once its media is up: later than the PBX's
        # leg on a loaded host (None when looked at once, in a full run).
        whatsapp = await until(lambda: rt.media.webrtc_leg, 10, "the WhatsApp leg")
        assert whatsapp.codec == "PCMA" and whatsapp.audio_pt == 8 and leg.media.codec == "PCMA"
        tone = asyncio.create_task(meta.play_g711("PCMA", META_HZ, 0.5 * 32767, 10.0))

        def forwarded() -> tuple[int, int]:
            return leg.media.track.forwarded_frames, whatsapp.leg_json()["framesForwarded"]

        await until(lambda: min(forwarded()) > 100, 10, "two seconds forwarded each way")
        await until_passes(lambda: phone_hears_whatsapp(p), 10)
        await until_passes(lambda: meta_hears_the_phone(meta), 10)
        assert meta.auth_failed == 0
        assert whatsapp.leg_json()["packetsNotDecoded"] > 50  # forwarded, never decoded
        assert leg.media.leg.playout.not_decoded > 50
        await rig.client.post("/call/hangup", json={"callID": cid})
        await sipp.wait_log("BYE-ROUTED")
        assert await sipp.finish() == 0, sipp.report()
        await wait_state(rig.client, cid, "ended")
    finally:
        if tone is not None:
            tone.cancel()
        meta.close()


async def _call_id(client) -> str | None:
    calls = (await (await client.get("/call/status")).json())["calls"]
    return calls[0]["callID"] if calls else None
