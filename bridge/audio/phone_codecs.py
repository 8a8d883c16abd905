"""The phone codecs as the one receiver (``audio/receiver.py``) decodes them: G.711 (µ-law,
A-law) and G.722, each to the bus's 16 kHz with exactly 320 samples a 20 ms packet, and the
same interface as :class:`~bridge.audio.opus.OpusDecoder` (``decode``, ``decode_fec``,
``has_fec``, ``conceal``, ``warm``, ``rtp_clock``); and G.711's encoder for a sender that
needs exactly one packet a tick (:class:`G711Encoder`, the WhatsApp leg when Meta speaks G.711).

Neither codec has in-band FEC nor concealment of its own: a lost packet is concealed by pitch
repetition (:class:`~bridge.audio.plc.PitchRepeat`, G.711 Appendix I's method) on the decoded
16 kHz audio. Both have an 8 kHz RTP clock (G.722's by RFC 3551 §4.5.2's historical error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .g722 import G722Decoder
from .pcm import Pcm
from .plc import PitchRepeat
from .resample import Resampler, Upsample2x

RTP_CLOCK = 8000
G711_FRAME = 160
"""8 kHz samples (and G.711 bytes) in one 20 ms packet."""
G711 = ("PCMU", "PCMA")


class _PhoneDecoder:
    rtp_clock = RTP_CLOCK

    def __init__(self) -> None:
        self._plc = PitchRepeat()

    def _decode(self, payload: bytes) -> Pcm:
        raise NotImplementedError

    def decode(self, payload: bytes) -> Pcm:
        return self._plc.played(self._decode(payload))

    def decode_fec(self, payload: bytes, samples: int) -> Pcm:
        """No in-band FEC in these codecs (never asked: :meth:`has_fec` is false)."""
        return self.conceal(samples)

    def has_fec(self, payload: bytes) -> bool:
        return False

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
        self._up = Upsample2x()

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


def phone_decoder(codec: str) -> G711Decoder | G722PhoneDecoder:
    """The receiver's decoder for a phone codec: ``PCMU``, ``PCMA`` or ``G722``."""
    return G722PhoneDecoder() if codec == "G722" else G711Decoder(codec)


class G711Encoder:
    """16 kHz frames of 20 ms → one µ-law (``PCMU``) or A-law (``PCMA``) payload each (160
    bytes), for a sender that sends exactly one packet a tick. The resampler's filter delay
    shortens its first outputs; that shortfall is paid once as leading silence, so every later
    frame maps to exactly one packet (no drift, no reframer's zero-or-two)."""

    def __init__(self, codec: str) -> None:
        self._law: Callable[[Pcm], bytes] = ulaw_encode if codec == "PCMU" else alaw_encode
        self._down = Resampler(RTP_CLOCK)
        self._held = np.zeros(0, dtype=np.int16)

    def encode(self, pcm: Pcm) -> bytes:
        narrow = np.concatenate((self._held, self._down.resample_array(pcm, 16000)))
        if narrow.size < G711_FRAME:
            narrow = np.concatenate((np.zeros(G711_FRAME - narrow.size, np.int16), narrow))
        self._held = narrow[G711_FRAME:]
        return self._law(narrow[:G711_FRAME])

    def reset(self) -> None:
        """Nothing to forget: G.711 codes each sample alone (a forwarded run needs no reset)."""
