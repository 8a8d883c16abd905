"""The phone codecs as the one receiver (``audio/receiver.py``) decodes them: G.711 (µ-law,
A-law) and G.722 (and a voice model's linear PCM stream, :class:`Pcm16Decoder`), each to the
bus's 16 kHz with exactly 320 samples a 20 ms packet, and the
same interface as :class:`~bridge.audio.opus.OpusDecoder` (``decode``, ``decode_fec``,
``has_fec``, ``conceal``, ``warm``, ``rtp_clock``); and :class:`PhoneEncoder`, the other way:
the bus's frames as a phone's payloads, exactly one a frame (a trunk's phone; the WhatsApp leg
when Meta speaks G.711).

Neither codec has in-band FEC nor concealment of its own: a lost packet is concealed by pitch
repetition (:class:`~bridge.audio.plc.PitchRepeat`, G.711 Appendix I's method) on the decoded
16 kHz audio. Both have an 8 kHz RTP clock (G.722's by RFC 3551 §4.5.2's historical error).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

import numpy as np

from .g711 import alaw_decode, alaw_encode, alaw_energy, ulaw_decode, ulaw_encode, ulaw_energy
from .g722 import G722Decoder, G722Encoder
from .opus import OpusEncoder
from .pcm import Pcm
from .plc import PitchRepeat
from .resample import Resampler, Upsample2x

RTP_CLOCK = 8000
NARROW_SAMPLES = 160
"""8 kHz samples in one 20 ms G.711 packet."""


class _PhoneDecoder(abc.ABC):
    rtp_clock = RTP_CLOCK

    def __init__(self) -> None:
        self._plc = PitchRepeat()

    @abc.abstractmethod
    def _decode(self, payload: bytes) -> Pcm:
        """One payload as 16 kHz audio, before the concealer keeps it as history."""

    def decode(self, payload: bytes) -> Pcm:
        return self._plc.played(self._decode(payload))

    def decode_fec(self, payload: bytes, samples: int) -> Pcm:
        """No in-band FEC in these codecs (never asked: :meth:`has_fec` is false)."""
        return self.conceal(samples)

    def has_fec(self, payload: bytes) -> bool:
        return False

    def energy(self, payload: bytes) -> float | None:
        """The 16 kHz frame's sum of squares without decoding (``None``: only by decoding)."""
        return None

    def conceal(self, samples: int) -> Pcm:
        return self._plc.conceal(samples)

    def warm(self, payloads: Iterable[bytes]) -> None:
        """Decoding resumes after packets that were not decoded: the decoder takes their
        state up (the upsampler's and the ADPCM predictor's; the history to conceal from)."""
        for payload in payloads:
            self.decode(payload)


class G711Decoder(_PhoneDecoder):
    """µ-law (``PCMU``) or A-law (``PCMA``) payloads → 16 kHz."""

    def __init__(self, codec: str) -> None:
        super().__init__()
        self._law: Callable[[bytes], Pcm] = ulaw_decode if codec == "PCMU" else alaw_decode
        self._energy: Callable[[bytes], float] = ulaw_energy if codec == "PCMU" else alaw_energy
        self._up = Upsample2x()

    def energy(self, payload: bytes) -> float:
        """From the bytes: the 8 kHz samples' squares, twice (the 16 kHz frame has twice the
        samples at the same mean power; within 0.1 dB of the decoded frame's for speech)."""
        return 2 * self._energy(payload)

    def _decode(self, payload: bytes) -> Pcm:
        return self._up.process(self._law(payload))


class G722PhoneDecoder(_PhoneDecoder):
    """G.722 payloads → 16 kHz (its own rate)."""

    def __init__(self) -> None:
        super().__init__()
        self._g722 = G722Decoder()

    def _decode(self, payload: bytes) -> Pcm:
        pcm = self._g722.decode(payload)
        return pcm if pcm.size else np.zeros(0, dtype=np.int16)


class Pcm16Decoder(_PhoneDecoder):
    """Linear 16-bit PCM at the bus's 16 kHz, little-endian (a voice model's real-time stream,
    ``agents/voice.py``): nothing to decode; a missing frame concealed as the phone codecs'
    are. Its "RTP clock" is the sample rate: the stream is numbered by its samples."""

    rtp_clock = 16_000

    def _decode(self, payload: bytes) -> Pcm:
        return np.frombuffer(payload, dtype="<i2").astype(np.int16)


def phone_decoder(codec: str) -> G711Decoder | G722PhoneDecoder:
    """The receiver's decoder for a phone codec: ``PCMU``, ``PCMA`` or ``G722``."""
    return G722PhoneDecoder() if codec == "G722" else G711Decoder(codec)


class PhoneEncoder:
    """The bus's 20 ms frames (16 kHz) as one phone codec's payloads, exactly one a frame, for a
    sender that sends one packet a tick: ``PCMU``/``PCMA`` resampled to 8 kHz, 160 bytes;
    ``G722`` and ``opus`` coded at the bus's own 16 kHz, no resampling (Opus with in-band FEC,
    no DTX: a phone's jitter buffer expects a packet every 20 ms).

    The 8 kHz resampler's filter delay shortens its first outputs; that shortfall is paid once
    as leading silence, so every later frame maps to exactly one packet (no drift, no
    reframer's zero-or-two)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._opus: OpusEncoder | None = None
        self._wide: Callable[[Pcm], bytes] | None = None
        if codec == "opus":
            self._opus = OpusEncoder(
                16000, bitrate=32000, complexity=5, fec=True, expected_loss=5, dtx=False
            )
            self._wide = self._opus.encode
        elif codec == "G722":
            self._wide = G722Encoder().encode
        self._law: Callable[[Pcm], bytes] = ulaw_encode if codec == "PCMU" else alaw_encode
        self._down = Resampler(RTP_CLOCK)
        self._held = np.zeros(0, dtype=np.int16)

    def encode(self, pcm: Pcm) -> bytes:
        """One 20 ms bus frame's payload."""
        if self._wide is not None:
            return self._wide(pcm)
        narrow = np.concatenate((self._held, self._down.resample_array(pcm, 16000)))
        if narrow.size < NARROW_SAMPLES:
            narrow = np.concatenate((np.zeros(NARROW_SAMPLES - narrow.size, np.int16), narrow))
        self._held = narrow[NARROW_SAMPLES:]
        return self._law(narrow[:NARROW_SAMPLES])

    def reset(self) -> None:
        """Start afresh (Opus's state; the last packets sent were not this encoder's). G.711
        codes each sample alone: nothing to forget."""
        if self._opus is not None:
            self._opus.reset()
