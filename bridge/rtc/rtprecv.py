"""The bridge's own RTP receive path for audio: datagram → SRTP unprotect → the leg's receiver.

aiortc takes each datagram through aioice's queue to its DTLS transport's receive task (a task
wake-up per packet and three coroutine layers), reads the wall clock through ``datetime``
(``clock.current_ms``), unprotects it, parses an ``RtpPacket`` with its header extensions,
routes it (a new ``set`` per packet), then in ``RTCRtpReceiver._handle_rtp_packet`` reads
``datetime`` again (the active-SSRC table), updates its RTCP statistics, depayloads and hands
it to the jitter buffer that ``rtc/uplink.py`` replaced; the bridge's RED and RFC 4733 hooks
wrap that chain in two more coroutines. :class:`LeanReceive` does the same work for an audio
receiver's Opus packets in one synchronous call, in aioice's datagram callback
(``Connection.data_received``, wrapped on that connection alone):

* it takes only packets it is sure of: SRTP (not SRTCP) once DTLS has set up its keys, of the
  receiver's Opus payload type (or RED over Opus, or telephone-event when the leg takes
  them), from an SSRC aiortc's RTP router gives this receiver (asked once per new SSRC, with
  aiortc's own rule). Anything else — DTLS, RTCP, other payload types — goes into aioice's
  queue exactly as before, to aiortc;
* the fixed header is read with one ``struct`` call before unprotecting (SRTP leaves it in
  the clear); after libsrtp, the CSRCs, header extension and padding are skipped (audio
  negotiates no extension the bridge reads);
* the RTCP receiver statistics are the bridge's own ``ReceptionStats`` (``rtc/reception.py``)
  in the receiver's table where aiortc's ``StreamStatistics`` would be, counted as
  ``StreamStatistics.add`` counts (RFC 3550 A.3 and A.8; one ``time.time()`` read), so
  aiortc's RTCP task keeps building the receiver reports (fraction lost, cumulative loss,
  highest sequence, jitter, LSR/DLSR) and ``getStats`` its ``inbound-rtp``. Two differences,
  both corrections: telephone-event packets, which share the audio's SSRC and sequence space
  but never reached aiortc's statistics (so every key press was reported as lost packets),
  now count as received (but not in the jitter: their timestamps are the event's start, on
  another clock); and the jitter survives the RTP timestamp wrapping (aiortc's subtraction is
  not modular: one jump of 2³² at the wrap);
* the payload goes to the leg's :class:`~bridge.rtc.uplink.Playout` (``packet``; a RED
  packet's redundant blocks to ``redundant`` first, ``rtc/red.py``), a telephone-event to the
  leg's :class:`~bridge.rtc.rfc4733.DtmfDetector`.

The transport's received bytes/packets counters are kept as aiortc keeps them. aiortc's own
path, with the bridge's RED and RFC 4733 hooks on it, stays installed for whatever this one
leaves to it. Everything of aiortc's and aioice's used here is reached through
``rtc/aiortc_seam.py``, which checks it at import (and again per receiver).
"""

from __future__ import annotations

import datetime
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import RTCRtpReceiver

from . import aiortc_seam as seam
from .counters import drop
from .reception import ReceptionStats, record
from .red import RedStats, split_red
from .rfc4733 import DtmfDetector
from .uplink import Playout

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
ACTIVE_EVERY = 1.0
"""Seconds between updates of aiortc's active-SSRC table (``getSynchronizationSources`` keeps
10 s; aiortc writes a ``datetime`` per packet)."""


def payload_bounds(data: bytes) -> tuple[int, int] | None:
    """Where a plaintext RTP packet's payload starts and ends (after the CSRCs and header
    extension, before the padding), or ``None`` if the packet is malformed (as aiortc's
    ``RtpPacket.parse`` would refuse it)."""
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


class _Route:
    """What ``RtpRouter.route_rtp`` reads of a packet."""

    __slots__ = ("payload_type", "ssrc")

    def __init__(self, ssrc: int, payload_type: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type


_OPUS, _RED = 0, 1


class LeanReceive:
    """An audio ``RTCRtpReceiver``'s Opus packets, straight from aioice's datagram callback to
    the leg's :class:`~bridge.rtc.uplink.Playout` (module docstring). :meth:`install` before
    the connection starts the receiver; it attaches once aiortc has registered the receiver
    with its DTLS transport (``RTCRtpReceiver.receive``), and :meth:`detach` undoes it."""

    def __init__(self, receiver: RTCRtpReceiver, playout: Playout) -> None:
        self._codecs, self._streams, self._active = seam.receiver_tables(receiver)
        """aiortc's codecs, RTCP statistics per SSRC (its RTCP task and ``getStats`` read
        them) and active-SSRC table."""
        self.receiver: Any = receiver
        self.playout = playout
        self.red: tuple[int, int, RedStats] | None = None
        """RED's payload type, the Opus one its blocks carry, and its counters, when the leg
        takes RED (``rtc/red.py``)."""
        self.dtmf: tuple[Callable[[], int | None], DtmfDetector] | None = None
        """telephone-event's payload type (read per packet) and the leg's detector."""
        self.dtls: Any = None
        self.connection: Any = None
        self._aiortc: Callable[[bytes, int], None] | None = None
        self._routes: dict[int, int] = {}
        self._opus_pt = -1
        self._ssrcs: set[int] = set()
        self._refused: set[int] = set()
        self._active_at: dict[int, float] = {}
        self.packets = 0
        """Packets this path took (and unprotected)."""
        self.unprotect_failed = 0

    def take_red(self, payload_type: int, opus: int, stats: RedStats) -> None:
        """Also take RED (RFC 2198) over Opus (``opus``) on ``payload_type`` (``rtc/red.py``)."""
        self.red = (payload_type, opus, stats)
        if self.dtls is not None:
            self._routes[payload_type] = _RED

    def take_dtmf(self, payload_type: Callable[[], int | None], detector: DtmfDetector) -> None:
        """Also take telephone-event (RFC 4733) on ``payload_type()`` into ``detector``."""
        self.dtmf = (payload_type, detector)

    def install(self) -> None:
        """Attach once aiortc's ``receive`` has registered the receiver (an instance
        attribute wraps it, so only this receiver is affected)."""
        receiver = self.receiver
        original = receiver.receive

        async def receive(parameters: Any) -> None:
            await original(parameters)
            try:
                self.attach()
            except Exception:  # aiortc's path stays: slower, never silent
                log.exception("lean RTP receive path not attached; aiortc receives")

        receiver.receive = receive

    def attach(self) -> bool:
        """Take over the receiver's Opus packets on its DTLS transport's ICE connection (if
        the codec is Opus and nothing else has taken that connection); idempotent."""
        receiver = self.receiver
        dtls = receiver.transport
        if self.dtls is not None:
            return self.dtls is dtls
        opus = [pt for pt, c in self._codecs.items() if c.mimeType.lower() == "audio/opus"]
        if not opus:
            log.info("lean RTP receive path: no Opus negotiated; aiortc receives")
            return False
        seam.require_dtls(dtls, send=False)
        connection = seam.ice_connection(dtls.transport)
        if connection is None:
            raise seam.SeamError("aiortc's RTCIceTransport has no aioice connection")
        aiortc_path = seam.take_datagrams(connection, self.datagram)
        if aiortc_path is None:
            log.warning("lean RTP receive path: the connection is taken already; aiortc receives")
            return False
        self._opus_pt = opus[0]
        self._routes = {pt: _OPUS for pt in opus}
        if self.red is not None:
            self._routes[self.red[0]] = _RED
        self.dtls, self.connection = dtls, connection
        self._aiortc = aiortc_path
        return True

    def detach(self) -> None:
        """Give the connection's datagrams back to aiortc (the leg is closing)."""
        if self.connection is not None:
            seam.give_back_datagrams(self.connection)
        self.connection = None

    def _ours(self, ssrc: int) -> bool:
        """Whether aiortc's router gives packets of ``ssrc`` (as Opus) to this receiver: asked
        once per SSRC, with aiortc's rule (which learns an unknown SSRC if one receiver has
        the payload type)."""
        if ssrc in self._refused:
            return False
        ours = seam.rtp_router(self.dtls).route_rtp(_Route(ssrc, self._opus_pt)) is self.receiver
        (self._ssrcs if ours else self._refused).add(ssrc)
        return ours

    def datagram(self, data: bytes, component: int) -> None:
        """aioice's ``Connection.data_received``: one datagram of the connection (the UDP
        guard has let it through). Takes this receiver's SRTP; queues the rest for aiortc."""
        dtls = self.dtls
        srtp = seam.rx_srtp(dtls)
        if srtp is None or len(data) < 12:
            self._aiortc(data, component)  # type: ignore[misc]
            return
        # SRTP leaves the header in the clear (RFC 3711 §3.1): read it before unprotecting.
        first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        kind = self._routes.get(second & 0x7F)
        dtmf = None
        if first >> 6 != 2 or 192 <= second <= 208:  # not RTP, or RTCP
            kind = None
        elif kind is None:
            dtmf = self.dtmf
            if dtmf is not None and second & 0x7F != dtmf[0]():
                dtmf = None
        elif ssrc not in self._ssrcs and not self._ours(ssrc):
            kind = None
        if kind is None and dtmf is None:
            self._aiortc(data, component)  # type: ignore[misc]
            return
        seam.count_received(dtls, len(data))
        try:
            plain = srtp.unprotect(data)
        except pylibsrtp.Error as exc:
            self.unprotect_failed += 1
            log.debug("SRTP unprotect failed: %s", exc)
            return
        self.packets += 1
        try:
            self._deliver(plain, first, seq, timestamp, ssrc, kind, dtmf)
        except Exception:  # as aiortc's receive step behind the UDP guard: counted, not fatal
            drop("dtls_receive_error")
            log.debug("the receive path failed on one packet", exc_info=True)

    def _deliver(
        self,
        plain: bytes,
        first: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        kind: int | None,
        dtmf: tuple[Callable[[], int | None], DtmfDetector] | None,
    ) -> None:
        """One unprotected packet of this receiver to the leg's playout or detector."""
        n = len(plain)
        if first == 0x90 and n >= 16:  # what browsers send: one extension block, no padding
            start = 16 + 4 * ((plain[14] << 8) | plain[15])
            bounds = (start, n) if start <= n else None
        else:
            bounds = payload_bounds(plain)
        receiver = self.receiver
        if kind is None:  # telephone-event (RFC 4733)
            detector = dtmf[1]  # type: ignore[index]
            if bounds is None:
                detector.malformed += 1
                return
            if ssrc in self._ssrcs and seam.receiver_enabled(receiver):
                self._count(ssrc, seq, timestamp, audio=False)
                self.playout.numbered(seq)  # its number is no gap in the audio's (DTX)
            detector.feed(timestamp, plain[bounds[0] : bounds[1]])
            return
        if bounds is None or not seam.receiver_enabled(receiver):
            return  # aiortc drops both (before its statistics)
        payload = plain[bounds[0] : bounds[1]]
        if kind == _RED:
            _, opus, red_stats = self.red  # type: ignore[misc]
            blocks = split_red(payload) if payload else None
            if not blocks or blocks[-1][1] != opus:
                red_stats.malformed += 1
                return
            red_stats.packets += 1
            for offset, block_pt, block in blocks[:-1]:
                if block_pt == opus and block:
                    self.playout.redundant((timestamp - offset) & 0xFFFFFFFF, block)
            payload = blocks[-1][2]
        self._count(ssrc, seq, timestamp)
        self.playout.packet(seq, timestamp, payload)

    def _count(self, ssrc: int, seq: int, timestamp: int, *, audio: bool = True) -> None:
        """aiortc's per-packet bookkeeping: RTCP statistics and (once a second) the active
        SSRC table."""
        now = time.time()
        stream = self._streams.get(ssrc)
        if type(stream) is not ReceptionStats:
            # new, or started by aiortc for a packet it routed before this path attached
            clockrate = self._codecs[self._opus_pt].clockRate
            fresh = ReceptionStats(clockrate) if stream is None else None
            stream = self._streams[ssrc] = fresh or ReceptionStats.adopt(stream, clockrate)
        record(stream, seq, timestamp, now, audio=audio)
        if now - self._active_at.get(ssrc, 0.0) >= ACTIVE_EVERY:
            self._active_at[ssrc] = now
            self._active[ssrc] = datetime.datetime.now(datetime.UTC)


def install(receiver: RTCRtpReceiver, playout: Playout) -> LeanReceive:
    """Give an audio receiver whose packets go to ``playout`` (``rtc/uplink.py``) the lean
    path; the one hook each WebRTC leg calls (``rtc/leg.py``)."""
    lean = LeanReceive(receiver, playout)
    lean.install()
    return lean
