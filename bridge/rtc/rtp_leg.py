"""``RtpLeg``: one audio RTP leg, composed once for every kind of leg.

A trunk's phone (``trunks/media.py``), Meta's SDES leg (``engines/cloudapi/sdes.py``) and every
peer connection's leg (``rtc/leg.py`` ``PeerLeg``: a browser, Meta's DTLS leg) are the same
thing on different wires, so they hold the same parts, put together here: the leg's RTP
session (``rtc/rtp_session.py``: the one receive dispatch, the one count of what arrives, the
stream that numbers what we send, RTCP both ways), the receiver (``rtc/uplink.py``
``Playout``) decoding the leg's codec, the one clocked sender (``rtc/rtpsend.py``
``LeanSender``) playing the leg's track (``rtc/tracks.py`` ``OpusBusTrack``, which sends the
leg's key presses in place of audio), our RTCP on the worker clock (``rtc/rtcp_schedule.py``)
with a BYE once at the end, and the glue every leg offers the call: packets forwarded to and
from another leg (``calls/forwarding.py``), the far end's loss, the receiver's counters, a
codec switch.

The wire (:class:`RtpWire`: ``rtc/dtls_srtp.py`` over ICE, ``rtc/srtpudp.py`` over UDP) is
what differs: it protects and sends the plaintext the leg gives it, and hands the leg what it
authenticated (:attr:`RtpLeg.receive_rtp`, its session's, and :meth:`RtpLeg.receive_rtcp`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..audio.opus import OpusDecoder
from ..audio.pcm import Pcm
from ..audio.phone_codecs import phone_decoder
from ..audio.receiver import FrameDecoder
from ..audio.receiver_stats import ReceiverStats
from ..media import BusStats, LevelMeter
from ..tasks import TaskSet
from .passthrough import PassThrough
from .rfc4733 import DtmfDetector
from .rtcp_schedule import AVP_MIN_INTERVAL, RtcpInterval, RtcpSchedule
from .rtp_session import RtpSession, no_loss
from .rtpsend import LeanSender
from .tracks import OpusBusTrack
from .uplink import Playout


class RtpWire(Protocol):
    """How a leg's packets reach the far end: protect (or not) and send one plaintext packet."""

    def send_rtp(self, plain: bytes) -> None: ...

    def send_rtcp(self, plain: bytes) -> None: ...


class RtpLeg:
    """One leg's RTP: session, receiver, sender, track, reports (module docstring).

    ``dtmf`` is telephone-event's payload type (read per packet) and the detector its packets
    go to (or the leg says later: ``RtpSession.take_dtmf``); the presses we send are the
    track's (``rtc/rfc4733.py`` ``KeyPresses``). ``report`` is what the RTCP schedule calls
    (default :meth:`report`: a leg may add its own checks around it). :attr:`wire` may come
    later (a trunk's socket is opened once the call is answered); nothing is sent before."""

    def __init__(
        self,
        session: RtpSession,
        *,
        codec: str,
        on_frame: Callable[[Pcm], None],
        stats: BusStats,
        tasks: TaskSet,
        dtmf: tuple[Callable[[], int | None], DtmfDetector] | None = None,
        rtcp_interval: float = AVP_MIN_INTERVAL,
        report: Callable[[], int] | None = None,
        wire: RtpWire | None = None,
    ) -> None:
        self.session = session
        self.receive_rtp: Callable[[bytes, float], None] = session.receive_rtp
        """One authenticated RTP packet from the far end, ``at`` its arrival: the session's
        own (no call of the leg's between the wire and it, per packet)."""
        self.stream = session.stream
        self.reports = session.reports
        self.codec = codec
        """What both sides send (``opus``, G.711, G.722): the receiver decodes it."""
        self.wire = wire
        self.track: OpusBusTrack | None = None
        """What the sender plays (:meth:`carry`, :meth:`play`; a codec switch reaches it from
        then on); let go at :meth:`stop`."""
        self.sender = LeanSender(session.stream, self._send_rtp)
        self.playout = Playout(on_frame, stats, tasks, self._decoder, session.reports.reception)
        session.playout = self.playout
        if dtmf is not None:
            session.take_dtmf(*dtmf)
        self.rtcp_schedule = RtcpSchedule(report or self.report, RtcpInterval(rtcp_interval))
        self.first_sent_at: float | None = None
        """When our first RTP packet went to the wire (monotonic)."""
        self._said_bye = False

    def _decoder(self) -> FrameDecoder:
        return OpusDecoder(16000) if self.codec == "opus" else phone_decoder(self.codec)

    def use_codec(self, codec: str, payload_type: int) -> None:
        """Send and receive ``codec`` on ``payload_type`` from now: the session's payload type,
        the stream's frame and the reports' clock (``RtpSession.use_codec``); when the codec
        is another, a fresh receiver decoding it (the stream so far was another codec's) and
        the track coding it. The same codec on another payload type (an SDP's own number for
        it) keeps the receiver."""
        changed, self.codec = codec != self.codec, codec
        self.session.use_codec(codec, payload_type)
        if changed:
            self.playout.resume(self.playout.on_frame, self.playout.bus_stats)
        track = self.track
        if track is not None and track.codec != codec:
            track.use_codec(codec)

    # -- send
    def carry(self, track: OpusBusTrack) -> None:
        """``track`` is what the sender plays (:meth:`play`, or the wire once it is up); the
        far end's loss, report by report, goes to its encoder (``rtc/protection.py``)."""
        self.track = track
        self.session.on_report = track.far_end_report

    def play(self, track: OpusBusTrack) -> None:
        """The sender plays ``track`` on the clock from now (:meth:`carry`)."""
        self.carry(track)
        self.sender.start(track)

    def _send_rtp(self, plain: bytes) -> None:
        wire = self.wire
        if wire is None:
            return
        wire.send_rtp(plain)
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()

    def report(self) -> int:
        """One RTCP report on the wire now (the schedule's callback); its length."""
        wire = self.wire
        if wire is None:
            return 0
        report = self.session.report()
        wire.send_rtcp(report)
        return len(report)

    # -- receive
    def receive_rtcp(self, plain: bytes, at: float) -> None:
        """One authenticated compound RTCP packet from the far end, ``at`` its arrival."""
        self.rtcp_schedule.received(len(plain))
        self.session.receive_rtcp(plain, at)

    # -- pass-through (``calls/forwarding.py``, ``rtc/passthrough.py``)
    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Each audio packet from the far end also to ``offer``, untouched (the receiver's
        :meth:`~.uplink.Playout.forward_to`)."""
        self.playout.forward_to(offer, needs_pcm, meters)

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Let the sender send another leg's packets (offered to the returned ``PassThrough``)
        as they are while ``allowed()``, numbered into this leg's stream with its own audio
        and events; ``None`` while the leg has no track."""
        track = self.track
        if track is None:
            return None
        pass_through = PassThrough(allowed)
        track.forward_from(pass_through, self.sender)
        return pass_through

    def report_loss_beyond(self, loss: Callable[[], float] | None) -> None:
        """While this leg's packets are forwarded untouched into another leg, our receiver
        reports carry at least ``loss()``, the loss there (``rtc/rtp_session.py``)."""
        self.session.loss_beyond = loss or no_loss

    # -- stats
    @property
    def far_end_loss(self) -> float:
        """The fraction of our packets the far end's latest report says it lost."""
        return self.reports.far.fraction_lost if self.reports.far_reports else 0.0

    @property
    def receiver_stats(self) -> ReceiverStats:
        """The receiver's counters (the timeline reads them once a second)."""
        return self.playout.stats

    @property
    def timeline_stats(self) -> tuple[ReceiverStats, float | None]:
        """The receiver's counters and the last round-trip time (``calls/reports.py``)."""
        return self.playout.stats, self.reports.far.rtt_s

    # -- end
    def stop(self, *, bye: bool) -> None:
        """Off the clock, the track stopped and let go, the receiver stopped, a last RTCP
        packet with BYE (RFC 3550 §6.6) when ``bye`` and a wire (once), the session's callbacks
        let go (idempotent)."""
        self.sender.stop()
        self.rtcp_schedule.stop()
        self.playout.stop()
        wire = self.wire
        if bye and wire is not None and not self._said_bye:
            self._said_bye = True
            try:
                wire.send_rtcp(self.session.report(bye=True))
            except ConnectionError:
                pass  # the wire went first (DTLS or ICE closed): nobody to say goodbye to
        self.session.close()
        # The leg's parts call back into it (a cycle); the track is the leg class's (its key
        # presses, its sink): let go, so the leg class is freed at once, not by the collector.
        track, self.track = self.track, None
        if track is not None:
            track.stop()  # the sender stopped it if it ever played it
