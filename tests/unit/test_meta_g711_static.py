"""Meta's G.711 named by its static payload type alone (RFC 3551 §6: ``8`` is PCMA with or
without ``a=rtpmap:8 PCMA/8000``) on the WebRTC leg: the bridge reads the codec from the
m-line (``AudioSection.encodings``) and aiortc, which knows only written rtpmaps, is given
them (``rtc/sdp.py`` ``static_rtpmaps``). Meta's offer was answered in PCMA by our reading and
refused by aiortc's ("Failed to set remote audio description"), so the call was rejected; an
answer to our offer failed the same way. Real aiortc peers over loopback, Meta's ice-lite."""

from __future__ import annotations

import asyncio

from bridge.engines.base import EngineStats
from bridge.engines.cloudapi.peer import WhatsAppPeer
from tests.fakes.cloudapi import MetaPeer
from tests.support.meta_g711 import m_line_payloads


def _peer() -> WhatsAppPeer:
    return WhatsAppPeer(
        "g711", None, EngineStats(), on_dtmf=lambda *_: None, on_media=lambda *_: None
    )


def _unwritten(sdp: str, pt: int) -> str:
    """``sdp`` without the ``a=rtpmap`` of static payload type ``pt``."""
    lines = [ln for ln in sdp.splitlines() if not ln.startswith(f"a=rtpmap:{pt} ")]
    return "\r\n".join(lines) + "\r\n"


async def test_metas_offer_naming_pcma_by_its_payload_type_is_answered_in_pcma() -> None:
    meta, peer = MetaPeer(440.0), _peer()
    try:
        offer = _unwritten(await meta.offer(("PCMA",)), 8)
        assert m_line_payloads(offer) == ["111", "8", "126"]
        answer = await peer.answer(offer, ("PCMA",))  # a PBX phone on PCMA takes the call
        assert peer.codec == "PCMA" and m_line_payloads(answer) == ["8", "126"]
        await meta.apply_answer(answer)
        await asyncio.wait_for(meta.connected.wait(), 10)  # ICE and DTLS up on Meta's side
    finally:
        await peer.close()
        await meta.close()


async def test_metas_answer_naming_pcma_by_its_payload_type_runs_the_leg_in_pcma() -> None:
    meta, peer = MetaPeer(440.0), _peer()
    try:
        offer = await peer.offer(("PCMA",))  # placed for a PBX phone on PCMA
        assert m_line_payloads(offer)[0] == "8"  # PCMA first, Opus after it
        answer = _unwritten(await meta.answer_offer(offer, "PCMA"), 8)
        assert "8" in m_line_payloads(answer) and "a=rtpmap:8 " not in answer
        await peer.apply_answer(answer)
        assert peer.codec == "PCMA"
        await asyncio.wait_for(meta.connected.wait(), 10)
    finally:
        await peer.close()
        await meta.close()
