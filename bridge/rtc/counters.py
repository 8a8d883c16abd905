"""Process-wide counters of the WebRTC transport, exposed to Prometheus by a collector.

The UDP guard and the DTLS hooks run inside aioice/aiortc callbacks that know nothing of the
application's :class:`~bridge.metrics.Metrics`, so they count here (plain integers, bumped on
the event loop) and :class:`RtcCollector` reads them at scrape time:

* ``bridge_udp_dropped_total{reason}`` — datagrams dropped before aioice/aiortc saw them (and
  sends the kernel's buffer had no room for, ``send_buffer_full``).
* ``bridge_udp_reads_total{how}`` — reads of the polled media sockets (``wakeup``, ``tick``).
* ``bridge_webrtc_failures_total{stage,reason}`` — sessions whose ICE or DTLS failed.
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
woke the loop) or ``tick`` (once per media tick)."""


def drop(reason: str) -> None:
    UDP_DROPS[reason] += 1


def failure(stage: str, reason: str) -> None:
    FAILURES[(stage, reason)] += 1


class RtcCollector(Collector):
    """Renders :data:`UDP_DROPS` and :data:`FAILURES` (register one per registry)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        drops = CounterMetricFamily(
            "bridge_udp_dropped",
            "datagrams on media ports dropped before ICE/DTLS/SRTP (or unsent: send_buffer_full), "
            "by reason",
            labels=["reason"],
        )
        for reason, n in sorted(UDP_DROPS.items()):
            drops.add_metric([reason], n)
        yield drops
        failures = CounterMetricFamily(
            "bridge_webrtc_failures",
            "WebRTC sessions that failed, by stage (ice, dtls, timeout) and reason",
            labels=["stage", "reason"],
        )
        for (stage, reason), n in sorted(FAILURES.items()):
            failures.add_metric([stage, reason], n)
        yield failures
        reads = CounterMetricFamily(
            "bridge_udp_reads",
            "reads of the media sockets: a wake-up per datagram, or once per media tick "
            "(BRIDGE_UDP_POLL)",
            labels=["how"],
        )
        for how, n in sorted(READS.items()):
            reads.add_metric([how], n)
        yield reads
