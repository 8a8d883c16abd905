"""Bus-backed outgoing audio tracks: each tick of the worker's media clock, what to send (each
packet an :class:`EncodedPacket`, what the clocked sender, ``rtc/rtpsend.py``, reads)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
from aiortc import MediaStreamError

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from ..audio.dtx import DtxGate
from ..audio.opus import OpusEncoder
from ..audio.phone_codecs import NARROW_SAMPLES, PhoneEncoder
from ..media import LevelMeter
from ..media.ports import FrameSource
from .forward_run import unsent_time
from .forwarding_track import ForwardingTrack
from .protection import EncoderSetting, EncoderSettings, LossProtection, Protection
from .red import RedWrapper
from .rfc4733 import KeyPresses
from .rtpsend import OPUS_FRAME_TICKS, LeanSender


@dataclass(slots=True)
class EncodedPacket:
    """A pre-encoded packet: what ``rtc/rtpsend.py``'s sender reads (``data``, ``pts``,
    ``seq``: a number the stream is to send it under, else ``None``: the stream numbers it;
    ``payload_type``: RED's when ``data`` is a RED payload, else ``None``; with ``event``, an
    RFC 4733 event's payload type, its ``pts`` the press's start). A forwarded packet goes to
    the wire without one (``rtc/forwarding_track.py``)."""

    data: bytes
    pts: int
    seq: int | None = None
    payload_type: int | None = None
    marker: bool | None = None
    """The RTP marker bit, or ``None``: the stream decides (``RtpStream.packetise``)."""
    event: bool = False
    """An RFC 4733 event sent in place of the tick's audio (``rtc/rfc4733.py``)."""


class OpusBusTrack(ForwardingTrack):
    """Plays a call's downlink as Opus it encodes itself: 16 kHz mono, voice settings.

    Each tick of the worker's media clock (phase ``SEND``), the leg's one clocked sender
    (``rtc/rtpsend.py`` ``LeanSender``) asks :meth:`packets` for the tick's encoded packets and
    packs them into RTP, protects and sends them (aiortc's own sender reads the track only in
    the quality bench's peers, ``bench/aiortc_track.py``). That skips what aiortc does for a
    raw frame: a pure-Python per-sample audio-level loop, a thread hop for every encode, a
    resample to 48 kHz stereo and a 96 kbit/s stereo encode.
    Opus at 16 kHz mono is the bus format as it stands; the browser's decoder plays any Opus
    configuration (RFC 7587).

    With a ``protection`` policy (``rtc/protection.py``) the far end's loss reports
    (:meth:`far_end_report`) decide in-band FEC — at ``protected_bitrate`` and
    ``protected_complexity`` while it is on — and, with ``red``, RFC 2198 copies of the
    previous frames around what it sends, encoded or forwarded. Without one, the encoder keeps
    the settings it was given (the quality bench's peers).

    ``codec`` ``PCMU`` or ``PCMA``: the same track codes G.711 instead (a WhatsApp leg whose
    far end negotiated it, Meta's ``audio.additional_codecs``): 160 bytes on an 8 kHz RTP clock
    per 20 ms, no protection; forwarding works the same, for packets of that codec.

    ``phone``: a trunk's phone leg (``trunks/media.py``): the phone's codec as
    ``audio/phone_codecs.py`` codes it (G.711, G.722 on its 8 kHz RTP clock, or Opus at the
    phone's fixed settings; :meth:`use_codec` when a re-INVITE changes it), only packets of one
    20 ms frame forwarded, and :attr:`sending` false while the phone holds.

    ``keys`` (``rtc/rfc4733.py``): key presses sent on the clock, each tick's RFC 4733 packets
    in place of its audio (its frame still taken and encoded); a press waiting ends a
    forwarding run.
    """

    def __init__(
        self,
        sink: FrameSource,
        *,
        codec: str = "opus",
        bitrate: int = 40_000,
        complexity: int = 5,
        fec: bool = True,
        dtx: bool = False,
        dtx_gate: DtxGate | None = None,
        expected_loss: int = 0,
        protection: LossProtection | None = None,
        protected_bitrate: int | None = None,
        protected_complexity: int | None = None,
        clean: EncoderSetting | None = None,
        red: RedWrapper | None = None,
        level: LevelMeter | None = None,
        keys: KeyPresses | None = None,
        phone: bool = False,
    ) -> None:
        super().__init__(sink, level, keys)
        self._key_events: list[EncodedPacket] = []
        """The tick's event packets, as the key presses hand them over."""
        self.protection = protection
        self.red = red
        self.settings = EncoderSettings(
            plain=EncoderSetting(bitrate, complexity),
            protected=EncoderSetting(
                max(bitrate, protected_bitrate or bitrate), protected_complexity or complexity
            ),
            clean=clean,
        )
        self.applied = Protection(expected_loss if fec else 0, 0)
        """What the sender does now (``rtc/protection.py``)."""
        if protection is not None:
            self.applied = protection.now
        self.setting = self.settings.for_(self.applied)
        """What the encoder runs at now."""
        self.codec = codec
        self.phone = phone
        self.frame_ts = OPUS_FRAME_TICKS
        """RTP time of one 20 ms packet on the codec's clock (48 kHz Opus, 8 kHz G.711, G.722)."""
        self._coder: OpusEncoder | PhoneEncoder
        if codec == "opus" and not phone:
            self._encoder = self._coder = OpusEncoder(
                SAMPLE_RATE,
                bitrate=self.setting.bitrate,
                complexity=self.setting.complexity,
                fec=fec,
                expected_loss=self.applied.expected_loss,
                dtx=dtx,
            )
            if self.setting.celt:
                self._encoder.set_celt_only(True)
        else:
            self.use_codec(codec)
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.dtx_gate = dtx_gate
        """DTX toward a browser that asked for it (``audio/dtx.py``): a silence is (almost)
        not sent."""
        self.dtx_frames = 0
        """Frames of silence not sent (DTX)."""
        self.silent_frames = 0

    def use_codec(self, codec: str) -> None:
        """Code ``codec`` from the next tick as a phone codec (``audio/phone_codecs.py``: G.711,
        G.722, or a phone's Opus at its fixed settings), RTP time going on: a WhatsApp leg on
        G.711, or a trunk's phone leg (``trunks/media.py``, its codec changed by a re-INVITE)."""
        self.codec = codec
        self._coder = PhoneEncoder(codec)
        self.frame_ts = OPUS_FRAME_TICKS if codec == "opus" else NARROW_SAMPLES
        self.protection = None  # nothing adapts to loss: the reports change nothing

    def played_by(self, player: LeanSender) -> None:
        """``player`` ticks :meth:`packets` from now (``LeanSender.start``; a parked track,
        ``rtc/connected.py``, from when it puts itself on)."""
        self.player = player
        player.on_clock()

    async def recv(self) -> NoReturn:
        """Never read in the bridge: the leg's clocked sender plays the track (:meth:`packets`);
        aiortc holds it for the SDP's msid only (``rtc/leg.py``), its sender never started. If
        it ever asked, its loop ends here quietly. (The quality bench's peers, whose aiortc
        sender does read it, go through ``bench/aiortc_track.py``.)"""
        raise MediaStreamError

    def packets(self, now: float) -> list[EncodedPacket]:
        """This tick's packets, ``now`` the tick's time (the media clock's ``SEND`` phase,
        after this tick's mix): the sink's frame encoded, or the tick's RFC 4733 event packets
        in its place, or none while DTX holds a silence back or a forwarding run carries the
        tick (its packets go out from the source's callback: :meth:`forward`)."""
        if self._run.active:
            quiet = self._run.carries(now)
            if quiet is None:
                return []
            self._pts += unsent_time(quiet, self.frame_ts)  # a pause, not packets 250 ms late
        pcm = self.sink.take(now)
        if pcm is None:
            self.silent_frames += 1
            pcm = self._silence
            if self.level is not None:
                self.level.add_silence(FRAME_SAMPLES)
        elif self.level is not None:
            self.level.add(pcm)
        if self._encoder_stale:
            # The last packet sent was forwarded: from the state its own last frame left, the
            # encoder's first CELT frame decodes as 15 ms of near silence after forwarded SILK.
            self._coder.reset()
            self._encoder_stale = False
        if not self.sending:  # held: the frame taken, the stream's time on (RFC 3550 §5.1)
            self._pts += self.frame_ts
            return []
        # libopus directly: one 20 ms frame in, one packet out (no encoder delay queue). RTP
        # time counts the packets, 20 ms each, on the codec's RTP clock.
        payload = self._coder.encode(pcm)
        pts = self._pts
        self._pts += self.frame_ts
        if self.keys is not None and self.keys.send_tick(pts, self._event):
            events, self._key_events = self._key_events, []
            return events  # a key press, in place of the tick's audio
        marker = None
        if self.dtx_gate is not None:
            gated = self.dtx_gate.outgoing(payload, self._encoder.settled_silence)
            if gated is None:
                self.dtx_frames += 1
                return []
            payload, marker = gated, self.dtx_gate.marker
        self.frames_sent += 1
        return [self._packet(payload, pts, marker=marker)]

    def _event(self, pt: int, payload: bytes, pts: int, marker: bool) -> None:
        self._key_events.append(EncodedPacket(payload, pts, None, pt, marker, True))

    def _packet(self, payload: bytes, pts: int, *, marker: bool | None = None) -> EncodedPacket:
        """An encoded packet of the tick, RED around it when negotiated (a forwarded one is
        wrapped the same way, in ``ForwardingTrack.forward``)."""
        if self.red is None:
            return EncodedPacket(payload, pts, None, None, marker)
        data, payload_type = self.red.wrap(payload, pts, self.applied.red_depth)
        return EncodedPacket(data, pts, None, payload_type, marker)

    @property
    def red_depth(self) -> int:
        return self.applied.red_depth

    def protection_json(self) -> dict[str, object]:
        """What the sender does against loss now, and what RED cost so far."""
        policy, red = self.protection, self.red
        return {
            "expectedLoss": self.applied.expected_loss,
            "redDepth": self.applied.red_depth,
            "bitrate": self.setting.bitrate,
            "celt": self.setting.celt,
            "reports": policy.reports if policy is not None else 0,
            "lossEstimate": round(policy.estimate, 4) if policy is not None else None,
            "redPackets": red.packets if red is not None else 0,
            "redOctets": red.redundant_octets if red is not None else 0,
        }

    @property
    def expected_loss(self) -> int:
        """The loss (%) the encoder plans in-band FEC for now (0: none)."""
        return self.applied.expected_loss

    def far_end_report(self, fraction_lost: float) -> None:
        """One RTCP receiver report's loss fraction for this stream (RFC 3550 §6.4.1), as it
        arrives: the protection policy decides, the encoder follows from the next frame on.
        libopus spends LBRR bits in proportion to the expected loss and none at 0 % (RFC 6716
        §2.1.7), which a clean link must not pay for (docs/quality.md)."""
        if self.protection is None:
            return
        decision = self.protection.report(fraction_lost, time.monotonic())
        if decision == self.applied:
            return
        setting = self.settings.for_(decision)
        if setting != self.setting:
            # libopus moves between SILK and CELT itself, with a redundant frame across the
            # switch (RFC 6716 §4.5.1), as when it chooses the mode.
            if setting.celt != self.setting.celt:
                self._encoder.set_celt_only(setting.celt)
            self._encoder.set_bitrate(setting.bitrate)
            self._encoder.set_complexity(setting.complexity)
            self.setting = setting
        if decision.expected_loss != self.applied.expected_loss:
            self._encoder.set_expected_loss(decision.expected_loss)
        self.applied = decision

    def stop(self) -> None:
        super().stop()  # the run ended, the pass-through let go (``ForwardingTrack.stop``)
        if self.player is not None:
            self.player.stop()
        self.sink.detach()
