"""Process-wide counters of the WebRTC transport, exposed to Prometheus by a collector.

The UDP guard and the DTLS hooks run inside aioice/aiortc callbacks that know nothing of the
application's :class:`~bridge.metrics.Metrics`, so they count here and :class:`RtcCollector`
reads them at scrape time (``bridge_udp_dropped_total{reason}``,
``bridge_udp_reads_total{how}``, ``bridge_webrtc_failures_total{stage,reason}``: described in
docs/deployment.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

UDP_DROPS: Counter[str] = Counter()
"""Dropped datagrams by reason."""

FAILURES: Counter[tuple[str, str]] = Counter()
"""Failed sessions by (stage, reason)."""

READS: Counter[str] = Counter()
"""Reads of the worker's polled media sockets (``rtc/udp_poll.py``): ``wakeup`` (a datagram
woke the loop) or ``tick`` (once per media tick); of parked legs' sockets, ``parked_wakeup``
or ``parked_batch`` (every 0.2 s while they come faster)."""


def drop(reason: str) -> None:
    UDP_DROPS[reason] += 1


def failure(stage: str, reason: str) -> None:
    FAILURES[(stage, reason)] += 1


FAMILIES: tuple[tuple[str, str, tuple[str, ...], Counter], ...] = (
    (
        "bridge_udp_dropped",
        "datagrams on media ports dropped before ICE/DTLS/SRTP (or unsent: send_buffer_full), "
        "by reason",
        ("reason",),
        UDP_DROPS,
    ),
    (
        "bridge_webrtc_failures",
        "WebRTC sessions that failed, by stage (ice, dtls, webrtc, timeout; media: a Cloud API "
        "SDES leg that heard nothing) and reason",
        ("stage", "reason"),
        FAILURES,
    ),
    (
        "bridge_udp_reads",
        "reads of the media sockets: a wake-up per datagram, or once per media tick "
        "(BRIDGE_UDP_POLL)",
        ("how",),
        READS,
    ),
)
"""What the collector renders: (name, help, labels, counter keyed by the label values — a
string for one label, a tuple for more)."""


class RtcCollector(Collector):
    """Renders :data:`FAMILIES` (register one per registry)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, help_text, labels, counts in FAMILIES:
            family = CounterMetricFamily(name, help_text, labels=list(labels))
            for key, n in sorted(counts.items()):
                family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
            yield family
