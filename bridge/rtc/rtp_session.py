"""One leg's RTP session, sans-IO (RFC 3550): what every leg in the worker shares.

A browser's leg and the Cloud API's WhatsApp-side peer (DTLS-SRTP keys, ``rtc/dtls_srtp.py``)
and Meta's SDES leg (``rtc/srtpudp.py``) all terminate one audio RTP session. Its state is
held here, once per leg, and touches no socket and no library's internals: the leg's wire
hands it authenticated plaintext and sends what it returns.

* **Packets in, frames out** (:meth:`RtpSession.receive_rtp`): an RTP packet is dispatched by
  its payload type. Opus goes to the leg's :class:`~bridge.rtc.uplink.Playout` (its receiver
  reorders, decodes and conceals: the one de-jitter stage); RED (RFC 2198) over Opus gives the
  redundant blocks to the receiver first, then its primary as Opus (``rtc/red.py``); a
  telephone-event (RFC 4733) goes to the leg's :class:`~bridge.rtc.rfc4733.DtmfDetector` and
  keeps the audio's numbering whole (an event is no gap in the audio). Anything else is
  counted and dropped.
* **Frames in, packets out**: :attr:`RtpSession.stream` (``rtc/rtpsend.py`` ``RtpStream``) is
  the one owner of the stream's sequence numbers: encoded, forwarded and event packets.
* **RTCP both ways** (:attr:`RtpSession.reports`, ``rtc/rtcp.py``): every packet that arrives
  is counted there once (RFC 3550 A.3 loss, A.8 jitter: ``audio/reception.py``, which the
  playout's receiver reads too for its W3C figures), our SR/RR with SDES CNAME
  (:meth:`RtpSession.report`), and the far end's report blocks about our stream
  (:meth:`RtpSession.receive_rtcp`), handed to :attr:`RtpSession.on_report` as they arrive so
  the encoder's protection follows the far end's loss at once (``rtc/protection.py``).
  :attr:`RtpSession.loss_beyond` raises the fraction lost we report: while this leg's packets
  are forwarded untouched into another leg, the sender's in-band FEC is all the far receiver
  gets, so it must plan for the loss of both hops (RFC 3550 §6.4.2; libwebrtc's Opus sets its
  expected loss from it).
* **Quality** (:meth:`RtpSession.quality`): the cumulative RTP/RTCP counters a leg samples.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from .counters import drop
from .quality import Quality
from .red import split_red
from .rtcp import RtcpReports
from .rtpsend import OPUS_CLOCK, RTP_HEADER, RtpStream

if TYPE_CHECKING:
    from .red import RedStats
    from .rfc4733 import DtmfDetector
    from .uplink import Playout

log = logging.getLogger(__name__)


def payload_bounds(data: bytes) -> tuple[int, int] | None:
    """Where a plaintext RTP packet's payload starts and ends (after the CSRCs and header
    extension, before the padding: RFC 3550 §5.1, RFC 8285), or ``None`` if it is malformed."""
    n = len(data)
    if n < 12 or data[0] >> 6 != 2:
        return None
    first = data[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if n < start + 4:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    if start > n:
        return None
    end = n
    if first & 0x20:
        pad = data[-1]
        if not pad or pad > n - start:
            return None
        end = n - pad
    return start, end


def no_loss() -> float:
    """No loss beyond this leg (:attr:`RtpSession.loss_beyond`'s default)."""
    return 0.0


class RtpSession:
    """One leg's audio RTP session (module docstring). ``audio_pt`` is the payload type of the
    audio codec both sides negotiated (Opus by default, :meth:`use_codec`); :meth:`take_red`
    and :meth:`take_dtmf` add what else the far end may send."""

    def __init__(self, ssrc: int, cname: str, *, audio_pt: int = 111) -> None:
        self.stream = RtpStream(ssrc, audio_pt)
        self.reports = RtcpReports(ssrc, cname)
        self.audio_pt = audio_pt
        self.playout: Playout | None = None
        """Where the far end's audio goes (set by the leg once its receiver exists)."""
        self.red: tuple[int, int, RedStats] | None = None
        """RED's payload type, the Opus one its blocks carry, and its counters."""
        self.dtmf: tuple[Callable[[], int | None], DtmfDetector] | None = None
        """telephone-event's payload type (read per packet) and the leg's detector."""
        self.on_report: Callable[[float], None] | None = None
        """Called with the loss fraction of each report block the far end sends about us."""
        self.loss_beyond: Callable[[], float] = no_loss
        self.packets = 0
        """RTP packets received (authenticated)."""
        self.audio_packets = 0
        """Of those, the audio codec's (RED's primary included)."""
        self.unknown_payloads = 0
        self.malformed = 0

    @classmethod
    def new(cls, audio_pt: int = 111) -> RtpSession:
        """A new leg's session: a random SSRC (RFC 3550 §8.1) and a random CNAME (RFC 7022),
        its audio on ``audio_pt``."""
        return cls(secrets.randbits(32), f"bridge-{secrets.token_hex(6)}", audio_pt=audio_pt)

    @property
    def ssrc(self) -> int:
        return self.stream.ssrc

    def use_codec(self, codec: str, payload_type: int) -> None:
        """The audio both sides negotiated: ``opus`` (the default) or G.711 (``PCMU``,
        ``PCMA``: a WhatsApp leg with Meta's ``audio.additional_codecs``), on
        ``payload_type`` both ways; the stream's frame and the reports' clock follow its RTP
        clock (48 kHz, RFC 7587 §4.1; 8 kHz, RFC 3551 §4.5.14)."""
        self.audio_pt = self.stream.payload_type = payload_type
        clock = OPUS_CLOCK if codec == "opus" else 8000
        self.stream.frame_ticks = clock // 50
        self.reports.clock = clock
        self.reports.reception.use_clock(clock)

    def set_identity(self, ssrc: int, cname: str | None = None) -> None:
        """Our SSRC and CNAME as our SDP announced them (``a=ssrc:… cname:…``), before
        anything was sent."""
        self.stream.ssrc = self.reports.ssrc = ssrc
        if cname:
            self.reports.cname = cname.encode()[:255]

    def take_red(self, payload_type: int, opus: int, stats: RedStats) -> None:
        """Also take RED (RFC 2198) over Opus (``opus``) on ``payload_type``."""
        self.red = (payload_type, opus, stats)

    def take_dtmf(self, payload_type: Callable[[], int | None], detector: DtmfDetector) -> None:
        """Also take telephone-event (RFC 4733) on ``payload_type()`` into ``detector``."""
        self.dtmf = (payload_type, detector)

    def close(self) -> None:
        """Let go of the leg's callbacks (idempotent): a closed leg is freed at once, with no
        reference cycle through its session left for the collector."""
        self.playout = None
        self.red = self.dtmf = None
        self.on_report = None
        self.loss_beyond = no_loss

    # -- packets in
    def receive_rtp(self, plain: bytes, at: float) -> None:
        """One authenticated RTP packet from the far end (its wire's datagram callback), ``at``
        its arrival (``time.monotonic()`` base: the socket's stamp, ``rtc/udp_poll.py``)."""
        n = len(plain)
        if n < 12:
            self.malformed += 1
            return
        first, second, seq, timestamp, ssrc = RTP_HEADER.unpack_from(plain)
        bounds: tuple[int, int] | None
        if first == 0x80:  # no CSRC, extension or padding (a phone's, Meta's G.711)
            bounds = (12, n)
        elif first == 0x90 and n >= 16:  # what browsers send: one extension block, no padding
            start = 16 + 4 * ((plain[14] << 8) | plain[15])
            bounds = (start, n) if start <= n else None
        else:
            bounds = payload_bounds(plain)
        if bounds is None:
            self.malformed += 1
            return
        self.packets += 1
        pt = second & 0x7F
        payload = plain[bounds[0] : bounds[1]]
        playout = self.playout
        try:
            if pt == self.audio_pt:
                self.audio_packets += 1
                self.reports.received(ssrc, seq, timestamp, at)
                if playout is not None:
                    playout.packet(seq, timestamp, payload, at)
                dtmf = self.dtmf
                if dtmf is not None and dtmf[1].open:  # a press whose end was lost: over?
                    dtmf[1].audio(timestamp, self.reports.clock)
            elif self.red is not None and pt == self.red[0]:
                self._red(ssrc, seq, timestamp, payload, at)
            elif self.dtmf is not None and pt == self.dtmf[0]():
                self.reports.received(ssrc, seq, timestamp, at, audio=False)
                if playout is not None:
                    playout.numbered(seq)  # its number is no gap in the audio's (DTX)
                self.dtmf[1].feed(timestamp, payload)
            else:
                self.unknown_payloads += 1
        except Exception:  # one bad packet must not stop the leg: counted, not fatal
            drop("rtp_receive_error")
            log.debug("the receive path failed on one packet", exc_info=True)

    def _red(self, ssrc: int, seq: int, timestamp: int, payload: bytes, at: float) -> None:
        _, opus, stats = self.red  # type: ignore[misc]
        blocks = split_red(payload) if payload else None
        if not blocks or blocks[-1][1] != opus:
            stats.malformed += 1
            return
        stats.packets += 1
        playout = self.playout
        if playout is not None:
            for offset, block_pt, block in blocks[:-1]:
                if block_pt == opus and block:
                    playout.redundant((timestamp - offset) & 0xFFFFFFFF, block, at)
        self.audio_packets += 1
        self.reports.received(ssrc, seq, timestamp, at)
        if playout is not None:
            playout.packet(seq, timestamp, blocks[-1][2], at)
        dtmf = self.dtmf
        if dtmf is not None and dtmf[1].open:  # RED's primary is the audio going on too
            dtmf[1].audio(timestamp, self.reports.clock)

    # -- RTCP
    def receive_rtcp(self, plain: bytes, at: float) -> None:
        """An authenticated compound RTCP packet from the far end, ``at`` its arrival."""
        reports = self.reports
        before = reports.far_reports
        reports.receive(plain, at)
        if reports.far_reports != before and self.on_report is not None:
            self.on_report(reports.far.fraction_lost)

    def report(self, *, bye: bool = False) -> bytes:
        """Our compound RTCP packet now (SR while we send, else RR; SDES; BYE when ``bye``)."""
        return self.reports.compound(self.stream, bye=bye, loss_at_least=self.loss_beyond())

    # -- quality
    def quality(self) -> Quality:
        """The session's cumulative counters: what we received (uplink, as this leg's far
        end sends it) and what the far end reports of what we sent (downlink)."""
        far, received = self.reports.far, self.reports.reception
        # What the far end reports of our stream, once it has and we have sent (what we
        # received: totals over the far end's SSRCs, which never go back).
        heard = self.reports.far_reports > 0 and self.stream.packets > 0
        return Quality(
            uplink_packets=received.packets_received,
            uplink_lost=received.packets_lost,
            uplink_jitter_s=received.jitter_s,
            downlink_packets=max(0, self.stream.packets - far.packets_lost) if heard else 0,
            downlink_lost=far.packets_lost if heard else 0,
            downlink_jitter_s=far.jitter_s if heard else None,
            rtt_s=far.rtt_s,
        )
