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

:class:`DtxGate` is the sending side (``rtc/tracks.py``), for a browser that asks for DTX
(``usedtx=1`` in its offer) or every browser with ``BRIDGE_OPUS_DTX``. It keeps WebRTC's rule
for libopus' own DTX, and adds one for digital silence (an engine with nobody speaking, a held
call): once the encoder has settled into its silence cycle (``audio/opus_silence.py``), the far
decoder has heard eight frames of silence and plays silence; from then on a packet of no audio
goes in place of the cycle's every :data:`DTX_UPDATE_FRAMES` frames, and nothing in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from .opus import SILENT_PEAK, OpusError
from .pcm import Pcm, peak

DTX_PAYLOAD = 2
"""An Opus payload this short carries no audio (WebRTC sends the first of a silence)."""
DTX_UPDATE_FRAMES = 20
"""Frames (400 ms, libopus' rhythm) between the packets of no audio sent in digital silence: a
receiver learns the sender is still there, and still silent."""
DTX_UPDATE_LIMIT = 1.0
"""Seconds with no packet after which a sender in DTX is taken to have stopped (libopus sends an
update every 400 ms): from then on its missing frames are an outage, as anyone else's."""


class Conceals(Protocol):
    """The decoder's concealment (Opus' comfort noise comes from it)."""

    def conceal(self, samples: int) -> Pcm: ...


class ComfortNoise:
    """Whether a missing frame is the sender's DTX, and the comfort noise that fills it."""

    __slots__ = ("_decoder", "_frame_ts", "_seq_done", "_silence", "_silent", "active")

    def __init__(self, decoder: Conceals, frame_samples: int, frame_ts: int = 960) -> None:
        self._decoder = decoder
        self._frame_ts = frame_ts
        """A frame's length in RTP time (48 kHz: RFC 7587 §4.1)."""
        self._silence = np.zeros(frame_samples, dtype=np.int16)
        self.active = False
        """The last packet decoded had no audio: the sender is in DTX."""
        self._silent = False
        self._seq_done: int | None = None
        """The highest sequence number played or passed by (late): see :meth:`lost`."""

    def decoded(self, payload: bytes, seq: int | None = None) -> None:
        """A packet (extended number ``seq``; ``None``: a RED copy) was decoded: the sender is
        in DTX if it carried no audio."""
        self.active, self._silent = len(payload) <= DTX_PAYLOAD, False
        self.passed(seq)

    def late(self, payload: bytes, seq: int) -> None:
        """A packet came after its frame was played (concealed). If it is the newest yet, what
        it says still holds: after a packet of no audio the next missing frames are DTX, not
        losses (else a late one would turn the silence into an outage); after one with audio,
        the sender is talking again."""
        if self._seq_done is None or seq > self._seq_done:
            self.decoded(payload, seq)

    def passed(self, seq: int | None) -> None:
        """Number ``seq`` is accounted for (played, or a packet that is not audio: an RFC 4733
        event shares the stream's numbers, RFC 4733 §2.1): it is no gap."""
        if seq is not None and (self._seq_done is None or seq > self._seq_done):
            self._seq_done = seq

    def forget_numbers(self) -> None:
        """The stream restarts: numbers from before say nothing of the gaps after."""
        self._seq_done = None

    def lost(self, held: Mapping[int, Any], due: int) -> bool:
        """Whether the missing frame at RTP time ``due`` was sent and lost, rather than left
        unsent by a sender in DTX, given the packets ``held`` (RTP time → one with ``seq``, its
        extended number, or ``None`` for a RED copy). Out of DTX, every missing frame is lost.

        A DTX sender numbers only the packets it sends (RFC 3550 §5.1), so numbers missing
        between the last packet played and the next numbered one held are packets lost. They
        are taken to be the frames just before that one (a talk spurt's first, after the
        silence): the frame due is one of them when that packet is at most that many frames
        ahead. (A lost update in mid-silence is then taken for the last frames before the next
        packet, and a 40 or 60 ms packet counts as one frame: both err towards concealment
        for a frame of silence.)"""
        if not self.active:
            return True
        numbered = [t for t, packet in held.items() if packet.seq is not None]
        if self._seq_done is None or not numbered:
            return False
        ahead = min(numbered)
        missing = held[ahead].seq - self._seq_done - 1
        return missing > 0 and ahead - due <= missing * self._frame_ts

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
        self._silent = peak(pcm) <= SILENT_PEAK
        return pcm


class DtxGate:
    """Which packets of a silence a sender in DTX sends (see the module docstring)."""

    __slots__ = ("_comfort", "_dtx_run", "_in_dtx", "_quiet", "marker")

    def __init__(self) -> None:
        self._in_dtx = False
        self._quiet = 0
        self._dtx_run = 0
        """libopus' packets of no audio in a row (its update comes after DTX_UPDATE_FRAMES)."""
        self._comfort = False
        """The last frame was comfort noise (no audio, or libopus' update), not sound."""
        self.marker: bool | None = None
        """The RTP marker of the packet :meth:`outgoing` just let through, as WebRTC sets it
        (RFC 3551 §4.1: the first packet of a talk spurt): ``True`` for the first packet of
        sound after comfort noise, ``False`` for comfort noise (though RTP time jumped before
        it), ``None`` otherwise (the stream decides)."""

    def outgoing(self, payload: bytes, settled_silence: bool) -> bytes | None:
        """What to send for the frame coded as ``payload`` (``None``: nothing);
        ``settled_silence``: the frame is digital silence and the encoder's cycle is learnt."""
        if settled_silence:
            self._quiet += 1
            if self._in_dtx and self._quiet % DTX_UPDATE_FRAMES:
                return None
            self._in_dtx, self._comfort, self.marker = True, True, False
            return bytes((payload[0] & 0xFC,))  # the same TOC, code 0: one empty frame
        if len(payload) <= DTX_PAYLOAD:  # libopus' DTX (WebRTC's rule): the first only
            self._dtx_run += 1
            self._comfort = True
            if self._in_dtx:
                return None
            self._in_dtx, self.marker = True, False
            return payload
        if self._dtx_run == DTX_UPDATE_FRAMES:
            # libopus' comfort-noise update, 400 ms into its DTX: sent, and the next packet of
            # no audio after it too (WebRTC's rule), but no talk spurt (libwebrtc sends it as CN)
            self._dtx_run, self._in_dtx, self.marker = 0, False, False
            return payload
        self.marker = True if self._comfort else None
        self._in_dtx, self._comfort, self._quiet, self._dtx_run = False, False, 0, 0
        return payload
