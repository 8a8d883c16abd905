"""Opus DTX (discontinuous transmission, RFC 7587 §3.1.3): a silent sender sends (almost)
nothing, and its receiver plays comfort noise on its own.

A WebRTC sender told ``usedtx=1`` (the bridge's answer says it) codes a silence with libopus'
DTX: one packet of no audio — a TOC byte and empty frames, :data:`DTX_PAYLOAD` bytes at most
(RFC 6716 §3.2.1) — and then only a comfort-noise update every 400 ms, each followed by another
packet of no audio; the packets in between are not sent, and their numbers are not used.

:class:`ComfortNoise` is the receiving side (``audio/receiver.py``): after a packet of no audio,
a missing frame is one the sender did not send, being silent, and not a loss. It is played as the
decoder's comfort noise (``opus_decode`` with no packet, as NetEq's codec-internal CNG), and as
zeros without the decoder once that comes out silent (a muted microphone: the common case, and
the one that then costs nothing). The receiver counts it apart (``dtx_samples``), so neither
its delay, nor its FEC wait, nor its outage rule take it for a loss.
"""

from __future__ import annotations

import numpy as np

from .opus import SILENT_PEAK, OpusDecoder, OpusError
from .pcm import Pcm

DTX_PAYLOAD = 2
"""An Opus payload this short carries no audio (WebRTC sends the first of a silence)."""
DTX_UPDATE_LIMIT = 1.0
"""Seconds with no packet after which a sender in DTX is taken to have stopped (libopus sends an
update every 400 ms): from then on its missing frames are an outage, as anyone else's."""


class ComfortNoise:
    """Whether a missing frame is the sender's DTX, and the comfort noise that fills it."""

    __slots__ = ("_decoder", "_silence", "_silent", "active")

    def __init__(self, decoder: OpusDecoder, frame_samples: int) -> None:
        self._decoder = decoder
        self._silence = np.zeros(frame_samples, dtype=np.int16)
        self.active = False
        """The last packet decoded had no audio: the sender is in DTX."""
        self._silent = False

    def decoded(self, payload: bytes) -> None:
        """A packet was decoded: the sender is in DTX if it carried no audio."""
        self.active, self._silent = len(payload) <= DTX_PAYLOAD, False

    def fill(self, quiet_for: float) -> Pcm | None:
        """The frame for a missing packet, ``quiet_for`` seconds after the latest arrival:
        comfort noise if the sender is in DTX, else ``None`` (a loss)."""
        if not self.active:
            return None
        if quiet_for > DTX_UPDATE_LIMIT:
            self.active = False  # no update for too long: the sender stopped
            return None
        if self._silent:
            return self._silence
        try:
            pcm = self._decoder.conceal(self._silence.size)
        except OpusError:  # pragma: no cover - libopus conceals without failing
            return self._silence
        self._silent = int(np.abs(pcm).max(initial=0)) <= SILENT_PEAK
        return pcm
