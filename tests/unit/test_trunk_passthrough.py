"""WhatsApp's Opus forwarded to a phone (``trunks/passthrough.py``, ``TrunkMedia.offer``): which
packets qualify, and how they are numbered into the trunk leg's own RTP stream."""

from __future__ import annotations

import struct

import numpy as np

from bridge.audio.opus import OpusEncoder
from bridge.trunks.media import TrunkMedia
from bridge.trunks.passthrough import one_20ms_frame


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_rtp(self, plain: bytes) -> None:
        _, _, seq, ts, _ = struct.unpack_from("!BBHII", plain)
        self.sent.append((seq, ts, plain[12:]))

    def close(self) -> None:
        pass


def opus_packet() -> bytes:
    enc = OpusEncoder(16000, bitrate=20000, complexity=5, fec=True, expected_loss=5, dtx=False)
    t = np.arange(320) / 16000
    return enc.encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


def test_only_single_20ms_frames_qualify() -> None:
    packet = opus_packet()
    assert one_20ms_frame(packet)
    assert not one_20ms_frame(bytes([packet[0] | 0x01]) + packet[1:])  # two frames (code 1)
    assert not one_20ms_frame(bytes([(16 << 3)]) + b"x")  # CELT 2.5 ms
    assert not one_20ms_frame(bytes([(0 << 3)]) + b"x")  # SILK 10 ms
    assert one_20ms_frame(bytes([(13 << 3)]) + b"x")  # hybrid 20 ms
    assert not one_20ms_frame(b"")


def media(allowed: list[bool]) -> tuple[TrunkMedia, Wire]:
    m = TrunkMedia("t", "opus", 111, 101, lambda pcm: None, lambda: None, lambda d, ms: None)
    wire = Wire()
    m.socket = wire
    m.forward_allowed = lambda: allowed[0]
    return m, wire


def test_forwarded_packets_keep_their_gaps_and_continue_our_numbering() -> None:
    allowed = [True]
    m, wire = media(allowed)
    packet = opus_packet()
    seq0, ts0 = m._seq, m._ts
    for seq, ts in ((1000, 5000), (1001, 5960), (1003, 7880), (1002, 6920), (999, 4040)):
        m.offer(seq, ts, packet)
    sent = [(s, t) for s, t, _ in wire.sent]
    # Mapped by one offset: the lost 1002's place stays a gap until it comes (reordered), and a
    # packet older than the run (999) is dropped, its number having gone out already.
    assert sent == [
        (seq0, ts0),
        ((seq0 + 1) & 0xFFFF, (ts0 + 960) & 0xFFFFFFFF),
        ((seq0 + 3) & 0xFFFF, (ts0 + 2880) & 0xFFFFFFFF),
        ((seq0 + 2) & 0xFFFF, (ts0 + 1920) & 0xFFFFFFFF),
    ]
    assert all(p == packet for _, _, p in wire.sent)
    assert m.forward_late == 1 and m.forwarded == 4
    # Mixing starts: the next packet is not forwarded and our own encoding goes on after the
    # newest forwarded number and time.
    allowed[0] = False
    m.offer(1004, 8840, packet)
    assert len(wire.sent) == 4 and m._run is None
    assert m._seq == (seq0 + 4) & 0xFFFF and m._ts == (ts0 + 3840) & 0xFFFFFFFF


def test_a_queued_key_stops_forwarding() -> None:
    m, wire = media([True])
    m.send_key("5")
    m.offer(1, 960, opus_packet())
    assert wire.sent == [] and m.forwarded == 0
