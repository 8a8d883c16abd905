"""G.711 µ-law (ITU-T G.711), vectorised: what telephony media streams expect at 8 kHz."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .pcm import Pcm

_BIAS = 0x84
_CLIP = 32635


def ulaw_encode(pcm: Pcm) -> bytes:
    """s16 samples → µ-law bytes."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def _decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = ((mantissa << 3) + _BIAS) << exponent
    return np.where(sign != 0, _BIAS - mag, mag - _BIAS).astype(np.int16)


_TABLE = _decode_table()


def ulaw_decode(data: bytes) -> Pcm:
    """µ-law bytes → s16 samples."""
    return _TABLE[np.frombuffer(data, dtype=np.uint8)]
