"""The trunk listener's refusals for Prometheus, read at scrape time:
``bridge_sip_trunk_refused_total{what, reason}``, the connections closed as they arrived
(``what="connection"``: the listener's places' reasons, ``full``, ``untrusted``,
``per_source``, ``closing``) and the UDP datagrams dropped (``what="datagram"``:
``too_large``, ``in_hand``, ``closing``), and the INVITEs refused ``503`` because too many
waited for their answer (``what="invite"``, ``overloaded``). The counts are the user agent's
own (``sip/places.py``, ``sip/datagram.py``, ``sip/admission.py``, each said once at WARNING
while it lasts); this only reads them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from ..sip import UserAgent


class ListenerRefusals:
    """Reads the trunk user agent's refusals at scrape time (see the module docstring)."""

    def __init__(self, ua: Callable[[], UserAgent]) -> None:
        self._ua = ua  # the service's user agent now (a second worker makes another)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ua = self._ua()
        family = CounterMetricFamily(
            "bridge_sip_trunk_refused",
            "connections closed as they arrived, UDP datagrams dropped and INVITEs refused "
            "503 by the trunk listener, by reason",
            labels=["what", "reason"],
        )
        for reason, count in ua.transport.places.refused.items():
            family.add_metric(["connection", reason], count)
        if ua.datagrams is not None:
            for reason, count in ua.datagrams.dropped.items():
                family.add_metric(["datagram", reason], count)
        family.add_metric(["invite", "overloaded"], ua.counts.get("overloaded", 0))
        yield family
