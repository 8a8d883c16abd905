"""Media quality of live calls: RTP/RTCP samples into the metrics, and the totals the
Prometheus collector reads at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..metrics import MediaTotals, Metrics, estimate_mos
from ..rtc import WebRTCSession
from .runtime import CallRuntime

log = logging.getLogger(__name__)


def media_totals(metrics: Metrics, runtimes: Iterable[CallRuntime]) -> MediaTotals:
    """Bus and jitter-buffer counters of every call, ended ones included."""
    ended = metrics.ended_totals
    out = MediaTotals(
        jitter_underruns=ended.jitter_underruns,
        jitter_overflow_drops=ended.jitter_overflow_drops,
        jitter_latency_drops=ended.jitter_latency_drops,
    )
    out.add_bus(ended.bus)
    for runtime in runtimes:
        out.add_bus(runtime.bus.stats)
        for session in runtime.sessions.values():
            out.absorb_jitter(session.jitter_buffer, depth=True)
    return out


async def sample_quality_forever(
    metrics: Metrics, runtimes: Callable[[], Iterable[CallRuntime]], interval: float
) -> None:
    """Every ``interval`` s, sample each connected session's RTP/RTCP statistics."""
    while True:
        await asyncio.sleep(interval)
        # One pass per call of a function: nothing of a pass (a session of a call that ends
        # meanwhile, with its codec threads) stays referenced while the loop sleeps.
        await sample_quality_once(metrics, [s for r in runtimes() for s in r.sessions.values()])


async def sample_quality_once(m: Metrics, sessions: list[WebRTCSession]) -> None:
    worst = 5.0
    for session in sessions:
        if session.state != "connected":
            continue
        try:
            q = await session.sample_quality()
        except Exception:
            log.exception("sampling WebRTC stats of call %s", session.call_id)
            continue
        if q is None:
            continue
        m.rtp_packets.labels("uplink").inc(q.uplink_packets)
        m.rtp_lost.labels("uplink").inc(q.uplink_lost)
        m.rtp_jitter.labels("uplink").observe(q.uplink_jitter_s)
        m.rtp_packets.labels("downlink").inc(q.downlink_packets)
        m.rtp_lost.labels("downlink").inc(q.downlink_lost)
        if q.downlink_jitter_s is not None:
            m.rtp_jitter.labels("downlink").observe(q.downlink_jitter_s)
        if q.rtt_s is not None:
            m.rtt.observe(q.rtt_s)
        jitter = max(q.uplink_jitter_s, q.downlink_jitter_s or 0.0)
        session.mos = estimate_mos(q.loss_fraction, jitter, q.rtt_s)
        m.mos.observe(session.mos)
        worst = min(worst, session.mos)
    m.mos_current.set(worst)
