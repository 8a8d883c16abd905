"""G.722 on a trunk (RFC 3551 §4.5.2): the codec keeps a tone's frequency and level through
encode → decode, a trunk leg sends it as PT 9 with 160-byte payloads and its timestamps
stepping 160 (the 8 kHz RTP clock of a 16 kHz codec), and its SDP offers and reads it."""

from __future__ import annotations

import itertools
import struct
import time

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from bridge.audio.analysis import rms_dbfs, tone
from bridge.audio.g722 import PAYLOAD_BYTES, G722Decoder, G722Encoder
from bridge.audio.pcm import FRAME_SAMPLES
from bridge.trunks import sdp
from bridge.trunks.media import TrunkMedia

from ..support.spectrum import dominant_frequency

SECOND = 50  # frames


def noop(*_: object) -> None:
    pass


def frames_of(freq: float, count: int, amplitude: float = 0.5) -> list[np.ndarray]:
    whole = tone(freq, FRAME_SAMPLES * count, amplitude=amplitude)
    return [whole[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(count)]


@pytest.mark.parametrize("freq", [1000.0, 300.0, 6000.0])
def test_a_tone_through_encode_and_decode_keeps_its_frequency_and_level(freq: float) -> None:
    encoder, decoder = G722Encoder(), G722Decoder()
    sent = frames_of(freq, SECOND)
    payloads = [encoder.encode(frame) for frame in sent]
    assert {len(p) for p in payloads} == {PAYLOAD_BYTES}  # 64 kbit/s: 160 bytes a 20 ms
    heard = np.concatenate([decoder.decode(p) for p in payloads])
    assert heard.dtype == np.int16 and heard.size == FRAME_SAMPLES * SECOND
    steady, original = heard[4000:], np.concatenate(sent)[4000:]  # past the codec's start-up
    assert dominant_frequency(steady, 16000) == pytest.approx(freq, abs=2)
    assert rms_dbfs(steady) == pytest.approx(rms_dbfs(original), abs=1.0)
    # Mostly the tone: what is not the tone (the codec's noise) is 20 dB down or more.
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(steady.size))) ** 2
    f = np.fft.rfftfreq(steady.size, 1 / 16000)
    near = np.abs(f - freq) < 30
    assert 10 * np.log10(spectrum[near].sum() / spectrum[~near].sum()) > 20


@pytest.mark.parametrize("codec", ["G722", "PCMU"])
def test_an_empty_payload_is_no_audio_and_the_decoder_goes_on(codec: str) -> None:
    """An RTP packet may carry no payload (a keep-alive); an idle phone leg keeps whatever came
    for its decoder's warm-up (``rtc/uplink.py``). Before, an empty G.722 payload was an
    end-of-stream to FFmpeg's decoder, and every packet after it raised ``EOFError`` out of
    the receiver's tick (the leg's audio lost for good); an empty G.711 one came out as two
    samples of the upsampler's filter."""
    from bridge.audio.phone_codecs import PhoneEncoder, phone_decoder

    encoder, decoder = PhoneEncoder(codec), phone_decoder(codec)
    sent = frames_of(1000.0, SECOND)
    payloads = [encoder.encode(frame) for frame in sent]
    decoder.warm([payloads[0], b"", payloads[1]])
    assert decoder.decode(b"").size == 0
    heard = np.concatenate([decoder.decode(p) for p in payloads[2:]])
    assert heard.size == FRAME_SAMPLES * (SECOND - 2)
    steady = heard[4000:]
    assert dominant_frequency(steady, 16000) == pytest.approx(1000.0, abs=2)
    assert rms_dbfs(steady) == pytest.approx(rms_dbfs(np.concatenate(sent)), abs=1.0)


class Wire:
    """A trunk leg's socket, keeping what it sent."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def send_rtp(self, plain: bytes) -> None:
        self.packets.append(plain)

    def close(self) -> None:
        pass


async def test_a_trunk_leg_carries_g722_as_pt9_on_an_8khz_clock() -> None:
    """Two legs back to back: one's packets are the other's input; a 1 kHz tone crosses
    with its frequency and level, no resampling on the way (the bus is 16 kHz)."""
    outgoing = iter(frames_of(1000.0, SECOND))
    heard: list[np.ndarray] = []
    sender = TrunkMedia(
        "send", "G722", 9, 101, lambda pcm: None, lambda now: next(outgoing, None), print
    )
    receiver = TrunkMedia("recv", "G722", 9, 101, heard.append, lambda now: None, noop)
    wire = Wire()
    sender.leg.wire = wire
    sender.start()  # its first packet at once; the test calls its clock's ticks by hand
    for _ in range(SECOND - 1):
        sender.leg.sender._tick(0.0)
    stamps = []
    for packet in wire.packets:
        parsed = RtpPacket.parse(packet)
        assert parsed.payload_type == 9 and len(parsed.payload) == PAYLOAD_BYTES
        stamps.append(parsed.timestamp)
        receiver.leg.receive_rtp(packet, time.monotonic())
        receiver.leg.playout._tick(time.monotonic())  # the media clock's receive phase
    assert len(wire.packets) == SECOND
    assert {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(stamps)} == {160}
    pcm = np.concatenate(heard)[4000:]
    assert dominant_frequency(pcm, 16000) == pytest.approx(1000.0, abs=2)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(1000.0, 1600)), abs=1.0)
    # A key in its place: RFC 4733 durations on the same 8 kHz clock (160 a 20 ms).
    sender.send_key("5", 60)
    sender.leg.sender._tick(0.0)
    event = RtpPacket.parse(wire.packets[-1])
    assert event.payload_type == 101
    assert struct.unpack_from("!BBH", event.payload) == (5, 10, 160)


def test_the_sdp_offers_g722_as_pt9_and_reads_it_without_an_rtpmap() -> None:
    offer = sdp.offer("127.0.0.1", 4000, ("G722", "PCMU"), None).decode()
    assert "m=audio 4000 RTP/AVP 9 0 101\r\n" in offer
    assert "a=rtpmap:9 G722/8000\r\n" in offer and "a=rtpmap:101 telephone-event/8000" in offer
    # A static payload type needs no rtpmap (RFC 3551 §6).
    answer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5000 RTP/AVP 9 101\r\n"
    answer += "a=rtpmap:101 telephone-event/8000\r\n"
    remote = sdp.read(answer, ("G722", "PCMU"), srtp=False)
    assert (remote.codec, remote.pt, remote.event_pt, remote.event_rate) == ("G722", 9, 101, 8000)
    # A trunk without G722 does not take it.
    with pytest.raises(Exception, match="no common codec"):
        sdp.read(answer, ("PCMU",), srtp=False)
    # Answering a PBX's offer of G.722 names it again.
    back = sdp.offer("127.0.0.1", 4002, (), None, answer_to=remote).decode()
    assert "m=audio 4002 RTP/AVP 9 101\r\n" in back and "a=rtpmap:9 G722/8000" in back
