"""DTX toward a browser that asks for it (audio/dtx.py ``DtxGate`` in rtc/tracks.py), and the
answer that asks the browser for it (rtc/browser_sdp.py)."""

from __future__ import annotations

import time

import numpy as np

from bridge.audio import FRAME_SAMPLES
from bridge.audio.dtx import DTX_UPDATE_FRAMES, DtxGate
from bridge.audio.receiver import Receiver
from bridge.rtc.browser_sdp import answer_fmtp, asks_for_dtx, opus_parameters, with_opus_fmtp
from bridge.rtc.protection import EncoderSetting, LossProtection
from bridge.rtc.rtpsend import RtpStream
from bridge.rtc.tracks import OpusBusTrack
from tests.support.spectrum import dominant_frequency

HZ, PEAK = 700.0, 8000


class Spurts:
    """A 700 Hz tone in spurts, 20 ms at a time: ``None`` (nothing to play: digital silence)
    in the frames of ``pauses`` (frame ranges)."""

    def __init__(self, pauses: list[range]) -> None:
        self.n = 0
        self.pauses = pauses

    def take(self, now: float) -> np.ndarray | None:
        n, self.n = self.n, self.n + 1
        if any(n in p for p in self.pauses):
            return None
        t = (np.arange(FRAME_SAMPLES) + n * FRAME_SAMPLES) / 16_000
        return (np.sin(2 * np.pi * HZ * t) * PEAK).astype(np.int16)

    def detach(self) -> None:
        pass


def test_the_gate_sends_a_packet_of_no_audio_every_400_ms_of_settled_silence() -> None:
    gate = DtxGate()
    speech = bytes([0xFC]) + b"x" * 60  # CELT FB 20 ms, code 0
    cycle = bytes([0xFC]) + b"\x07\x7f"
    assert gate.outgoing(speech, False) == speech
    assert gate.outgoing(cycle, False) == cycle  # silence the far decoder has not settled in
    out = [gate.outgoing(cycle, True) for _ in range(3 * DTX_UPDATE_FRAMES)]
    sent = [i for i, p in enumerate(out) if p is not None]
    assert sent == [0, DTX_UPDATE_FRAMES - 1, 2 * DTX_UPDATE_FRAMES - 1, 3 * DTX_UPDATE_FRAMES - 1]
    assert all(out[i] == b"\xfc" for i in sent)  # the TOC, code 0: one empty frame
    assert gate.marker is False  # a packet of no audio
    assert gate.outgoing(speech, False) == speech  # sound: sent at once
    assert gate.marker is True  # the first of a talk spurt
    assert gate.outgoing(speech, False) == speech and gate.marker is None
    # libopus' own DTX (BRIDGE_OPUS_DTX): WebRTC's rule, the first packet of no audio only.
    marker, update = b"\x08", b"\x08" + b"u" * 7
    assert [gate.outgoing(p, False) for p in (marker, marker, marker, update, marker, marker)] == [
        marker,
        None,
        None,
        update,
        marker,
        None,
    ]
    # libopus' comfort-noise update comes 400 ms into its DTX: sent, but no talk spurt (as
    # libwebrtc sends it: CN, no marker); the sound after the silence is one.
    gate = DtxGate()
    assert gate.outgoing(speech, False) == speech
    marks = []
    for p in [marker] * DTX_UPDATE_FRAMES + [update, marker, marker, speech]:
        if gate.outgoing(p, False) is not None:
            marks.append(gate.marker)
    assert marks == [False, False, False, True], marks


async def test_a_pause_goes_out_as_dtx_and_the_next_spurt_keeps_its_place_in_rtp_time() -> None:
    """The engine's digital silence (nothing to play) toward a browser that asked for DTX:
    after the encoder settles, a packet every 400 ms; the tone after it is sent at its own RTP
    time, and a receiver plays it where the sender put it, with the pause as silence."""
    pause = range(20, 90)  # 1.4 s of silence between two 0.4 s spurts
    track = OpusBusTrack(
        Spurts([pause]),
        protection=LossProtection(),
        clean=EncoderSetting(72_000, 2, celt=True),
        dtx_gate=DtxGate(),
    )
    track.far_end_report(0.0)  # a clean link: CELT, as a browser's downlink usually is
    packets = []
    while not packets or packets[-1].pts < 110 * 960:
        packets.extend(track.packets(time.monotonic()))
    track.stop()
    frames = [p.pts // 960 for p in packets]
    in_pause = [f for f in frames if f in pause]
    # The encoder learns its cycle in 8 frames, then one packet of no audio every 400 ms.
    assert len(in_pause) <= 8 + 1 + len(pause) // DTX_UPDATE_FRAMES + 1
    assert [len(p.data) for p in packets if p.pts // 960 in pause][-2:] == [1, 1]
    assert frames == sorted(frames) and 90 in frames  # the spurt's first frame, in its place
    assert track.dtx_frames == 110 + 1 - len(packets)
    # The marker bit as WebRTC sets it (RFC 3551 §4.1): on the first packet of each talk spurt
    # after DTX, never on a packet of no audio, though RTP time jumps before each of them.
    stream = RtpStream(1, 111, first_seq=0, origin=0)
    marked = [
        f
        for f, p in zip(frames, packets, strict=True)
        if stream.packetise(p.data, p.pts, marker=p.marker)[1] & 0x80
    ]
    assert marked == [0, 90], marked
    assert all(p.marker is False for p in packets if len(p.data) <= 2)
    # A receiver fed the packets on their RTP time plays the spurts 1.8 s apart, to the sample.
    rx = Receiver()
    out, at = [], {p.pts // 960: (seq, p) for seq, p in enumerate(packets)}
    for k in range(frames[-1] + 1):
        if k in at:
            seq, p = at[k]
            rx.push(seq, p.pts, p.data, k * 0.02 + 0.001)
        out.append(rx.pop(k * 0.02 + 0.007))
    played = np.concatenate(out)
    loud = np.flatnonzero(np.abs(played) > PEAK / 2)
    second = loud[loud > 50 * FRAME_SAMPLES]
    assert second[0] - loud[0] in range(90 * FRAME_SAMPLES - 40, 90 * FRAME_SAMPLES + 40)
    assert np.abs(played[30 * FRAME_SAMPLES : 88 * FRAME_SAMPLES]).max() <= 2
    assert (
        abs(dominant_frequency(played[92 * FRAME_SAMPLES : 108 * FRAME_SAMPLES], 16_000) - HZ) < 5
    )
    assert rx.stats.dtx_samples >= 55 * FRAME_SAMPLES and rx.stats.packets_lost == 0
    assert rx.stats.concealment_events == 0


def test_the_answer_asks_for_dtx_and_an_offer_that_asks_for_it_is_heard() -> None:
    answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    assert opus_parameters(with_opus_fmtp(answer, answer_fmtp(dtx=True)))["usedtx"] == "1"
    assert "usedtx" not in opus_parameters(with_opus_fmtp(answer, answer_fmtp()))
    capped = opus_parameters(with_opus_fmtp(answer, answer_fmtp(20_000, dtx=True)))
    assert capped["maxaveragebitrate"] == "20000" and capped["usedtx"] == "1"
    assert asks_for_dtx(answer + "a=fmtp:111 minptime=10;useinbandfec=1; usedtx=1\r\n")
    assert not asks_for_dtx(answer + "a=fmtp:111 minptime=10;useinbandfec=1\r\n")
    assert not asks_for_dtx(answer + "a=fmtp:111 usedtx=0\r\n")
