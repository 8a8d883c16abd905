"""Per-call media counters cheap enough to update on every frame."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from ..audio.pcm import Pcm, frame_energy

TRANSIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
)
"""Upper bounds (seconds) of the frame-transit histograms."""


class FixedHistogram:
    """A histogram cheap enough for every frame: fixed buckets, plain integer counts.

    Exported to Prometheus by the metrics collector; ``counts[i]`` counts observations
    ``<= bounds[i]`` (non-cumulative), the last slot is +Inf.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = TRANSIT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def merge(self, other: FixedHistogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.sum += other.sum

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (``None`` if empty)."""
        total = self.count
        if not total:
            return None
        rank = q * total
        seen = 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += c
            if seen >= rank:
                return bound
        return float("inf")


SILENCE_DBFS = -120.0
"""The level reported for digital silence (a frame of zeros has no finite level)."""


class LevelMeter:
    """The level of a stream of 20 ms frames, read once a second: each frame adds its sum of
    squares (one dot product, under two microseconds) to a running total, and a reader turns the
    change of :attr:`energy` over the change of :attr:`samples` into dBFS
    (:func:`level_dbfs`). The counterpart of W3C ``totalAudioEnergy`` / ``totalSamplesDuration``,
    in int16 units squared and samples."""

    __slots__ = ("energy", "samples")

    def __init__(self) -> None:
        self.energy = 0.0
        self.samples = 0

    def add(self, pcm: Pcm) -> None:
        self.energy += frame_energy(pcm)
        self.samples += pcm.size

    def add_energy(self, energy: float, samples: int) -> None:
        """A frame known by its sum of squares only (G.711's bytes: ``FrameDecoder.energy``)."""
        self.energy += energy
        self.samples += samples

    def add_silence(self, samples: int) -> None:
        """Frames of zeros: counted, nothing to sum."""
        self.samples += samples


def level_dbfs(energy: float, samples: int) -> float | None:
    """RMS level in dBFS of ``samples`` whose squares sum to ``energy`` (a full-scale sine is
    about -3 dBFS, as ``audio.analysis.rms_dbfs``); ``None`` with no samples, and
    :data:`SILENCE_DBFS` at most below full scale."""
    if samples <= 0:
        return None
    mean = energy / samples
    if mean <= 0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10 * math.log10(mean / (32768.0 * 32768.0)))


RECEIVER_DELAY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3)
"""Upper bounds (seconds) of the receiver-delay histogram."""


@dataclass
class ReceiveStats:
    """What one leg's Opus receivers did (bridge/audio/receiver.py), summed over its receivers:
    samples at 16 kHz, and the time each played packet waited in the receiver."""

    concealed_samples: int = 0
    fec_recovered_samples: int = 0
    inserted_samples: int = 0
    removed_samples: int = 0
    emitted_samples: int = 0
    dtx_samples: int = 0
    """Comfort noise while the sender was silent and sent nothing (its DTX)."""
    delay: FixedHistogram = field(default_factory=lambda: FixedHistogram(RECEIVER_DELAY_BUCKETS))

    def merge(self, other: ReceiveStats) -> None:
        self.concealed_samples += other.concealed_samples
        self.fec_recovered_samples += other.fec_recovered_samples
        self.inserted_samples += other.inserted_samples
        self.removed_samples += other.removed_samples
        self.emitted_samples += other.emitted_samples
        self.dtx_samples += other.dtx_samples
        self.delay.merge(other.delay)


@dataclass
class BusStats:
    """Counters of one call's bus (plain ints: updated per frame, read by the collector)."""

    uplink_frames: int = 0
    uplink_dropped_overflow: int = 0
    uplink_discarded_inactive: int = 0
    downlink_frames: int = 0
    downlink_played: int = 0
    bad_frames: int = 0
    uplink_rtp_late: int = 0
    """Browser RTP packets dropped because they came after a newer one (late or duplicate)."""
    uplink_decode_errors: int = 0
    """Browser Opus packets that failed to decode."""
    source_frames_dropped: int = 0
    """Client audio dropped by a queued source (a PCM socket or fork sending too far ahead)."""
    agent_voice_frames_dropped: int = 0
    """A model agent's voice dropped: its audio came faster than real time past its bound
    (``agents/voice.py``: a reply queued ``LIMIT_MS`` ahead, a live stream past its buffer)."""
    agent_frames_dropped: int = 0
    """The caller's frames a model agent dropped: its model's socket too slow to take them."""
    socket_frames_dropped: int = 0
    """The WhatsApp side's frames a PCM socket dropped: its client too slow to read them."""
    microphone_frames_dropped: int = 0
    """A participant's microphone frames the mixer dropped: more than ``INPUT_FRAMES`` waited
    for its tick (``conference.py``: the leg's clock ran ahead, or the mixer missed ticks)."""
    whatsapp_in_frames_dropped: int = 0
    """A clocked WhatsApp side's frames the mixer dropped: more than ``CLOCKED_WAITING``
    waited for its tick (``whatsapp_in.py``)."""
    listener_frames_dropped: int = 0
    """Frames for a listener on the worker clock its sender did not take in time: more than
    ``CLOCKED_FRAMES`` waited (``frames.py`` ``DownlinkSink``: its task missed ticks)."""
    uplink_transit: FixedHistogram = field(default_factory=FixedHistogram)
    """Seconds from a frame entering the bus to its hand-off to the engine leg."""
    downlink_transit: FixedHistogram = field(default_factory=FixedHistogram)
    """Seconds from a frame entering the bus to its hand-off to the browser's encoder."""
    receive: ReceiveStats = field(default_factory=ReceiveStats)
    """The receivers of the legs that feed this bus (the browsers' microphones)."""
    whatsapp_in: LevelMeter = field(default_factory=LevelMeter)
    """What the WhatsApp side says (each frame of ``CallBus.push_downlink``; a forwarded
    call's packets, ``calls/forwarding.py``)."""
    whatsapp_out: LevelMeter = field(default_factory=LevelMeter)
    """What the WhatsApp side is sent (each uplink frame the bus hands its leg or engine; a
    forwarded call's packets)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "uplinkFrames": self.uplink_frames,
            "downlinkFrames": self.downlink_frames,
            "downlinkPlayed": self.downlink_played,
            "uplinkDroppedOverflow": self.uplink_dropped_overflow,
            "uplinkDiscardedInactive": self.uplink_discarded_inactive,
            "badFrames": self.bad_frames,
            "uplinkRtpLate": self.uplink_rtp_late,
            "uplinkDecodeErrors": self.uplink_decode_errors,
            "sourceFramesDropped": self.source_frames_dropped,
            "agentVoiceFramesDropped": self.agent_voice_frames_dropped,
            "agentFramesDropped": self.agent_frames_dropped,
            "socketFramesDropped": self.socket_frames_dropped,
            "microphoneFramesDropped": self.microphone_frames_dropped,
            "whatsappInFramesDropped": self.whatsapp_in_frames_dropped,
            "listenerFramesDropped": self.listener_frames_dropped,
            "uplinkTransitP50Ms": _ms(self.uplink_transit.quantile(0.5)),
            "uplinkTransitP99Ms": _ms(self.uplink_transit.quantile(0.99)),
            "downlinkTransitP50Ms": _ms(self.downlink_transit.quantile(0.5)),
            "downlinkTransitP99Ms": _ms(self.downlink_transit.quantile(0.99)),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
