"""``ReceiverStats``: the counters of one receiver (:mod:`bridge.audio.receiver`), named after
W3C ``RTCInboundRtpStreamStats``; what arrived (received, lost, jitter) is read from the
stream's one count of its packets (``audio/reception.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from .reception import RtpReception


@dataclass
class ReceiverStats:
    """Counters of one receiver, named after W3C ``RTCInboundRtpStreamStats`` where it has a
    name (:meth:`as_w3c`); seconds and samples at the output rate.

    ``packets_received``, ``packets_lost`` and ``jitter`` are not counted here: they are the
    stream's ``reception`` (``audio/reception.py``, one count per packet, which our RTCP
    reports read too), from when this receiver began (a connected leg's call, a codec) until
    :meth:`freeze` (the receiver held or stopped)."""

    reception: RtpReception = field(repr=False, compare=False)
    bytes_received: int = 0
    """Payload octets of the audio packets the receiver took (no RTP headers, W3C
    ``bytesReceived``)."""
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
    jitter_buffer_delay: float = 0.0
    """Seconds each emitted sample spent in the buffer, summed over samples."""
    jitter_buffer_target_delay: float = 0.0
    """The delay the receiver aimed for, summed over emitted samples like the above."""
    jitter_buffer_emitted_count: int = 0
    total_samples_received: int = 0
    dtx_samples: int = 0
    """Comfort noise played while the sender sent nothing, being silent (its DTX): neither
    received, lost nor concealed (not a W3C name)."""

    def __post_init__(self) -> None:
        self._since = (self.reception.packets_received, self.reception.packets_lost)
        self._frozen: tuple[int, int, float] | None = None

    @property
    def packets_received(self) -> int:
        """Every packet of the stream (duplicates and RFC 4733 events included)."""
        if self._frozen is not None:
            return self._frozen[0]
        return self.reception.packets_received - self._since[0]

    @property
    def packets_lost(self) -> int:
        """Expected minus received, from the sequence numbers (RFC 3550 A.3): below zero when
        duplicates outnumber the losses (as W3C allows)."""
        if self._frozen is not None:
            return self._frozen[1]
        return self.reception.packets_lost - self._since[1]

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate, seconds (RFC 3550 §6.4.1, A.8)."""
        return self._frozen[2] if self._frozen is not None else self.reception.jitter_s

    def freeze(self) -> None:
        """The receiver is done (held, stopped): what arrived stays as it is now, while the
        stream's reception counts on for the RTCP reports."""
        if self._frozen is None:
            self._frozen = (self.packets_received, self.packets_lost, self.jitter)

    def emitted(self, samples: int, delay: float, target: float) -> None:
        """``samples`` played, the latest packet having waited ``delay`` s (aiming at
        ``target``)."""
        self.jitter_buffer_delay += max(0.0, delay) * samples
        self.jitter_buffer_target_delay += target * samples
        self.jitter_buffer_emitted_count += samples

    def as_w3c(self) -> dict[str, float | int]:
        """camelCase names, as ``getStats()`` reports them in a browser."""
        out: dict[str, float | int] = {
            "packetsReceived": self.packets_received,
            "packetsLost": self.packets_lost,
            "jitter": round(self.jitter, 6),
        }
        for f in fields(self)[1:]:  # after the reception
            head, *rest = f.name.split("_")
            value = getattr(self, f.name)
            out[head + "".join(w.capitalize() for w in rest)] = (
                round(value, 6) if isinstance(value, float) else value
            )
        return out
