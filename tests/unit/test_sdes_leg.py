"""The SDES-SRTP leg to Meta (engines/cloudapi/sdes.py) against a second SRTP endpoint written
in the tests with libsrtp and libopus (tests/support/sdes_peer.py), over loopback UDP: the first
packet leaves before any audio source exists, a tone each way, RTCP both ways, RFC 4733 both
ways, symmetric RTP, and hostile keys and packets."""

from __future__ import annotations

import asyncio
import base64
import itertools
import tracemalloc

import numpy as np
import pytest

from bridge.errors import BadOffer
from bridge.rtc.sdes import parse_crypto, read_savp

from ..support.loops import LoopLag
from ..support.sdes_leg import Port, sdes_leg
from ..support.sdes_peer import SdesEndpoint, tone
from ..support.spectrum import band_energy
from ..support.waits import until


def _rms_db(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) / 32768 + 1e-12))


async def test_first_packet_leaves_at_once_and_a_tone_reaches_meta(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg()
    try:
        answer = await peer.answer(sdes_meta.sdp())
        assert (
            "RTP/SAVP 111 126" in answer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in answer
        )
        sdes_meta.take(answer)
        # Nobody has opened the channel or sent audio: media flows anyway (Meta waits for it).
        await until(lambda: sdes_meta.packets, 2.0, "the first SRTP packet")
        assert peer.leg.first_sent_at is not None and sdes_meta.auth_failed == 0
        assert sdes_meta.packets[0][1] == 111
        sdes_meta.pcm.clear()
        # 1.5 s of 600 Hz at -12 dBFS, taken a frame a tick by the leg's sender from the bus
        port = Port([tone(600, 0.25 * 32767 * 2**0.5 / 2**0.5, i * 320, 320) for i in range(75)])
        peer.open_channel().plug(port)
        await until(lambda: not port.outbox, 3.0, "the sender taking the bus's frames")
        await asyncio.sleep(0.1)
        assert port.taken == 75
        heard = sdes_meta.heard()[16_000 // 2 :]
        assert heard.size > 8000
        assert band_energy(heard, 16_000, 600) > 0.9
        assert -16 < _rms_db(heard) < -9
        assert peer.leg_json()["silentFramesSent"] > 0
    finally:
        await peer.close()


async def test_a_tone_from_meta_reaches_the_bus_and_rtcp_flows(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg(rtcp_interval=0.2)
    try:
        sdes_meta.take(await peer.answer(sdes_meta.sdp()))
        port = Port()
        peer.open_channel().plug(port)
        frames = port.accepted
        async with LoopLag() as lag:  # Meta's sender and our receiver share this process
            await sdes_meta.play_tone(1000, 8000, 1.5)
            await until(lambda: len(frames) >= 60, 3.0, "frames from Meta")
        assert all(f.shape == (320,) and f.dtype == np.int16 for f in frames)
        heard = np.concatenate(frames[20:])
        # The tone, but for what a stall of this process cost: up to a frame's share of the
        # energy (1/40 of these 40-odd frames) off the tone for each frame it may have cost
        # (once on a loaded host: 0.87 at 1 kHz; a concealed frame is not the tone).
        assert band_energy(heard, 16_000, 1000) > 0.9 - lag.frames / 40, lag.worst
        assert abs(_rms_db(heard) - _rms_db(tone(1000, 8000, 0, 16000))) < 3
        # RTCP: our sender reports reach Meta (SRTCP), and Meta's report about us is read.
        await until(lambda: sdes_meta.sender_reports(), 3.0, "a sender report")
        sr = sdes_meta.sender_reports()[-1]
        assert sr.ssrc == peer.leg.stream.ssrc and sr.sender_info.packet_count > 0
        assert any(r.ssrc == sdes_meta.ssrc for r in sr.reports)
        sdes_meta.send_rr(peer.leg.stream.ssrc)
        await until(lambda: peer.leg.reports.far_reports, 2.0, "Meta's receiver report")
        assert peer.far_end_loss == 0.25
        quality = await peer.sample_quality()
        assert quality is not None and quality.uplink_packets > 50
        stats = peer.leg_json()
        assert stats["rtcpReceived"] == 1 and stats["rtcpSent"] >= 1 and stats["latched"]
    finally:
        await peer.close()
    assert peer.state == "closed"
    await peer.close()  # idempotent


async def test_meta_sends_nothing_before_the_bridges_first_packet(sdes_meta: SdesEndpoint) -> None:
    """Meta's SIP road with SDES keys, as with DTLS: Meta sends no RTP until the business's
    first packet has arrived. Meta starts its tone the moment it has the bridge's answer;
    the bridge's leg, with no channel open and nothing to say, sends first, so the tone
    reaches the bus once a channel is plugged in."""
    peer, _ = sdes_leg()
    try:
        sdes_meta.take(await peer.answer(sdes_meta.sdp()))
        talking = asyncio.create_task(sdes_meta.play_tone(1000, 8000, 1.5))
        port = Port()
        peer.open_channel().plug(port)
        await talking
        gate = sdes_meta.gate
        assert gate.first_rtp_at is not None and gate.first_sent_at is not None
        assert gate.first_sent_at >= gate.first_rtp_at  # the bridge's first, then Meta's
        await until(lambda: len(port.accepted) >= 60, 3.0, "frames from Meta")
        heard = np.concatenate(port.accepted[-40:])
        assert band_energy(heard, 16_000, 1000) > 0.8
    finally:
        await peer.close()


async def test_dtmf_both_ways(sdes_meta: SdesEndpoint) -> None:
    peer, digits = sdes_leg()
    try:
        sdes_meta.take(await peer.answer(sdes_meta.sdp()))
        await sdes_meta.play_tone(440, 4000, 0.2)  # the stream is up
        await sdes_meta.press(5, 100)
        await until(lambda: digits, 2.0, "the key press")
        assert digits == [("5", 100)]
        done = asyncio.Event()
        peer.open_channel().send_dtmf("#1", 100, 60, done.set)
        await asyncio.wait_for(done.wait(), 3.0)
        ends = {(ts, ev) for ts, ev, end, _ in sdes_meta.events() if end}
        assert sorted(ev for _, ev in ends) == [1, 11]
    finally:
        await peer.close()


async def test_key_presses_go_out_on_the_clock_in_place_of_audio(sdes_meta: SdesEndpoint) -> None:
    """RFC 4733 §2.5.1 as the track sends it: a press is one packet a tick on consecutive ticks
    of the audio's stream (no audio between them), one RTP timestamp (the tick it began on),
    the marker on the first, the duration growing 20 ms a tick, the end packet three times;
    then its gap as audio, whose RTP time moved on by the ticks the press took."""
    peer, _ = sdes_leg()
    try:
        sdes_meta.take(await peer.answer(sdes_meta.sdp()))
        port = Port([tone(600, 8000, i * 320, 320) for i in range(200)])
        peer.open_channel().plug(port)
        await until(lambda: port.taken >= 10, 2.0, "the tone going out")
        done = asyncio.Event()
        peer.open_channel().send_dtmf("#1", 100, 60, done.set)
        await asyncio.wait_for(done.wait(), 3.0)
        await until(lambda: sdes_meta.packets[-1][1] == 111, 2.0, "audio after the presses")
    finally:
        await peer.close()
    packets = sorted(sdes_meta.packets, key=lambda p: (p[2] - sdes_meta.packets[0][2]) & 0xFFFF)
    seqs = [p[2] for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))  # one stream
    kinds = "".join("e" if p[1] == 126 else "a" for p in packets)
    # Each press in place of its ticks' audio: 5 ticks (4 packets, the end 3 times), then
    # 60 ms (3 ticks) of audio before the next.
    assert "aeeeeeeeaaaeeeeeeea" in kinds and kinds.count("e") == 14
    first = kinds.index("e")
    for start, event in ((first, 11), (first + 10, 1)):
        press = packets[start : start + 7]
        before, after = packets[start - 1], packets[start + 7]
        assert {p[4][0] for p in press} == {event}
        assert {p[3] for p in press} == {(before[3] + 960) & 0xFFFFFFFF}  # its first tick's
        assert [p[2] in sdes_meta.marked for p in press] == [True] + [False] * 6
        durations = [int.from_bytes(p[4][2:4], "big") for p in press]
        assert durations == [160, 320, 480, 640, 800, 800, 800]  # 8 kHz units
        assert [bool(p[4][1] & 0x80) for p in press] == [False] * 4 + [True] * 3
        assert all(p[4][1] & 0x3F == 10 for p in press)  # -10 dBm0
        # The audio after it: the press's 5 ticks on, a new talkspurt (RFC 3551 §4.1).
        assert (after[3] - before[3]) & 0xFFFFFFFF == 6 * 960 and after[2] in sdes_meta.marked
    assert (packets[first + 10][3] - packets[first][3]) & 0xFFFFFFFF == 8 * 960
    assert peer.leg_json()["dtmfSent"] == 2


async def test_symmetric_rtp_latches_to_authenticated_sources_only(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg()
    moved = SdesEndpoint(key=sdes_meta.key)
    await moved.start()
    try:
        answer = await peer.answer(sdes_meta.sdp())
        sdes_meta.take(answer)
        moved.take(answer)
        moved.ssrc = sdes_meta.ssrc
        moved.gate.heard()  # Meta had the bridge's packets at its old address
        forged = SdesEndpoint()  # the wrong key: its packets never authenticate
        await forged.start()
        forged.take(answer)
        forged.gate.heard()  # no Meta: it waits for nobody
        for _ in range(5):
            forged.send_rtp(b"\x00" * 40)
        await until(lambda: peer.socket.auth_failed >= 5, 2.0, "forged packets counted")
        assert peer.socket.rtp_to == ("127.0.0.1", sdes_meta.port)
        forged.close()
        # Meta's media now comes from another port (NAT rebinding): the bridge follows it.
        await moved.play_tone(440, 4000, 0.2)
        await until(lambda: moved.packets, 2.0, "packets at the new address")
        assert peer.socket.rtp_to == ("127.0.0.1", moved.port)
        assert peer.leg_json()["srtpAuthFailed"] >= 5 and not peer.dead
    finally:
        moved.close()
        await peer.close()


async def test_business_initiated_offer_and_answer(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg()
    try:
        offer = await peer.offer()
        ours = read_savp(offer)
        assert ours.crypto.suite == "AES_CM_128_HMAC_SHA1_80" and ours.rtcp_mux
        assert not peer.answered
        sdes_meta.take(offer)
        await peer.apply_answer(sdes_meta.sdp())
        await until(lambda: sdes_meta.packets, 2.0, "the first packet after the answer")
        assert peer.answered
    finally:
        await peer.close()


async def test_media_timeout_fails_the_channel(sdes_meta: SdesEndpoint) -> None:
    peer, _ = sdes_leg(rtcp_interval=0.1, media_timeout=0.3)
    try:
        sdes_meta.take(await peer.answer(sdes_meta.sdp()))
        port = Port()
        peer.open_channel().plug(port)
        await until(lambda: port.why, 3.0, "the leg's end told to the bus")
        assert "no packet from Meta" in port.why[0] and len(port.why) == 1
        assert peer.dead
    finally:
        await peer.close()


# A fixed key: test ids carry it, and every pytest-xdist worker must collect the same ids.
KEY = base64.b64encode(bytes(range(30))).decode()


@pytest.mark.parametrize(
    ("crypto", "why"),
    [
        (f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}", "not supported"),
        ("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", "not valid base64"),
        (
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(b'x' * 16).decode()}",
            "16 bytes",
        ),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20", "too short"),
        (f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4", "MKI"),
        ("a=crypto:x", "malformed"),
        ("", "no a=crypto"),
    ],
)
async def test_a_bad_key_is_refused_with_its_reason(
    sdes_meta: SdesEndpoint, crypto: str, why: str
) -> None:
    peer, _ = sdes_leg()
    try:
        with pytest.raises(BadOffer, match=why):
            await peer.answer(sdes_meta.sdp(crypto=crypto))
        assert peer.leg.first_sent_at is None
    finally:
        await peer.close()


def test_a_lifetime_is_judged_by_its_exponent_never_raised_to_it() -> None:
    """``|2^n`` (RFC 4568 §9.2) is compared by ``n``: the key's lifetime was computed as
    ``2 ** n``, the offer's ``n`` digits long, so ``2^99999999999`` asked for 12.5 GB (the
    worker out of memory: every call of it gone) and ``2^100000000`` for 12.5 MB."""
    tracemalloc.start()
    try:
        ok = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^100000000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ok.key) == 30 and peak < 1_000_000, peak
    assert parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2147483648").tag == 1
    for short in ("2^30", "2147483647"):
        with pytest.raises(BadOffer, match="too short"):
            parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|{short}")
    for malformed in ("2^-1", "2^1_0", "2^²"):  # ASCII digits only (int() takes the others)
        with pytest.raises(BadOffer, match="malformed"):
            parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|{malformed}")


async def test_dtls_offers_and_other_media_are_refused(sdes_meta: SdesEndpoint) -> None:
    with pytest.raises(BadOffer, match="BRIDGE_CLOUDAPI_MEDIA=dtls"):
        read_savp(sdes_meta.sdp(proto="UDP/TLS/RTP/SAVPF"))
    with pytest.raises(BadOffer, match="no audio"):
        read_savp("v=0\r\nm=video 4000 RTP/SAVP 96\r\n")
    meta = read_savp(sdes_meta.sdp())  # a=rtcp:9 IN IP4 0.0.0.0 beside a=rtcp-mux: muxed
    assert meta.rtcp == ("127.0.0.1", sdes_meta.port) and meta.rtcp_mux  # RFC 5761 §5.1.1
    unmuxed = (
        sdes_meta.sdp().replace("a=rtcp-mux\r\n", "").replace("a=rtcp:9 IN IP4 0.0.0.0\r\n", "")
    )
    plain = read_savp(unmuxed)
    assert plain.rtcp == ("127.0.0.1", sdes_meta.port + 1) and not plain.rtcp_mux  # RFC 3550 §11
    ok = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31")
    assert ok.suite == "AES_CM_128_HMAC_SHA1_32" and len(ok.key) == 30
