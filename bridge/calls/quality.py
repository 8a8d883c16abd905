"""Media quality of live calls: RTP/RTCP samples into the metrics, and the totals the
Prometheus collector reads at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ..logs import FailureKinds
from ..media.clock import worker_clock
from ..metrics import MediaTotals, Metrics, estimate_mos
from ..rtc.quality import Quality
from .model import Call, Direction
from .runtime import CallRuntime

log = logging.getLogger(__name__)


def count_active(metrics: Metrics, live: Iterable[Call]) -> None:
    """Set ``bridge_calls_active`` by direction from the live calls."""
    calls = list(live)
    for direction in Direction:
        count = sum(1 for c in calls if c.direction is direction)
        metrics.calls_active.labels(str(direction)).set(count)


def count_started(metrics: Metrics, call: Call) -> None:
    """A call created: by direction, and by number and tenant."""
    metrics.calls_started.labels(str(call.direction)).inc()
    metrics.number_calls_started.labels(call.number_id, call.tenant_id, str(call.direction)).inc()


def count_ended(metrics: Metrics, call: Call, reason: str) -> None:
    """A call ended: by direction and reason, and by number and tenant; a billed call's
    pulses by number, tenant and country."""
    metrics.calls_ended.labels(str(call.direction), reason).inc()
    metrics.number_calls_ended.labels(call.number_id, call.tenant_id, reason).inc()
    pulses = call.billable_pulses
    if pulses is not None:  # a billed call (even at 0 pulses: the series exists)
        country = call.destination_country or ""
        metrics.number_pulses.labels(call.number_id, call.tenant_id, country).inc(pulses)


def live_sessions(runtimes: Iterable[CallRuntime]) -> int:
    """Browser sessions not closed or failed, over every live call (``bridge_sessions_active``)."""
    return sum(
        1
        for r in runtimes
        for s in r.participants.sessions.values()
        if s.state not in ("closed", "failed")
    )


def media_totals(metrics: Metrics, runtimes: Iterable[CallRuntime]) -> MediaTotals:
    """Bus and jitter-buffer counters of every call, ended ones included."""
    ended = metrics.ended_totals
    out = MediaTotals(
        jitter_underruns=ended.jitter_underruns,
        jitter_overflow_drops=ended.jitter_overflow_drops,
        jitter_latency_drops=ended.jitter_latency_drops,
        downlink_inserted_samples=ended.downlink_inserted_samples,
        downlink_removed_samples=ended.downlink_removed_samples,
        clock_skipped_ticks=worker_clock().skipped,
    )
    out.add_bus(ended.bus)
    for leg, stats in ended.receive.items():
        out.receive[leg].merge(stats)
    for runtime in runtimes:
        out.add_bus(runtime.bus.stats)
        if runtime.media.webrtc_leg is not None:
            out.receive["whatsapp"].merge(runtime.media.webrtc_leg.receive_stats)
        for session in runtime.participants.sessions.values():
            out.absorb_downlink(session.downlink_sink, depth=True)
    return out


def _observe(metrics: Metrics, leg: str, q: Quality) -> float:
    """Record one sample of one leg; returns its MOS estimate."""
    m = metrics
    m.leg_packets.labels(leg, "received").inc(q.uplink_packets)
    m.leg_lost.labels(leg, "received").inc(q.uplink_lost)
    m.leg_jitter.labels(leg, "received").observe(q.uplink_jitter_s)
    m.leg_packets.labels(leg, "sent").inc(q.downlink_packets)
    m.leg_lost.labels(leg, "sent").inc(q.downlink_lost)
    if q.downlink_jitter_s is not None:
        m.leg_jitter.labels(leg, "sent").observe(q.downlink_jitter_s)
    if q.rtt_s is not None:
        m.leg_rtt.labels(leg).observe(q.rtt_s)
    jitter = max(q.uplink_jitter_s, q.downlink_jitter_s or 0.0)
    mos = estimate_mos(q.loss_fraction, jitter, q.rtt_s)
    m.leg_mos.labels(leg).observe(mos)
    return mos


async def sample_quality_forever(
    metrics: Metrics,
    runtimes: Callable[[], Iterable[CallRuntime]],
    interval: float,
    until_calls: Callable[[], Awaitable[object]],
) -> None:
    """Every ``interval`` s while the worker has calls (parked on ``until_calls`` while it
    has none), sample each connected session's RTP/RTCP statistics, and the WhatsApp side's
    own WebRTC leg where the engine has one (cloudapi)."""
    bugs = FailureKinds(log)  # a failure that recurs every pass: said once
    while True:
        await until_calls()
        await asyncio.sleep(interval)
        # One pass per call of a function: nothing of a pass (a session of a call that ends
        # meanwhile, with its codec threads) stays referenced while the loop sleeps.
        await sample_quality_once(metrics, runtimes, bugs)


async def sample_quality_once(
    m: Metrics, runtimes: Callable[[], Iterable[CallRuntime]], bugs: FailureKinds
) -> None:
    worst = 5.0
    for runtime in list(runtimes()):
        leg = runtime.media.webrtc_leg
        if leg is not None:
            try:
                lq = await leg.sample_quality()
            except Exception as exc:
                bugs.failed(exc, "sampling the WhatsApp leg of call %s", runtime.call_id)
                lq = None
            if runtime.closed:
                continue  # the call ended meanwhile: nothing more to say of it
            if lq is not None:
                leg.mos = _observe(m, "whatsapp", lq)
                worst = min(worst, leg.mos)
                runtime.bands.report("whatsapp", leg.mos, lq)
        for session in list(runtime.participants.sessions.values()):
            if session.state != "connected":
                continue
            try:
                q = await session.sample_quality()
            except Exception as exc:
                bugs.failed(exc, "sampling WebRTC stats of call %s", runtime.call_id)
                continue
            if runtime.closed:
                break  # the call ended meanwhile: nothing more to say of it
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
            session.mos = _observe(m, "browser", q)
            m.mos.observe(session.mos)
            runtime.bands.report("browser", session.mos, q, participantID=session.participant_id)
            worst = min(worst, session.mos)
    m.mos_current.set(worst)
