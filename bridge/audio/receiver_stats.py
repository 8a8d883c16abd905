"""``ReceiverStats``: the counters of one Opus receiver (:mod:`bridge.audio.receiver`), named
after W3C ``RTCInboundRtpStreamStats``; ``RtpArrivals``: the RTP bookkeeping behind them."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class ReceiverStats:
    """Counters of one receiver, named after W3C ``RTCInboundRtpStreamStats`` where it has a
    name (:meth:`as_w3c`); seconds and samples at the output rate."""

    packets_received: int = 0
    bytes_received: int = 0
    """Opus payload octets of the packets received (no RTP headers, W3C ``bytesReceived``)."""
    packets_lost: int = 0
    """Expected minus received, from the sequence numbers (RFC 3550 A.3)."""
    packets_discarded: int = 0
    """Arrived too late to be played, or duplicates."""
    packets_reordered: int = 0
    """Arrived after a later packet and were still played."""
    fec_packets_received: int = 0
    """Frames rebuilt from the next packet's in-band FEC data."""
    fec_recovered_samples: int = 0
    red_recovered_packets: int = 0
    """Lost packets replaced by the redundant copy a later RED packet carried (RFC 2198)."""
    concealed_samples: int = 0
    silent_concealed_samples: int = 0
    concealment_events: int = 0
    inserted_samples_for_deceleration: int = 0
    removed_samples_for_acceleration: int = 0
    decode_errors: int = 0
    jitter: float = 0.0
    """Interarrival jitter estimate, seconds (RFC 3550 §6.4.1)."""
    jitter_buffer_delay: float = 0.0
    """Seconds each emitted sample spent in the buffer, summed over samples."""
    jitter_buffer_target_delay: float = 0.0
    """The delay the receiver aimed for, summed over emitted samples like the above."""
    jitter_buffer_emitted_count: int = 0
    total_samples_received: int = 0
    dtx_samples: int = 0
    """Comfort noise played while the sender sent nothing, being silent (its DTX): neither
    received, lost nor concealed (not a W3C name)."""

    def emitted(self, samples: int, delay: float, target: float) -> None:
        """``samples`` played, the latest packet having waited ``delay`` s (aiming at
        ``target``)."""
        self.jitter_buffer_delay += max(0.0, delay) * samples
        self.jitter_buffer_target_delay += target * samples
        self.jitter_buffer_emitted_count += samples

    def as_w3c(self) -> dict[str, float | int]:
        """camelCase names, as ``getStats()`` reports them in a browser."""
        out: dict[str, float | int] = {}
        for f in fields(self):
            head, *rest = f.name.split("_")
            value = getattr(self, f.name)
            out[head + "".join(w.capitalize() for w in rest)] = (
                round(value, 6) if isinstance(value, float) else value
            )
        return out


def _unwrap(value: int, reference: int, bits: int) -> int:
    """``value`` (``bits`` wide, wrapping) extended to the integer closest to ``reference``."""
    span = 1 << bits
    delta = (value - reference) % span
    if delta >= span // 2:
        delta -= span
    return reference + delta


class RtpArrivals:
    """One RTP stream's sequence numbers and timestamps extended past their wrap, and what
    they count in ``stats``: packets received, lost and reordered (RFC 3550 A.3), interarrival
    jitter (§6.4.1)."""

    def __init__(self, stats: ReceiverStats, clock: int) -> None:
        self.stats = stats
        self.clock = clock
        self._ts_ref: int | None = None
        self._seq_ref: int | None = None
        self._seq_base = 0
        self._seq_max = 0
        self._last_transit: float | None = None
        self.last_arrival = 0.0
        """When the latest packet arrived (the receiver's clock)."""

    @property
    def started(self) -> bool:
        """A first packet has arrived."""
        return self._seq_ref is not None

    def arrive(self, seq: int, timestamp: int, arrival: float) -> tuple[int, int]:
        """A packet arrived: its extended sequence number and timestamp."""
        stats = self.stats
        seq_ref, ts_ref = self._seq_ref, self._ts_ref
        if seq_ref is None or ts_ref is None:
            seq_ref = self._seq_base = self._seq_max = seq
            ts_ref = self._ts_ref = timestamp
        # ``_unwrap`` inlined (every packet of every leg comes here): the closest extension.
        delta = (seq - seq_ref) & 0xFFFF
        ext_seq = self._seq_ref = seq_ref + (delta - 0x10000 if delta >= 0x8000 else delta)
        delta = (timestamp - ts_ref) & 0xFFFFFFFF
        ts = ts_ref + (delta - 0x100000000 if delta >= 0x80000000 else delta)
        if ext_seq > self._seq_max:
            self._seq_max = ext_seq
            self._ts_ref = ts
        elif ext_seq < self._seq_max:
            stats.packets_reordered += 1  # undone by discard() if it turns out unusable
        # RFC 3550 §6.4.1: J += (|D(i-1, i)| - J) / 16, D from the relative transit times.
        transit = arrival - ts / self.clock
        last = self._last_transit
        if last is not None:
            d = abs(transit - last)
            if d < 1.0:  # not across a restart
                stats.jitter += (d - stats.jitter) / 16
        self._last_transit, self.last_arrival = transit, arrival
        received = stats.packets_received = stats.packets_received + 1
        lost = self._seq_max - self._seq_base + 1 - received
        stats.packets_lost = lost if lost > 0 else 0
        return ext_seq, ts

    def extend_seq(self, seq: int) -> int | None:
        """A sequence number (of a packet that is not audio) extended like the packets'; None
        before any."""
        return None if self._seq_ref is None else _unwrap(seq, self._seq_ref, 16)

    def extend(self, timestamp: int) -> int | None:
        """A timestamp (of a redundant copy) extended like the packets'; None before any."""
        return None if self._ts_ref is None else _unwrap(timestamp, self._ts_ref, 32)

    def discard(self, ext_seq: int) -> None:
        """The packet arrived but is not played (late, a duplicate, empty)."""
        self.stats.packets_discarded += 1
        if ext_seq < self._seq_max:
            self.stats.packets_reordered -= 1
