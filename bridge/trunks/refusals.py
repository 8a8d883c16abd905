"""The trunk listener's refusals: a trunk's requests refused for what their sender keeps
sending (an INVITE before a WhatsApp call is placed, an INFO or REFER in a call), counted and
said once (:class:`TrunkRefusals`), and everything the trunk user agent counts, read at scrape
time for Prometheus (:class:`ListenerRefusals`).

``bridge_sip_trunk_refused_total{what, reason}``: the connections closed as they arrived
(``what="connection"``: the listener's places' reasons, ``full``, ``untrusted``,
``per_source``, ``closing``), the UDP datagrams dropped (``what="datagram"``: ``too_large``,
``in_hand``, ``closing``), and every refusal the user agent counts (:data:`REFUSALS`): a
malformed message (``what="message"``), a request refused whatever its method
(``what="request"``) and an INVITE refused (``what="invite"``). The counts are the user
agent's own (``sip/places.py``, ``sip/datagram.py``, ``sip/malformed.py``,
``sip/admission.py``, :class:`TrunkRefusals` …, each said once at WARNING while it lasts,
but a digest's challenge: every call's first INVITE gets one); this only reads them.
``bridge_sip_trunk_requests_total{method}``: the requests it served, by method."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from ..logs import Repeats
from ..sip import UserAgent
from ..sip.ua import REQUESTS

log = logging.getLogger(__name__)

REFUSALS = {
    "bad": "message",  # malformed, or a Replaces where RFC 3891 §3 refuses it: 400
    "untrusted": "request",  # a connection outside BRIDGE_SIP_TRUSTED_NETWORKS: 403
    "not_implemented": "request",  # a method we do not serve: 501
    "info_refused": "request",  # an INFO in a call without a key we take: 415 or 400
    "refer_refused": "request",  # a REFER without one usable Refer-To: 400
    "overloaded": "invite",  # 1 024 INVITEs wait for their answer: 503
    "challenged": "invite",  # a trunk's digest asked for: 407
    "auth": "invite",  # wrong digest credentials: 403
    "stranger": "invite",  # from no trunk's source: 403
    "invalid_phone": "invite",  # the Request-URI is no E.164 number: 484
    "bad_offer": "invite",  # an SDP offer we cannot answer: 488
    "unknown_number": "invite",  # X-WA-Number names no number here: 484
    "not_placed": "invite",  # the WhatsApp call refused (permission, limits, room): 4xx/5xx
    "replaces_refused": "invite",  # an INVITE with a Replaces we cannot follow: 4xx, 603
    "reinvite_refused": "invite",  # a re-INVITE whose offer we cannot follow: 488
}
"""Every refusal the trunk user agent counts, by the ``what`` it is reported under."""
PLACED_AGAIN = ("invalid_phone", "bad_offer", "unknown_number", "not_placed")
"""The refusals whose run a source's INVITE that places a call ends."""
SOURCES_SAID = 1024
"""Sources and reasons remembered as said (the one said longest ago forgotten first)."""


class TrunkRefusals:
    """A trunk's request refused for a reason the PBX (or whoever sends from its source) keeps
    giving — an INVITE from no trunk's source, for no E.164 number, with an offer we cannot
    answer, an ``X-WA-Number`` we do not have, or whose WhatsApp call is not placed; an INFO
    with no key we take, a REFER with no usable ``Refer-To``; a ``Replaces`` or a re-INVITE's
    offer we cannot follow (their sender a trunk, a dialog): counted in the user agent's
    counts under that reason and said at WARNING once per sender and reason (later ones at
    DEBUG), its end at INFO when the sender's next such request is taken. It was a WARNING
    line a request, or nothing at all (a PBX's keys in a format we do not take were lost
    without a word)."""

    def __init__(self, ua: Callable[[], UserAgent]) -> None:
        self._ua = ua  # the service's user agent now (a second worker makes another)
        self._said = Repeats(SOURCES_SAID)

    def refused(self, sender: str, reason: str, why: str, method: str = "INVITE") -> None:
        """A ``method`` from ``sender`` (a source address, a trunk) refused for ``reason``."""
        self._ua().count(reason)
        if self._said.seen(f"{reason} {sender}") > 1:
            log.debug("SIP %s from %s: refused again (%s): %s", method, sender, reason, why)
            return
        log.warning(
            "SIP %s from %s: refused (%s): %s (said once for this sender while it lasts)",
            method,
            sender,
            reason,
            why,
        )

    def taken(self, sender: str, method: str, *reasons: str) -> None:
        """A ``method`` from ``sender`` was taken: its runs of ``reasons`` end."""
        for reason in reasons:
            if refused := self._said.ended(f"{reason} {sender}"):
                log.info(
                    "SIP %s from %s: taken again (%d refused %s before)",
                    method,
                    sender,
                    refused,
                    reason,
                )

    def placed(self, source: str) -> None:
        """An INVITE from ``source`` placed a WhatsApp call."""
        self.taken(source, "INVITE", *PLACED_AGAIN)


class ListenerRefusals:
    """Reads the trunk user agent's counts at scrape time (see the module docstring)."""

    def __init__(self, ua: Callable[[], UserAgent]) -> None:
        self._ua = ua  # the service's user agent now (a second worker makes another)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ua = self._ua()
        family = CounterMetricFamily(
            "bridge_sip_trunk_refused",
            "connections closed as they arrived, UDP datagrams dropped, and messages, "
            "requests and INVITEs refused by the trunk listener, by reason",
            labels=["what", "reason"],
        )
        requests = CounterMetricFamily(
            "bridge_sip_trunk_requests",
            "requests the trunk listener served, by method",
            labels=["method"],
        )
        for reason, count in ua.transport.places.refused.items():
            family.add_metric(["connection", reason], count)
        if ua.datagrams is not None:
            for reason, count in ua.datagrams.dropped.items():
                family.add_metric(["datagram", reason], count)
        counts = {reason: 0 for reason in REFUSALS} | ua.counts
        for kind, count in counts.items():
            if kind in REQUESTS:
                requests.add_metric([kind], count)
            else:  # (one not listed reported too, as a request's)
                family.add_metric([REFUSALS.get(kind, "request"), kind], count)
        yield family
        yield requests
