"""Prometheus collectors: calls, WebRTC quality, the bus and the engine legs, the process.

Everything lives in one :class:`Metrics` object per application (its own
``CollectorRegistry``, never the global one). Labels are bounded sets (direction, reason,
result, state, engine); a call id is never a label — per-call numbers are served as JSON by
``GET /call/{callID}/stats``.

Per-frame counters are plain integers on each call's bus; ``media_metrics.MediaCollector``
reads them at scrape time (live calls plus the totals of ended ones), so the media path pays
no Prometheus cost per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .media.clock import worker_clock
from .media_metrics import EngineCounters, MediaCollector, MediaTotals

__all__ = ["CONTENT_TYPE", "EngineCounters", "MediaTotals", "Metrics", "estimate_mos"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def estimate_mos(loss_fraction: float, jitter_s: float, rtt_s: float | None) -> float:
    """Mean opinion score from the ITU-T G.107 E-model, in the common simplified form.

    One-way delay is half the RTT, jitter counts twice (it becomes playout buffering) plus
    10 ms of codec delay; the R factor loses 2.5 points per percent of packet loss.
    """
    one_way_ms = (rtt_s or 0.0) * 500.0
    effective = one_way_ms + 2 * jitter_s * 1000.0 + 10.0
    if effective < 160:
        r = 93.2 - effective / 40
    else:
        r = 93.2 - (effective - 120) / 10
    r -= 2.5 * (loss_fraction * 100)
    r = max(0.0, min(100.0, r))
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def forget_series(family: Counter | Gauge, label: str, value: str) -> None:
    """Remove every series of ``family`` whose ``label`` is ``value`` (read from what the
    family renders: prometheus-client's own partial removal is newer than our floor)."""
    doomed = {
        tuple(sample.labels.values())
        for metric in family.collect()
        for sample in metric.samples
        if sample.labels.get(label) == value
    }
    for values in doomed:
        with contextlib.suppress(KeyError):
            family.remove(*values)


class Metrics:
    """The application's Prometheus registry and the series the code updates directly."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.calls_active = Gauge("bridge_calls_active", "live calls", ["direction"], registry=r)
        self.calls_max = Gauge("bridge_calls_max", "BRIDGE_MAX_CALLS", registry=r)
        self.calls_started = Counter(
            "bridge_calls_started", "calls created", ["direction"], registry=r
        )
        self.calls_ended = Counter(
            "bridge_calls_ended", "calls ended", ["direction", "reason"], registry=r
        )
        # Per number and tenant (labels bounded by the numbers that exist: numberID, tenantID).
        self.number_calls_started = Counter(
            "bridge_number_calls_started",
            "calls created, by number and tenant",
            ["number", "tenant", "direction"],
            registry=r,
        )
        self.number_calls_ended = Counter(
            "bridge_number_calls_ended",
            "calls ended, by number and tenant",
            ["number", "tenant", "reason"],
            registry=r,
        )
        self.number_pulses = Counter(
            "bridge_number_billable_pulses",
            "billable pulses of ended business-initiated calls (Meta's 6 s pulses), by number, "
            "tenant and the callee's country (ISO code from a fixed table, empty when unknown)",
            ["number", "tenant", "country"],
            registry=r,
        )
        self.number_up = Gauge(
            "bridge_number_up",
            "1 when the number's engine works with its credentials (Graph token checked)",
            ["number"],
            registry=r,
        )
        self.number_paused_until = Gauge(
            "bridge_number_calling_paused_until_seconds",
            "when Meta's pause of the number's business-initiated calling ends (Unix s; "
            "-1: paused, end not given; absent or 0: not paused)",
            ["number"],
            registry=r,
        )
        self.call_duration = Histogram(
            "bridge_call_duration_seconds",
            "answered call duration",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.offers = Counter(
            "bridge_webrtc_offers", "WebRTC offers by result", ["result"], registry=r
        )
        self.offer_to_answer = Histogram(
            "bridge_webrtc_offer_to_answer_seconds",
            "offer received to answer sent",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.offer_to_connected = Histogram(
            "bridge_webrtc_offer_to_connected_seconds",
            "offer received to ICE+DTLS connected",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20),
            registry=r,
        )
        self.webrtc_states = Counter(
            "bridge_webrtc_state_transitions",
            "peer connection state changes",
            ["state"],
            registry=r,
        )
        self.sessions_active = Gauge(
            "bridge_webrtc_sessions_active", "live WebRTC peer connections", registry=r
        )
        self.rtp_packets = Counter(
            "bridge_rtp_packets_received",
            "RTP packets received (uplink: by the bridge; downlink: by browsers, from RTCP)",
            ["direction"],
            registry=r,
        )
        self.rtp_lost = Counter(
            "bridge_rtp_packets_lost",
            "RTP packets lost (uplink: browser→bridge; downlink: "
            "bridge→browser, from RTCP receiver reports)",
            ["direction"],
            registry=r,
        )
        self.rtp_jitter = Histogram(
            "bridge_rtp_jitter_seconds",
            "RTP interarrival jitter, sampled per session",
            ["direction"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
            registry=r,
        )
        self.rtt = Histogram(
            "bridge_rtt_seconds",
            "round-trip time from RTCP receiver reports",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2),
            registry=r,
        )
        self.mos = Histogram(
            "bridge_mos_estimate",
            "estimated MOS (E-model) per session sample",
            buckets=(1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5),
            registry=r,
        )
        self.mos_current = Gauge(
            "bridge_mos_estimate_min",
            "lowest MOS estimate among live sessions (5 when none)",
            registry=r,
        )
        self.mos_current.set(5.0)
        # Per leg: "browser" (the agent's peer connection) and "whatsapp" (the engine's own
        # WebRTC peer, for engines whose WhatsApp side is WebRTC: cloudapi).
        self.leg_rtt = Histogram(
            "bridge_leg_rtt_seconds",
            "round-trip time from RTCP receiver reports, by leg",
            ["leg"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2),
            registry=r,
        )
        self.leg_jitter = Histogram(
            "bridge_leg_rtp_jitter_seconds",
            "RTP interarrival jitter by leg and direction (received: by the bridge; "
            "sent: at the far end, from RTCP)",
            ["leg", "direction"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
            registry=r,
        )
        self.leg_packets = Counter(
            "bridge_leg_rtp_packets",
            "RTP packets by leg and direction (received: by the bridge; sent: as the far end "
            "reports receiving them)",
            ["leg", "direction"],
            registry=r,
        )
        self.leg_lost = Counter(
            "bridge_leg_rtp_packets_lost",
            "RTP packets lost by leg and direction",
            ["leg", "direction"],
            registry=r,
        )
        self.leg_mos = Histogram(
            "bridge_leg_mos_estimate",
            "estimated MOS (E-model) per sample, by leg",
            ["leg"],
            buckets=(1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5),
            registry=r,
        )
        self.dtmf = Counter(
            "bridge_dtmf_events",
            "DTMF key presses: received (from the WhatsApp user or a browser) and sent to "
            "WhatsApp (by the API or a browser)",
            ["direction", "source"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "bridge_event_loop_lag_seconds",
            "event-loop scheduling delay",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "bridge_webhook_deliveries",
            "call-event webhooks by final outcome (delivered, rejected: a 4xx or redirect, "
            "gave_up: out of tries, dropped: queue overflow, abandoned: shutdown, failed: a "
            "bug of the bridge's, logged with its traceback)",
            ["outcome"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "bridge_webhook_attempts",
            "webhook HTTP attempts by result (2xx, 3xx, 4xx, 5xx, timeout, error)",
            ["result"],
            registry=r,
        )
        self.webhook_latency = Histogram(
            "bridge_webhook_delivery_seconds",
            "event published to webhook delivered (retries included)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.webhook_queued = Gauge(
            "bridge_webhook_queued", "webhook deliveries waiting or in flight", registry=r
        )
        self.directory_up = Gauge(
            "bridge_directory_up",
            "1 while the call directory answers (always with BRIDGE_DIRECTORY=memory)",
            registry=r,
        )
        self.forwarded = Counter(
            "bridge_forwarded_requests",
            "requests about a call forwarded to the worker that owns it, by outcome (answered: "
            "the owner's status went back; unreachable: 503 owner_unreachable)",
            ["outcome"],
            registry=r,
        )
        self.handovers = Counter(
            "bridge_handovers",
            "live calls moved between workers, by reason (drain: a deploy's SIGTERM; crash: "
            "adopted from a dead worker) and outcome (moved; no_room: no other worker had "
            "room; failed: the other worker did not take it; cannot_move: the engine's calls "
            "cannot move, e.g. Cloud API, or a phone on a trunk is on the call; no_browser: "
            "adopted, but no browser offered in time)",
            ["reason", "outcome"],
            registry=r,
        )
        self.handover_gap = Histogram(
            "bridge_handover_audio_gap_seconds",
            "a moved call's audio gap: from the old worker letting go (drain) or the crash "
            "being noticed, to the browser's new peer connection being connected on the new "
            "owner",
            ["reason"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60),
            registry=r,
        )
        self.ended_totals = MediaTotals()
        """Bus counters of calls that have ended (live ones are read at scrape)."""

    def forget_number(self, number_id: str) -> None:
        """A deleted number's series go with it (its last call ended): the ``number`` label is
        bounded by the numbers that exist, not by every number a process ever had."""
        for family in (
            self.number_calls_started,
            self.number_calls_ended,
            self.number_pulses,
            self.number_up,
            self.number_paused_until,
        ):
            forget_series(family, "number", number_id)

    def attach_media(
        self,
        totals: Callable[[], MediaTotals],
        engine: Callable[[], tuple[str, EngineCounters, bool]],
    ) -> None:
        self.registry.register(MediaCollector(totals, engine))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def run_loop_lag_monitor(self, interval: float = 0.25, idle: float = 1.0) -> None:
        """Measure how late the event loop wakes a sleeping task (owned by the app): every
        ``interval`` s while the media clock runs (calls' media, where a late loop is heard),
        every ``idle`` s while it is stopped (an idle worker: fewer wake-ups for nothing)."""
        clock = worker_clock()
        while True:
            pause = interval if clock.running else idle
            start = time.monotonic()
            await asyncio.sleep(pause)
            self.loop_lag.observe(max(0.0, time.monotonic() - start - pause))
