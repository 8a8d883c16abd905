"""The media and engine collector: per-frame counters read at scrape time.

Per-frame counters are plain integers on each call's bus and on the engine; the collector
reads them when Prometheus scrapes (live calls plus the totals of ended ones), so the media
path pays no Prometheus cost per frame. It depends on the engines only through
:class:`EngineCounters` (the engines' ``EngineStats`` is one), never on the engines package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from .media import BusStats, FixedHistogram, ReceiveStats


class EngineCounters(Protocol):
    """What the collector reads of the engine's counters (``engines.EngineStats`` is one;
    the metrics depend on this, not on the engines)."""

    @property
    def reconnects(self) -> int: ...
    @property
    def bad_frames(self) -> int: ...
    @property
    def bad_messages(self) -> int: ...
    @property
    def uplink_dropped(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def request_errors(self) -> int: ...
    @property
    def request_seconds(self) -> FixedHistogram: ...
    @property
    def artifact_seconds(self) -> FixedHistogram: ...


@dataclass
class MediaTotals:
    """Media counters summed over calls (the collector's input)."""

    bus: BusStats = field(default_factory=BusStats)
    jitter_underruns: int = 0
    jitter_overflow_drops: int = 0
    jitter_latency_drops: int = 0
    jitter_depth: int = 0
    downlink_inserted_samples: int = 0
    downlink_removed_samples: int = 0
    """Samples the downlink sinks stretched in or out to follow engines' clocks."""
    receive: dict[str, ReceiveStats] = field(
        default_factory=lambda: {"browser": ReceiveStats(), "whatsapp": ReceiveStats()}
    )
    """The Opus receivers' counters by leg: the browsers', and the Cloud API's WhatsApp side."""
    clock_skipped_ticks: int = 0
    """Media ticks the worker's clock passed over after a stall (``media/clock.py``)."""

    def add_bus(self, stats: BusStats) -> None:
        b = self.bus
        b.uplink_frames += stats.uplink_frames
        b.uplink_dropped_overflow += stats.uplink_dropped_overflow
        b.uplink_discarded_inactive += stats.uplink_discarded_inactive
        b.downlink_frames += stats.downlink_frames
        b.downlink_played += stats.downlink_played
        b.bad_frames += stats.bad_frames
        b.uplink_rtp_late += stats.uplink_rtp_late
        b.uplink_decode_errors += stats.uplink_decode_errors
        b.source_frames_dropped += stats.source_frames_dropped
        b.agent_voice_frames_dropped += stats.agent_voice_frames_dropped
        b.agent_frames_dropped += stats.agent_frames_dropped
        b.socket_frames_dropped += stats.socket_frames_dropped
        b.microphone_frames_dropped += stats.microphone_frames_dropped
        b.whatsapp_in_frames_dropped += stats.whatsapp_in_frames_dropped
        b.listener_frames_dropped += stats.listener_frames_dropped
        b.uplink_transit.merge(stats.uplink_transit)
        b.downlink_transit.merge(stats.downlink_transit)
        self.receive["browser"].merge(stats.receive)

    def absorb_downlink(self, sink: Any, *, depth: bool = False) -> None:
        """Add one downlink sink's counters, its jitter buffer's included (``None``: a session
        never answered)."""
        if sink is None:
            return
        self.downlink_inserted_samples += sink.inserted_samples
        self.downlink_removed_samples += sink.removed_samples
        jitter = sink.jitter
        self.jitter_underruns += jitter.stats.underruns
        self.jitter_overflow_drops += jitter.stats.overflow_drops
        self.jitter_latency_drops += jitter.stats.latency_drops
        if depth:
            self.jitter_depth += len(jitter)


def _histogram(
    name: str,
    doc: str,
    labels: dict[str, str],
    hists: Iterable[tuple[dict[str, str], FixedHistogram]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, h in hists:
        buckets = []
        running = 0
        for bound, c in zip((*h.bounds, float("inf")), h.counts, strict=True):
            running += c
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric([values[k] for k in labels], buckets, h.sum)
    return family


def _receiver_metrics(receive: dict[str, ReceiveStats]) -> Iterator[Metric]:
    """What the Opus receivers did, per leg, in seconds of audio (bridge/audio/receiver.py)."""
    rate = 16_000.0
    audio = CounterMetricFamily(
        "bridge_receiver_audio_seconds",
        "audio the Opus receivers played, by how it was made: decoded, rebuilt from in-band "
        "FEC, concealed (a loss no FEC could rebuild), comfort noise in the sender's DTX, or "
        "played/skipped to follow the network's delay",
        labels=["leg", "kind"],
    )
    for leg, r in receive.items():
        decoded = r.emitted_samples - r.concealed_samples - r.fec_recovered_samples - r.dtx_samples
        audio.add_metric([leg, "decoded"], max(0, decoded) / rate)
        audio.add_metric([leg, "fec"], r.fec_recovered_samples / rate)
        audio.add_metric([leg, "concealed"], r.concealed_samples / rate)
        audio.add_metric([leg, "dtx"], r.dtx_samples / rate)
        audio.add_metric([leg, "inserted"], r.inserted_samples / rate)
        audio.add_metric([leg, "removed"], r.removed_samples / rate)
    yield audio
    yield _histogram(
        "bridge_receiver_delay_seconds",
        "time each played packet waited in its leg's receiver (the adaptive jitter buffer)",
        {"leg": ""},
        [({"leg": leg}, r.delay) for leg, r in receive.items()],
    )


class MediaCollector:
    """Reads bus, jitter-buffer and engine counters at scrape time."""

    def __init__(
        self,
        totals: Callable[[], MediaTotals],
        engine: Callable[[], tuple[str, EngineCounters, bool]],
    ) -> None:
        self._totals = totals
        self._engine = engine

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        t = self._totals()
        b = t.bus
        frames = CounterMetricFamily(
            "bridge_bus_frames", "20 ms frames carried by the bus", labels=["direction"]
        )
        frames.add_metric(["uplink"], b.uplink_frames)
        frames.add_metric(["downlink"], b.downlink_frames)
        yield frames
        dropped = CounterMetricFamily(
            "bridge_bus_frames_dropped",
            "frames dropped inside the bridge, by reason",
            labels=["direction", "reason"],
        )
        dropped.add_metric(["uplink", "overflow"], b.uplink_dropped_overflow)
        dropped.add_metric(["uplink", "inactive"], b.uplink_discarded_inactive)
        dropped.add_metric(["uplink", "conversion"], b.bad_frames)
        dropped.add_metric(["uplink", "late_rtp"], b.uplink_rtp_late)
        dropped.add_metric(["uplink", "decode_error"], b.uplink_decode_errors)
        dropped.add_metric(["uplink", "client_overflow"], b.source_frames_dropped)
        dropped.add_metric(["uplink", "agent_voice_overflow"], b.agent_voice_frames_dropped)
        dropped.add_metric(["downlink", "agent_backpressure"], b.agent_frames_dropped)
        dropped.add_metric(["downlink", "socket_backpressure"], b.socket_frames_dropped)
        dropped.add_metric(["uplink", "microphone_overflow"], b.microphone_frames_dropped)
        dropped.add_metric(["downlink", "whatsapp_overflow"], b.whatsapp_in_frames_dropped)
        dropped.add_metric(["downlink", "listener_behind"], b.listener_frames_dropped)
        dropped.add_metric(["downlink", "overflow"], t.jitter_overflow_drops)
        dropped.add_metric(["downlink", "late"], t.jitter_latency_drops)
        name, leg, up = self._engine()
        dropped.add_metric(["uplink", "backpressure"], leg.uplink_dropped)
        dropped.add_metric(["downlink", "conversion"], leg.bad_frames)
        yield dropped
        yield _histogram(
            "bridge_frame_transit_seconds",
            "time a frame spends inside the bridge (bus entry to hand-off)",
            {"direction": ""},
            [
                ({"direction": "uplink"}, b.uplink_transit),
                ({"direction": "downlink"}, b.downlink_transit),
            ],
        )
        yield from _receiver_metrics(t.receive)
        stretched = CounterMetricFamily(
            "bridge_downlink_stretched_seconds",
            "audio the downlink sinks added (inserted) or removed a pitch period at a time to "
            "follow engines' clocks (bridge/audio/stretch.py)",
            labels=["kind"],
        )
        stretched.add_metric(["inserted"], t.downlink_inserted_samples / 16_000)
        stretched.add_metric(["removed"], t.downlink_removed_samples / 16_000)
        yield stretched
        skipped = CounterMetricFamily(
            "bridge_media_clock_skipped_ticks",
            "20 ms media ticks the worker never ran: the event loop stalled longer than the "
            "clock's resync (0.2 s), so every leg on it lost that much audio",
        )
        skipped.add_metric([], t.clock_skipped_ticks)
        yield skipped
        under = CounterMetricFamily(
            "bridge_jitter_buffer_underruns", "downlink jitter-buffer underruns (silence played)"
        )
        under.add_metric([], t.jitter_underruns)
        yield under
        depth = GaugeMetricFamily(
            "bridge_jitter_buffer_depth_frames", "frames queued in all downlink jitter buffers now"
        )
        depth.add_metric([], t.jitter_depth)
        yield depth
        req = CounterMetricFamily(
            "bridge_engine_requests", "REST requests to the engine", labels=["engine"]
        )
        req.add_metric([name], leg.requests)
        yield req
        err = CounterMetricFamily(
            "bridge_engine_request_errors", "engine requests that failed", labels=["engine"]
        )
        err.add_metric([name], leg.request_errors)
        yield err
        yield _histogram(
            "bridge_engine_request_seconds",
            "engine REST request latency",
            {"engine": ""},
            [({"engine": name}, leg.request_seconds)],
        )
        yield _histogram(
            "bridge_engine_file_fetch_seconds",
            "from a provider's webhook announcing a call's recording/transcript to the file",
            {"engine": ""},
            [({"engine": name}, leg.artifact_seconds)],
        )
        rec = CounterMetricFamily(
            "bridge_engine_media_reconnects", "engine media socket reconnects", labels=["engine"]
        )
        rec.add_metric([name], leg.reconnects)
        yield rec
        bad = CounterMetricFamily(
            "bridge_engine_bad_messages",
            "malformed frames or messages from the engine",
            labels=["engine"],
        )
        bad.add_metric([name], leg.bad_messages + leg.bad_frames)
        yield bad
        upg = GaugeMetricFamily(
            "bridge_engine_up", "1 when the engine is reachable", labels=["engine"]
        )
        upg.add_metric([name], 1.0 if up else 0.0)
        yield upg
