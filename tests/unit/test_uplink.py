"""The uplink receive path taken over from aiortc: loss, lateness and bad payloads are counted
and never end the stream."""

from __future__ import annotations

import av
import numpy as np
from aiortc.jitterbuffer import JitterFrame

from bridge.audio import FRAME_SAMPLES, tone
from bridge.media import BusStats
from bridge.rtc.uplink import DirectDecoder


def opus_packets(n: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48_000, "mono", "s16"
    codec.open()
    out = []
    pcm = tone(440, 960 * n, 48_000)
    for i in range(n):
        f = av.AudioFrame.from_ndarray(pcm[i * 960 : (i + 1) * 960].reshape(1, -1), "s16", "mono")
        f.sample_rate, f.pts = 48_000, i * 960
        out += [bytes(p) for p in codec.encode(f)]
    return out


def test_empty_rtp_payload_does_not_end_the_uplink_decoder() -> None:
    frames: list[np.ndarray] = []
    decoder = DirectDecoder(frames.append, BusStats())
    packets = opus_packets(10)
    decoder.put((None, JitterFrame(packets[0], 0)))
    decoder.put((None, JitterFrame(b"", 0)))  # padding-only RTP
    for p in packets[1:]:
        decoder.put((None, JitterFrame(p, 0)))
    assert len(frames) >= 8 and {f.size for f in frames} == {FRAME_SAMPLES}


def test_late_rtp_and_undecodable_opus_are_counted() -> None:
    from types import SimpleNamespace

    from bridge.rtc.uplink import PassThroughBuffer

    stats = BusStats()
    buffer = PassThroughBuffer(stats)
    for seq in (1, 2, 2, 1, 3, 65535):  # a duplicate, a late one, a wrap-around-old one
        buffer.add(SimpleNamespace(sequence_number=seq, _data=b"x", timestamp=seq * 960))
    assert stats.uplink_rtp_late == 3
    frames: list[np.ndarray] = []
    decoder = DirectDecoder(frames.append, stats)
    decoder.put((None, JitterFrame(b"\xff" * 3, 0)))  # not Opus
    for p in opus_packets(3):
        decoder.put((None, JitterFrame(p, 0)))
    assert stats.uplink_decode_errors == 1 and len(frames) >= 2
