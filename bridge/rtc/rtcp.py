"""RFC 3550 reports of one leg's RTP session (``rtc/rtp_session.py``): every leg owns its RTCP.

:class:`RtcpReports` keeps both halves:

* what we receive, counted once by the stream's :class:`~bridge.audio.reception.RtpReception`
  (RFC 3550 A.3 loss, A.8 jitter), gives our report block (with LSR/DLSR of the far end's
  latest sender report);
* what we send gives a sender report (§6.4.1), its NTP/RTP pair from the latest audio packet
  carried to now on the 48 kHz clock, while we send: an SR only if RTP went out since the
  report before our last one (§6.4), so a leg that stopped sending (a held phone, an idle
  leg) reports as a receiver, no sender counts going stale, until it sends again; an SDES
  CNAME in every compound packet (§6.1), a BYE in the last;
* the far end's block about our SSRC gives the loss it sees and the round-trip time.

A malformed report is counted and ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..audio.reception import RtpReception
from .packets import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SenderReport,
    parse_rtcp,
    receiver_report,
    report_block,
    sender_report,
)
from .rtpsend import OPUS_CLOCK, RtpStream, ntp_time

_REPORTS = (SenderReport, ReceiverReport)
_DLSR_SLACK = 655
"""1/65536 s units (10 ms): how far a far end's DLSR may overstate the time it held our report.
Many count it on a millisecond timer (baresip does), so on a short path (loopback, a LAN) the
round trip comes out a little below zero about every other report: that is a round
trip of about 0, not a report to ignore. Further below zero the LSR or DLSR is bogus."""


@dataclass
class FarEndReport:
    """The latest report block the far end sent about our stream."""

    fraction_lost: float = 0.0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter_s: float = 0.0
    rtt_s: float | None = None


class RtcpReports:
    """The RTCP state of one RTP session we own (module docstring)."""

    def __init__(self, ssrc: int, cname: str, clock: int = OPUS_CLOCK) -> None:
        self.ssrc = ssrc
        self.cname = cname.encode()[:255]
        self.clock = clock
        self.remote_ssrc: int | None = None
        self.reception = RtpReception(clock)
        """What we receive from the far end, each packet counted once (a new SSRC restarts
        its report block)."""
        self._lsr = 0
        self._lsr_at = 0.0
        self.far = FarEndReport()
        self.far_reports = 0
        self.malformed = 0
        self.sent = 0
        self._sdes = (0, b"", b"")  # our SSRC and CNAME, and their SDES packet (written once)
        self._sent_by = (0, 0)  # our packets sent by the report before the last, by the last

    # -- what we receive
    def received(
        self, ssrc: int, seq: int, timestamp: int, at: float, *, audio: bool = True
    ) -> None:
        """One authenticated RTP packet from the far end, counted once, ``at`` its arrival (any
        one base: the jitter is differences; ``audio=False``: an RFC 4733 event, which moves
        the sequence but not the jitter)."""
        if ssrc != self.remote_ssrc:
            if self.remote_ssrc is not None:
                self.reception.restart()
            self.remote_ssrc = ssrc
        if audio:
            self.reception.received(seq, timestamp, at)
        else:
            self.reception.numbered(seq)

    # -- what we send
    def compound(
        self, stream: RtpStream, *, bye: bool = False, loss_at_least: float = 0.0
    ) -> bytes:
        """The compound packet to send now: SR (or RR unless we sent RTP since the report
        before the last, §6.4), SDES CNAME, and BYE when ``bye``; its fraction lost at least
        ``loss_at_least`` (see ``rtc/rtp_session.py``: the loss of a hop beyond this one)."""
        now = time.time()
        block = self._report_block(now, min(255, int(max(0.0, loss_at_least) * 256)))
        count = 1 if block else 0
        ssrc = self.ssrc
        before, last = self._sent_by
        self._sent_by = (last, stream.packets)
        if stream.sent_at is not None and stream.packets != before:
            # A sender (§6.4): the time pair of our newest audio packet sent.
            at, ts = stream.sent_at, stream.timestamp(stream.sent_pts)
            rtp = (ts + int((now - at) * self.clock)) & 0xFFFFFFFF
            out = sender_report(
                ssrc, ntp_time(now), rtp, stream.packets, stream.octets, block, count
            )
        else:
            out = receiver_report(ssrc, block, count)
        out += self._sdes_packet()
        if bye:
            out += bytes(Bye([ssrc]))
        self.sent += 1
        return out

    def _sdes_packet(self) -> bytes:
        """Our SDES CNAME packet, written again only when our SSRC or CNAME changed."""
        ssrc, cname, packet = self._sdes
        if ssrc != self.ssrc or cname != self.cname or not packet:
            ssrc, cname = self.ssrc, self.cname
            packet = bytes(Sdes([(ssrc, [(SDES_CNAME, cname)])]))
            self._sdes = (ssrc, cname, packet)
        return packet

    def _report_block(self, now: float, beyond: int = 0) -> bytes:
        """Our report block about the far end's stream (``b""`` before it sent anything)."""
        r = self.reception
        if self.remote_ssrc is None or r.base_seq is None:
            return b""
        dlsr = min(0xFFFFFFFF, int((now - self._lsr_at) * 65536)) if self._lsr else 0
        return report_block(
            self.remote_ssrc,
            max(r.fraction_lost(), beyond),
            r.cumulative_lost,
            r.highest & 0xFFFFFFFF,
            r.jitter,
            self._lsr,
            dlsr,
        )

    # -- what the far end reports
    def receive(self, plain: bytes, at: float) -> None:
        """An authenticated compound RTCP packet from the far end, ``at`` its arrival
        (``time.monotonic()`` base)."""
        try:
            packets = parse_rtcp(plain)
        except ValueError:
            self.malformed += 1
            return
        # The report's arrival, on the wall clock our reports' NTP times are read from: the
        # round trip is measured to it (RFC 3550 §6.4.1).
        now = at + time.time() - time.monotonic()
        for packet in packets:
            if isinstance(packet, SenderReport) and self.remote_ssrc in (None, packet.ssrc):
                self._lsr = (packet.ntp_timestamp >> 16) & 0xFFFFFFFF
                self._lsr_at = now
            if isinstance(packet, _REPORTS):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self._far_report(block, now)

    def _far_report(self, block: ReportBlock, now: float) -> None:
        self.far_reports += 1
        rtt = None
        if block.lsr:
            middle = (ntp_time(now) >> 16) & 0xFFFFFFFF
            delay = (middle - block.lsr - block.dlsr) & 0xFFFFFFFF
            if delay >= 0x80000000:
                delay -= 1 << 32
            if delay >= -_DLSR_SLACK:
                rtt = max(0, delay) / 65536
        self.far = FarEndReport(
            block.fraction_lost / 256,
            max(0, block.packets_lost),
            block.highest_sequence,
            block.jitter / self.clock,
            rtt,
        )
