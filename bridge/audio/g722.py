"""G.722 (ITU-T G.722, sub-band ADPCM at 64 kbit/s) through FFmpeg's codec in PyAV: the wideband
codec desk phones and PBXes speak, at the bus's own 16 kHz, so nothing is resampled.

One 20 ms bus frame (320 samples) is one 160-byte payload each way: the codec packs two 16 kHz
samples into each byte. Its RTP clock is 8 000 Hz although it samples at 16 kHz, an error in
the first RTP profile kept for compatibility (RFC 3551 §4.5.2): a packet's timestamp advances
160, not 320. That is the caller's business (the RTP layer); this module only codes PCM.

The ADPCM predictor of each direction is state carried from one frame to the next (a sample at
a time, which is why this is FFmpeg's C and not numpy), so there is one encoder and one decoder
per stream, and a lost packet is simply skipped: the decoder's state converges again within a
few milliseconds (G.722 §4 adapts its step sizes from what it decodes).
"""

from __future__ import annotations

from typing import Literal

import av
import numpy as np

from .pcm import FRAME_SAMPLES, SAMPLE_RATE, Pcm

PAYLOAD_BYTES = FRAME_SAMPLES // 2
"""One 20 ms frame's payload: 160 bytes (64 kbit/s)."""
RTP_CLOCK = 8000
"""G.722's RTP clock (RFC 3551 §4.5.2), half its sampling rate."""


def _context(mode: Literal["r", "w"]) -> av.AudioCodecContext:
    ctx = av.CodecContext.create("g722", mode)
    ctx.sample_rate = SAMPLE_RATE
    ctx.format = "s16"
    ctx.layout = "mono"
    ctx.open()
    return ctx


class G722Encoder:
    """Bus frames (16 kHz s16 mono) → G.722 payloads, one 160-byte payload a 20 ms frame."""

    def __init__(self) -> None:
        self._ctx = _context("w")
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        """One frame of any whole number of sample pairs (the bus's 320 samples → 160 bytes)."""
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += pcm.size
        return b"".join(bytes(packet) for packet in self._ctx.encode(frame))


class G722Decoder:
    """G.722 payloads → 16 kHz s16 mono samples (two a byte)."""

    def __init__(self) -> None:
        self._ctx = _context("r")

    def decode(self, payload: bytes) -> Pcm:
        """Every byte string is a valid G.722 payload (each byte is one pair of sub-band codes);
        an empty one is no audio (to FFmpeg an empty packet is the end of the stream, after
        which its decoder refuses every packet)."""
        if not payload:
            return np.zeros(0, dtype=np.int16)
        frames = self._ctx.decode(av.Packet(payload))
        if not frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
        return pcm.astype(np.int16, copy=False)
