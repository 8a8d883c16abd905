"""G.711 on the SDES-SRTP leg to Meta (issue 60; ``engines/cloudapi/sdes.py``) against a second
SRTP endpoint playing Meta's side (tests/support/sdes_peer.py) over loopback UDP, for a number
opted in to ``additional_codecs``: the leg answers Meta's offer in the G.711 of the call's other
leg (a PBX phone's), offers that G.711 before Opus on a business-initiated call and runs in the
one Meta's answer picks. Asserted on the audio: the m-line, the packets' payload type and size,
a tone's frequency and level each way."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from bridge.engines.cloudapi.sdes import SdesPeer
from bridge.errors import BadOffer

from ..support.meta_g711 import level_dbfs, m_line_payloads
from ..support.sdes_leg import Port, sdes_leg
from ..support.sdes_peer import G711_PT, SdesEndpoint, tone
from ..support.spectrum import dominant_frequency
from ..support.waits import until

AMPLITUDE = 8000
"""The tones' peak: about -15 dBFS."""
LEVEL = level_dbfs(tone(1000, AMPLITUDE, 0, 16_000).astype(np.float64))


async def meta_hears_g711(peer: SdesPeer, sdes_meta: SdesEndpoint, codec: str) -> None:
    """The bus's 600 Hz tone, taken a frame a tick by the leg, reaches Meta as ``codec`` on its
    static payload type, 160 bytes (20 ms at 8 kHz) a packet, at the tone's frequency and
    level."""
    port = Port([tone(600, AMPLITUDE, i * 320, 320) for i in range(75)])
    peer.open_channel().plug(port)
    await until(lambda: not port.outbox, 3.0, "the sender taking the bus's frames")
    await asyncio.sleep(0.1)
    audio = [p for p in sdes_meta.packets if p[1] != 126]
    assert audio and {p[1] for p in audio} == {G711_PT[codec]}
    assert {len(p[4]) for p in audio} == {160}
    steps = [(b[3] - a[3]) & 0xFFFFFFFF for a, b in itertools.pairwise(audio)]
    assert steps.count(160) > 0.9 * len(steps)  # 8 kHz RTP time, 20 ms a packet
    heard = np.concatenate(sdes_meta.g711[-50:]).astype(np.float64)
    assert dominant_frequency(heard, 8000) == pytest.approx(600, abs=5)
    assert level_dbfs(heard) == pytest.approx(LEVEL, abs=2)


async def bus_hears_g711(peer: SdesPeer, sdes_meta: SdesEndpoint, codec: str) -> None:
    """Meta's 1000 Hz tone in ``codec`` reaches the bus decoded, 16 kHz frames of 20 ms, at
    its frequency and level."""
    port = Port()
    peer.open_channel().plug(port)
    await sdes_meta.play_g711(codec, 1000, AMPLITUDE, 1.5)
    await until(lambda: len(port.accepted) >= 60, 3.0, "frames from Meta")
    assert all(f.shape == (320,) and f.dtype == np.int16 for f in port.accepted)
    heard = np.concatenate(port.accepted[20:]).astype(np.float64)
    assert dominant_frequency(heard, 16_000) == pytest.approx(1000, abs=5)
    assert level_dbfs(heard) == pytest.approx(LEVEL, abs=2)


@pytest.mark.parametrize(("codec", "pt"), [("PCMA", "8"), ("PCMU", "0")])
async def test_meta_offers_g711_and_the_leg_answers_the_phones_codec(
    sdes_meta: SdesEndpoint, codec: str, pt: str
) -> None:
    """A user-initiated call to a PBX phone of ``codec``: Meta's offer names Opus and both
    G.711s; the answer names the phone's alone, and the leg runs in it both ways."""
    peer, _ = sdes_leg()
    try:
        offer = sdes_meta.sdp(codecs=("opus", "PCMA", "PCMU"))
        answer = await peer.answer(offer, other_leg=(codec, "G722"))
        assert m_line_payloads(answer) == [pt, "126"] and "opus" not in answer
        assert f"a=rtpmap:{pt} {codec}/8000" in answer
        assert peer.codec == codec and peer.audio_pt == int(pt)
        sdes_meta.take(answer)
        await meta_hears_g711(peer, sdes_meta, codec)
        await bus_hears_g711(peer, sdes_meta, codec)
    finally:
        await peer.close()


async def test_without_a_g711_phone_the_answer_stays_opus(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg()
    try:
        answer = await peer.answer(sdes_meta.sdp(codecs=("opus", "PCMA")), other_leg=("G722",))
        assert m_line_payloads(answer) == ["111", "126"] and "PCMA" not in answer
        sdes_meta.take(answer)
        await until(lambda: sdes_meta.packets, 2.0, "the first packet")
        assert sdes_meta.packets[0][1] == 111 and peer.codec == "opus"
    finally:
        await peer.close()


async def test_business_initiated_offer_names_g711_first_and_runs_in_metas_pick(
    sdes_meta: SdesEndpoint,
) -> None:
    """A PBX phone of PCMA places the call: our offer names PCMA before Opus; Meta (opted in)
    answers PCMA alone, and the leg switches to it both ways."""
    peer, _ = sdes_leg()
    try:
        offer = await peer.offer(other_leg=("PCMA",))
        assert m_line_payloads(offer) == ["8", "111", "126"]
        assert "a=rtpmap:8 PCMA/8000" in offer and "opus/48000/2" in offer
        assert "PCMU" not in offer
        sdes_meta.take(offer)
        await peer.apply_answer(sdes_meta.sdp(codecs=("PCMA",)))
        assert peer.codec == "PCMA" and peer.audio_pt == 8
        await meta_hears_g711(peer, sdes_meta, "PCMA")
        await bus_hears_g711(peer, sdes_meta, "PCMA")
    finally:
        await peer.close()


async def test_meta_answering_opus_to_a_g711_offer_keeps_opus(sdes_meta: SdesEndpoint) -> None:
    """Without the opt-in Meta answers Opus: the leg stays coded in Opus."""
    peer, _ = sdes_leg()
    try:
        sdes_meta.take(await peer.offer(other_leg=("PCMU",)))
        await peer.apply_answer(sdes_meta.sdp())
        assert peer.codec == "opus" and peer.audio_pt == 111
        await until(lambda: len(sdes_meta.pcm) > 5, 2.0, "Opus packets")
        assert {p[1] for p in sdes_meta.packets} == {111}
    finally:
        await peer.close()


async def test_an_answer_naming_no_offered_codec_is_refused(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg()
    try:
        sdes_meta.take(await peer.offer(other_leg=("PCMA",)))
        with pytest.raises(BadOffer, match="none of the codecs offered"):
            await peer.apply_answer(sdes_meta.sdp(codecs=("PCMU",)))
        assert not peer.answered and peer.leg.first_sent_at is None
    finally:
        await peer.close()
