"""Bus-backed outgoing audio tracks, paced on the worker's media clock."""

from __future__ import annotations

import fractions
import logging
import time
from collections import deque
from typing import Protocol

import numpy as np
from aiortc import MediaStreamError, MediaStreamTrack

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from ..audio.dtx import DtxGate
from ..audio.opus import OpusEncoder
from ..audio.phone_codecs import NARROW_SAMPLES, PhoneEncoder
from ..media import LevelMeter
from ..media.clock import Pacer, WorkerPacer
from ..media.ports import FrameSource
from .forward_run import ForwardRun, unsent_time
from .passthrough import PassThrough
from .protection import EncoderSetting, EncoderSettings, LossProtection, Protection
from .red import RedWrapper
from .rfc4733 import KeyPresses
from .rtpsend import RtpStream

log = logging.getLogger(__name__)

_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_OPUS_RATE = 48_000
_RTP_TIME_BASE = fractions.Fraction(1, _OPUS_RATE)
"""Opus' RTP clock (RFC 7587 §4.1): a packet stamped on it needs no conversion in aiortc."""
_FRAME_TS = _OPUS_RATE * FRAME_SAMPLES // SAMPLE_RATE


class EncodedPacket:
    """A pre-encoded packet: what ``rtc/rtpsend.py``'s sender reads (``data``, ``pts``,
    ``seq``: the stream's number for a forwarded packet, else ``None``, and ``payload_type``:
    RED's when ``data`` is a RED payload, else ``None``; with ``event``, an RFC 4733 event's
    payload type, its ``pts`` the press's start), and what aiortc's own sender reads
    (``bytes()``, ``pts``, ``time_base``) where it sends the track.

    Stands in for ``av.Packet``, which copies the payload into an FFmpeg buffer and builds a
    new ``Fraction`` on every ``time_base`` read; with ``time_base`` the very object aiortc
    compares against, its ``convert_timebase`` does no ``Fraction`` arithmetic either.
    """

    __slots__ = ("data", "event", "marker", "payload_type", "pts", "seq", "time_base")

    def __init__(
        self,
        data: bytes,
        pts: int,
        seq: int | None = None,
        payload_type: int | None = None,
        marker: bool | None = None,
        event: bool = False,
    ) -> None:
        self.data = data
        self.pts = pts
        self.seq = seq
        self.payload_type = payload_type
        self.marker = marker
        """The RTP marker bit, or ``None``: the stream decides (``RtpStream.packetise``)."""
        self.event = event
        """An RFC 4733 event sent in place of the tick's audio (``rtc/rfc4733.py``)."""
        self.time_base = _RTP_TIME_BASE

    def __bytes__(self) -> bytes:
        return self.data


class PacketSender(Protocol):
    """The lean sender playing an :class:`OpusBusTrack` (``rtc/rtpsend.py``'s ``LeanSender``,
    the SDES leg): its RTP stream, and a send a forwarded packet takes from the source's
    receive callback."""

    stream: RtpStream

    @property
    def running(self) -> bool:
        """Whether it sends now (its transport up): forwarding starts only then."""

    def send_encoded(self, packet: EncodedPacket) -> None:
        """Packetise, protect and send ``packet`` now; ``ConnectionError`` if it cannot."""


class OpusBusTrack(MediaStreamTrack):
    """Plays a call's downlink as Opus it encodes itself: 16 kHz mono, voice settings.

    Paced on the worker's media clock (``media/clock.py`` ``WorkerPacer``), ``recv`` returns
    encoded packets, which the bridge's lean sender (``rtc/rtpsend.py``) packs into RTP,
    protects and sends (aiortc's own sender also takes them: the quality bench's peers). That
    skips what aiortc does for a raw frame: a pure-Python per-sample audio-level loop, a
    thread hop for every encode, a resample to 48 kHz stereo and a 96 kbit/s stereo encode.
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

    ``keys`` (``rtc/rfc4733.py``): key presses sent on the clock, each tick's RFC 4733 packets
    in place of its audio (its frame still taken and encoded); a press waiting ends a
    forwarding run, as on a trunk's phone leg (``trunks/media.py``).
    """

    kind = "audio"

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
    ) -> None:
        super().__init__()
        self.keys = keys  # key presses to send on the clock (class docstring)
        self._key_packets: deque[EncodedPacket] = deque()
        """This tick's event packets not yet returned (the end packet's repeats)."""
        self.sink = sink
        self.level = level
        """Where the level of what it sends is summed (a browser's; ``None``: not metered)."""
        self.fec = fec
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
        self.frame_ts = _FRAME_TS if codec == "opus" else NARROW_SAMPLES
        """RTP time of one 20 ms packet on the codec's clock (48 kHz Opus, 8 kHz G.711)."""
        self._coder: OpusEncoder | PhoneEncoder
        if codec == "opus":
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
            self._coder = PhoneEncoder(codec)
            self.protection = None  # G.711 has no FEC to plan: the reports change nothing
        self._clock: Pacer = WorkerPacer()
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.dtx_gate = dtx_gate
        """DTX toward a browser that asked for it (``audio/dtx.py``): a silence is (almost)
        not sent."""
        self.dtx_frames = 0
        """Frames of silence not sent (DTX)."""
        self.frames_sent = 0
        self.silent_frames = 0
        self.forwarded_frames = 0
        self._pts = 0
        """RTP time (48 kHz, from 0) of the next packet: 20 ms per encoded packet."""
        self.pass_through: PassThrough | None = None
        self._sender: PacketSender | None = None
        self._stream: RtpStream | None = None
        self._run = ForwardRun()
        """The current forwarding run (``rtc/forward_run.py``)."""
        self._encoder_stale = False
        """A forwarded packet went out since the encoder's last frame."""

    def forward_from(self, pass_through: PassThrough, sender: PacketSender) -> None:
        """Send another leg's Opus packets untouched while ``pass_through.allowed()`` (see
        ``rtc/passthrough.py``) through ``sender``, the lean sender playing this track
        (``rtc/rtpsend.py``), whose stream numbers every packet: forwarded ones are mapped
        onto its numbers."""
        if self.pass_through is not None and self.pass_through is not pass_through:
            self.pass_through.target = None
        self._sender = sender
        self._stream = sender.stream
        self.pass_through = pass_through
        pass_through.target = self
        # A new source (a transfer) numbers its packets from its own random origin: its first
        # packet starts a new run, mapped afresh, never through the previous source's offsets
        # (a number mapped backwards is one SRTP refuses as replayed, RFC 3711 §3.3.2).
        if self._run.active:
            self._end_run()

    async def recv(self) -> EncodedPacket:  # type: ignore[override]
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._key_packets:  # the rest of this tick's event packets, sent now
                return self._key_packets.popleft()
            packet = await self._next_packet()
            if packet is not None:
                return packet

    async def _next_packet(self) -> EncodedPacket | None:
        """The next frame from the sink encoded; ``None`` when DTX sends nothing for it or a
        forwarding run carries this tick (its packets go out from the source's callback:
        :meth:`forward`)."""
        if self._run.active:
            quiet = await self._run.wait_out()
            self._pts += unsent_time(quiet, self.frame_ts)  # a pause, not packets 250 ms late
            self._end_run()
            return None
        await self._clock.tick()
        if self._run.active:  # a run began while the clock ticked: it carries this tick
            return None
        pcm = self.sink.take(time.monotonic())  # the clock's send phase
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
        # libopus directly: one 20 ms frame in, one packet out (no encoder delay queue). RTP
        # time counts the packets, 20 ms each, on the codec's RTP clock.
        payload = self._coder.encode(pcm)
        pts = self._pts
        self._pts += self.frame_ts
        if self.keys is not None and self.keys.send_tick(pts, self._event):
            return self._key_packets.popleft()  # a key press, in place of the tick's audio
        marker = None
        if self.dtx_gate is not None:
            gated = self.dtx_gate.outgoing(payload, self._encoder.settled_silence)
            if gated is None:
                self.dtx_frames += 1
                return None
            payload, marker = gated, self.dtx_gate.marker
        self.frames_sent += 1
        return self._packet(payload, pts, marker=marker)

    def _event(self, pt: int, payload: bytes, pts: int, marker: bool) -> None:
        self._key_packets.append(EncodedPacket(payload, pts, None, pt, marker, True))

    def _packet(
        self, payload: bytes, pts: int, seq: int | None = None, *, marker: bool | None = None
    ) -> EncodedPacket:
        if self.red is None:
            return EncodedPacket(payload, pts, seq, None, marker)
        data, payload_type = self.red.wrap(payload, pts, self.applied.red_depth)
        return EncodedPacket(data, pts, seq, payload_type, marker)

    # -- forwarding (rtc/passthrough.py): the source's callback sends, the task waits
    def forward(self, source: PassThrough, seq: int, ts: int, payload: bytes, at: float) -> None:
        """The source's packet that arrived ``at``, sent now from its receive callback
        (``ForwardTarget``): the first starts a forwarding run, carrying the ticks until it ends."""
        sender = self._sender
        if source is not self.pass_through or sender is None or not sender.running:
            return  # an old source (a transfer), or no sender running (yet)
        if self.readyState != "live":
            return
        if self.keys is not None and self.keys.pending:  # a key press: on the clock, not this
            self._run.end()  # the waiting task takes the ticks back
            return
        numbering = self._run.numbering_for(source)
        if numbering is not None and numbering.older_than_first(seq):
            # Reordered across the switch: the number it maps to was our own encoded
            # packet's, and SRTP refuses an index sent twice (RFC 3711 §3.3.2).
            source.late += 1
            return
        try:
            sender.send_encoded(self._forward(source, seq, ts, payload, at))
        except ConnectionError:
            pass  # DTLS or the socket closing: the sender's own loop ends the track
        except Exception:
            # A bug, in the source leg's receive callback: it must not cost that leg its own
            # audio. Forwarding stops here (the sender encodes again); said once, loudly.
            log.exception("forwarding into this sender failed; it encodes from now on")
            source.target = None
            self.pass_through = None
            self._run.end()

    def forward_refused(self, source: PassThrough) -> None:
        """Mixing began in this direction (``ForwardTarget``): the waiting task encodes again."""
        if self._run.numbering_for(source) is not None:
            self._run.wake()

    def _end_run(self) -> None:
        """Back to encoding: a fresh clock, no burst to catch up."""
        self._run.end()
        self._clock = WorkerPacer()

    def _forward(self, pt: PassThrough, seq: int, ts: int, data: bytes, at: float) -> EncodedPacket:
        stream = self._stream
        assert stream is not None
        numbering = self._run.numbering_for(pt)
        if numbering is None:
            numbering = self._run.start(pt, seq, ts, self._pts, stream, at)
        placed = numbering.place(seq, ts, stream, at)
        if placed.newest:  # a reordered packet does not take our time back
            self._pts = placed.pts + self.frame_ts
        # The decoded frame this packet stands for (kept fresh for a switch; its level is
        # what the browser hears). None while the source leg is idle (``rtc/uplink.py``): its
        # level samples reach this meter from there. Taken now, as the packet goes out, not at
        # ``at``: the sink times a frame's transit and lead to its playing (``media/frames.py``),
        # and a packet read on the clock's input phase arrived up to a tick before.
        decoded = self.sink.take(time.monotonic())
        if self.level is not None and decoded is not None:
            self.level.add(decoded)
        self.frames_sent += 1
        self.forwarded_frames += 1
        self._encoder_stale = True
        pt.forwarded += 1
        # A forwarded payload stays bit-exact: RED only puts earlier ones beside it.
        return self._packet(data, placed.pts, placed.seq)

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
        super().stop()
        self._run.end()
        if self.pass_through is not None:
            self.pass_through.target = None
        self.sink.detach()
