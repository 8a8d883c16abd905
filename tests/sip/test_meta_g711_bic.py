"""G.711 on business-initiated calls (issue 60): a PBX phone of PCMA dials a WhatsApp user
through a trunk; the bridge's offer to Meta names PCMA before Opus, Meta (the number opted in
with ``additionalCodecs``) answers PCMA alone, and the two legs' packets go through untouched.
Without the opt-in Meta answers Opus and the call is coded as before."""

from __future__ import annotations

from typing import Any

from bridge.api.keys import MANAGER, TRUNKS

from ..support.baresip_phone import BaresipPhone
from ..support.calls import wait_state
from ..support.meta_g711 import META_HZ, m_line_payloads, tones_forwarded_untouched
from ..support.waits import until

USER = "15550007777"


async def pbx_dials_whatsapp(make_client, meta, phone, tmp_path, codecs: list[str]) -> Any:
    """The bridge with a trunk to a baresip PCMA phone that may place calls through it
    (``additionalCodecs`` = ``codecs``); the phone dials the WhatsApp user: Meta's call."""
    meta.user_tone_hz = META_HZ
    client = await make_client(
        **meta.bridge_settings(), data_dir=str(tmp_path), sip_trunk_listen="127.0.0.1:0"
    )
    resp = await client.patch("/numbers/default/settings", json={"additionalCodecs": codecs})
    assert resp.status == 200, await resp.text()
    p: BaresipPhone = await phone("PCMA")
    trunk = {
        "name": "reception",
        "uri": f"sip:127.0.0.1:{p.port};transport=udp",
        "codecs": ["PCMA"],
        "inbound": {"allowFrom": ["127.0.0.1/32"]},
    }
    assert (await client.post("/trunks", json=trunk)).status == 201
    await p.command("dial", f"sip:+{USER}@127.0.0.1:{client.app[TRUNKS].port}")
    mcall = await until(lambda: next(iter(meta.meta_calls.values()), None), 10, "the connect")
    assert mcall.direction == "BUSINESS_INITIATED"
    await meta.post(client, meta.envelope(meta.answer_event(mcall)))
    await meta.post(client, meta.envelope(meta.status_event(mcall, "ACCEPTED")))
    return client, p, mcall


async def test_a_pbx_phones_call_is_offered_and_answered_in_g711(
    make_client, meta, phone, tmp_path
) -> None:
    client, p, mcall = await pbx_dials_whatsapp(make_client, meta, phone, tmp_path, ["PCMA"])
    offer = mcall.offer_sdp
    pts = m_line_payloads(offer)
    assert pts[0] == "8" and pts[-1] == "126", pts  # PCMA preferred, telephone-event last
    assert "a=rtpmap:8 PCMA/8000" in offer and "opus/48000/2" in offer  # Opus to fall back on
    assert "PCMU" not in offer  # only the phone's codec
    answer = mcall.pre_accept_sdp
    assert m_line_payloads(answer) == ["8", "126"] and "opus" not in answer
    await until(lambda: mcall.peer.connected.is_set(), 10, "Meta's side connected")

    cid = await until(lambda: _call_id(client), 10, "the call")
    rt = client.app[MANAGER].find_runtime(cid)
    (leg,) = await until(lambda: rt.attached("sip") or None, 15, "the PBX's leg")
    whatsapp = rt.media.webrtc_leg
    assert whatsapp.codec == "PCMA" and leg.media.codec == "PCMA"
    forwarded = await tones_forwarded_untouched(p, mcall.peer, leg, whatsapp)
    # What the phone sent reaches Meta bit-exact: the bridge's packets carry its payloads.
    got = [pkt.payload for pkt in mcall.peer.audio_received if pkt.payload_type == 8]
    assert len(got) > 50 and all(len(x) == 160 for x in got)
    print(f"forwarded to the phone, to WhatsApp: {forwarded}")
    await client.post("/call/hangup", json={"callID": cid})
    await wait_state(client, cid, "ended")


async def test_without_the_opt_in_meta_answers_opus_and_the_call_is_coded(
    make_client, meta, phone, tmp_path
) -> None:
    client, p, mcall = await pbx_dials_whatsapp(make_client, meta, phone, tmp_path, ["PCMU"])
    assert m_line_payloads(mcall.offer_sdp)[0] == "8"  # still asked: Meta picks
    answer = mcall.pre_accept_sdp
    assert "opus/48000/2" in answer and "PCMA" not in answer
    cid = await until(lambda: _call_id(client), 10, "the call")
    rt = client.app[MANAGER].find_runtime(cid)
    (leg,) = await until(lambda: rt.attached("sip") or None, 15, "the PBX's leg")
    assert rt.media.webrtc_leg.codec == "opus" and leg.media.codec == "PCMA"
    await until(lambda: p.dump_bytes() > 16000, 15, "the phone's audio")
    await client.post("/call/hangup", json={"callID": cid})
    await wait_state(client, cid, "ended")


async def _call_id(client: Any) -> str | None:
    calls = (await (await client.get("/call/status")).json())["calls"]
    return calls[0]["callID"] if calls else None
