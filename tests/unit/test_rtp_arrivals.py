"""``RtpArrivals`` (bridge/audio/receiver_stats.py), every leg's per-packet counting: its
unwrapping of 16-bit numbers and 32-bit timestamps is inlined for speed, and must count what
the plain ``_unwrap`` arithmetic counts: across both wraps, with loss, reordering, duplicates
and a restarted sender."""

from __future__ import annotations

import numpy as np

from bridge.audio.receiver_stats import ReceiverStats, RtpArrivals, _unwrap


class Reference:
    """The counting as written before it was inlined (``_unwrap`` per number)."""

    def __init__(self, stats: ReceiverStats, clock: int) -> None:
        self.stats, self.clock = stats, clock
        self.seq_ref: int | None = None
        self.ts_ref = self.seq_base = self.seq_max = 0
        self.last_transit: float | None = None

    def arrive(self, seq: int, timestamp: int, arrival: float) -> tuple[int, int]:
        stats = self.stats
        if self.seq_ref is None:
            self.seq_ref = self.seq_base = self.seq_max = seq
            self.ts_ref = timestamp
        ext_seq = self.seq_ref = _unwrap(seq, self.seq_ref, 16)
        ts = _unwrap(timestamp, self.ts_ref, 32)
        if ext_seq > self.seq_max:
            self.seq_max, self.ts_ref = ext_seq, ts
        elif ext_seq < self.seq_max:
            stats.packets_reordered += 1
        transit = arrival - ts / self.clock
        if self.last_transit is not None:
            d = abs(transit - self.last_transit)
            if d < 1.0:
                stats.jitter += (d - stats.jitter) / 16
        self.last_transit = transit
        stats.packets_received += 1
        stats.packets_lost = max(0, self.seq_max - self.seq_base + 1 - stats.packets_received)
        return ext_seq, ts


def test_the_inlined_counting_counts_as_unwrap_does() -> None:
    rng = np.random.default_rng(3)
    ours, theirs = ReceiverStats(), ReceiverStats()
    arrivals, reference = RtpArrivals(ours, 8000), Reference(theirs, 8000)
    seq, ts, at = 0xFFFF - 40, 0xFFFFFFFF - 30 * 160, 10.0
    for i in range(3000):
        step = int(rng.choice([1, 1, 1, 1, 2, 3, 0, -1, -2]))  # on, lost, duplicate, reordered
        if i == 1500:
            step = 20_000  # the sender restarted: a jump in both
        seq, ts = (seq + step) & 0xFFFF, (ts + 160 * step) & 0xFFFFFFFF
        at += 0.02 + float(rng.uniform(0, 0.01))
        assert arrivals.arrive(seq, ts, at) == reference.arrive(seq, ts, at)
        assert ours == theirs
    assert ours.packets_lost > 0 and ours.packets_reordered > 0 and ours.jitter > 0
