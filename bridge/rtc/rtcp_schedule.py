"""When a leg sends its RTCP: RFC 3550 §6.2 and §6.3.1 intervals, on the worker's media clock.

Every leg's ``RtpLeg`` (``rtc/rtp_leg.py``) sends its compound report (``rtc/rtcp.py``) through
one :class:`RtcpSchedule`: each report is a one-shot callback on the worker clock
(``media/clock.py`` ``WorkerClock.call_at``), so no leg keeps a task or a timer of its own.

:class:`RtcpInterval` is the computation, sans-IO (RFC 3550 §6.3.1, A.7), for a two-party
session where both send (so §6.2's senders' share never applies): ``members × avg_rtcp_size /
rtcp_bw``, at least the minimum (halved for the first report, §6.2), randomised 0.5–1.5 ×
(§6.3.1). Timer reconsideration and the ``e − 3/2`` compensation (§6.3.3) are left out: they
exist for a group whose membership changes, and a two-party session's never does.

The minimum is the leg's profile's:

* RTP/AVP and RTP/SAVP (a trunk's phone, Meta's SDES leg): the 5 s RFC 3550 §6.2 recommends
  (its reduced minimum, ~3.6 s at a call's ~100 kbit/s, buys audio nothing).
* UDP/TLS/RTP/SAVPF (a DTLS leg): RFC 4585 §3.4 lets AVPF drop the minimum; we keep
  :data:`AVPF_MIN_INTERVAL` (1 s, aiortc's mean) because the far end's encoder sets its FEC
  from our loss reports, and a second is how fast it follows a link that turns lossy.
* A parked DTLS leg (``rtc/connected.py``): 5 s again (:meth:`RtcpSchedule.pace`), rounded up
  to the whole seconds of the keepalive pulse so its reports ride that wake-up. It keeps
  reporting because it is a sender (the keepalive) and the far end's §6.3.5 timeout counts from
  our last report.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

from ..media.clock import WorkerClock, worker_clock

log = logging.getLogger(__name__)

AVP_MIN_INTERVAL = 5.0
"""Seconds: RFC 3550 §6.2's recommended minimum (RTP/AVP, RTP/SAVP legs)."""
AVPF_MIN_INTERVAL = 1.0
"""Seconds: our minimum on an RTP/SAVPF leg (module docstring)."""
AUDIO_SESSION_BPS = 100_000
"""The session bandwidth of a two-way audio call (RFC 3550 §6.2: the nominal data bandwidth
with lower-layer headers): two senders of ~50 kbit/s (Opus at 32 kbit/s or G.711 at 64,
plus 16 kbit/s of IP/UDP/RTP headers at 50 packets a second)."""
MEMBERS = 2
"""Us and the far end: every session the bridge terminates is two-party."""
LOWER_LAYERS = 28
"""IPv4 and UDP header octets, counted in the average RTCP size (RFC 3550 §6.2)."""


class RtcpInterval:
    """The RFC 3550 report interval of a two-party session (module docstring), sans-IO:
    ``random`` gives uniform numbers in [0, 1) (injected by tests)."""

    def __init__(
        self,
        min_interval: float = AVP_MIN_INTERVAL,
        *,
        session_bps: float = AUDIO_SESSION_BPS,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.min_interval = min_interval
        self.session_bps = session_bps
        self.random = random
        self.avg_rtcp_size = 100.0
        """Octets (RFC 3550 A.7's estimate until the first packet is counted: an SR with one
        block, an SDES CNAME and the headers below)."""
        self.initial = True

    def count(self, octets: int) -> None:
        """A compound RTCP packet of ``octets`` (without lower layers) sent or received:
        the average moves by 1/16 of the difference (RFC 3550 §6.3.3)."""
        self.avg_rtcp_size += (octets + LOWER_LAYERS - self.avg_rtcp_size) / 16

    def deterministic(self) -> float:
        """The interval before randomisation, ``T_d`` (§6.3.1)."""
        rtcp_bw = 0.05 * self.session_bps / 8  # octets a second
        minimum = self.min_interval / 2 if self.initial else self.min_interval
        return max(minimum, MEMBERS * self.avg_rtcp_size / rtcp_bw)

    def next(self) -> float:
        """Seconds to the next report: ``T_d`` × 0.5–1.5 (the first one's minimum halved)."""
        interval = self.deterministic() * (0.5 + self.random())
        self.initial = False
        return interval


class RtcpSchedule:
    """One leg's RTCP reports on the worker clock: :meth:`start` once the wire can send,
    ``send_report()`` each interval (it sends one compound packet and returns its length;
    ``ConnectionError``: the wire is gone, the reports stop), :meth:`stop` at the end.
    ``timers`` and ``monotonic`` are the worker clock and ``time.monotonic`` unless a test
    gives its own."""

    def __init__(
        self,
        send_report: Callable[[], int],
        interval: RtcpInterval,
        *,
        timers: WorkerClock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send_report = send_report
        self.interval = interval
        self.timers = timers
        self.monotonic = monotonic
        self._cancel: Callable[[], None] | None = None
        self._at = 0.0
        """When the pending report is due."""
        self.grid = 0.0
        """Seconds: report times are rounded up to a multiple of it (0: not rounded)."""
        self.sent = 0

    @property
    def started(self) -> bool:
        return self._cancel is not None

    def start(self) -> None:
        """The first report within half an interval (idempotent)."""
        if self._cancel is None:
            self._schedule(self.monotonic())

    def pace(self, min_interval: float, grid: float = 0.0) -> None:
        """Report at ``min_interval``'s pace from now on, each report time rounded up to a
        multiple of ``grid`` seconds (0: not rounded; module docstring: a parked leg's). A
        report due later than the new pace allows comes forward."""
        self.interval.min_interval, self.grid = min_interval, grid
        if self._cancel is None:
            return
        now = self.monotonic()
        if self._when(now + 1.5 * self.interval.deterministic()) < self._at:
            self._cancel()
            self._schedule(now)

    def _when(self, at: float) -> float:
        grid = self.grid
        return math.ceil(at / grid) * grid if grid else at

    def _schedule(self, now: float) -> None:
        if self.timers is None:
            self.timers = worker_clock()
        self._at = self._when(now + self.interval.next())
        self._cancel = self.timers.call_at(self._at, self._due)

    def _due(self, now: float) -> None:
        if self._cancel is None:
            return  # stopped meanwhile
        try:
            octets = self.send_report()
        except ConnectionError:
            self._cancel = None  # the wire is gone: the leg is ending
            return
        self.sent += 1
        self.interval.count(octets)
        self._schedule(now)

    def received(self, octets: int) -> None:
        """A compound RTCP packet of ``octets`` from the far end (its size counts, §6.3.3)."""
        self.interval.count(octets)

    def stop(self) -> None:
        """No more reports (idempotent); the leg sends its BYE itself."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
