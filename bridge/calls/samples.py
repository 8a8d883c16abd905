"""One leg's second in the call timeline: the leg's cumulative counters (its receiver, the
octets sent, the level meters of what it sent and was sent) read once a second and turned
into a row of :data:`~.timeline.COLUMNS` from their change since the previous read."""

from __future__ import annotations

from dataclasses import dataclass

from ..audio.receiver import ReceiverStats
from ..media import LevelMeter, level_dbfs
from ..metrics import estimate_mos
from .timeline import MISSING

OUTPUT_RATE = 16
"""Receiver samples a millisecond (its output is 16 kHz)."""


@dataclass
class LegSources:
    """Where one leg's counters are, this second."""

    receiver: ReceiverStats | None
    """Its Opus receiver (``None``: an engine that hands the bridge PCM)."""
    rtt: float | None
    frames: int = 0
    """Frames received, cumulative, where there is no receiver (the engine's PCM)."""
    heard: LevelMeter | None = None
    """What the leg sent the bridge (a microphone; the WhatsApp side's voice)."""
    sent: LevelMeter | None = None
    """What the bridge sent the leg."""
    octets_sent: int | None = None
    """Payload octets the bridge sent it (``None``: not counted here)."""
    loss_reported: float | None = None
    """The share of the bridge's packets its receiver reports lost (RTCP, latest sample)."""


@dataclass
class LegCounters:
    """The previous read of one leg's cumulative counters."""

    received: int = 0
    lost: int = 0
    recovered: int = 0
    concealed: int = 0
    stretched: int = 0
    delay: float = 0.0
    emitted: int = 0
    dtx: int = 0
    octets_in: int = 0
    octets_out: int = 0
    energy_in: float = 0.0
    samples_in: int = 0
    energy_out: float = 0.0
    samples_out: int = 0
    source: tuple[int, ...] = ()
    """Which counters were read (a participant who joins again has new ones, from zero)."""
    read_at: float | None = None
    """When the previous read was (``time.monotonic()``)."""

    def span(self, now: float, nominal: float) -> float:
        """Seconds a read at ``now`` covers: since the previous read (``nominal`` for the
        first). A row's rates are over that span: a sampler that a stall of the process made
        late read more than a second's counts, which a nominal second reported as more (81
        kbit/s sent for 72 after 1.5 s of stalls)."""
        last, self.read_at = self.read_at, now
        return nominal if last is None else max(now - last, nominal / 10)

    def row(self, src: LegSources, seconds: float) -> tuple[list[float], int, float | None]:
        """The row for the ``seconds`` since the previous read, the packets (or frames)
        received in them (and those a sender in DTX did not send) and the level of what the
        leg sent (dBFS, ``None`` without frames)."""
        source = (id(src.receiver), id(src.heard), id(src.sent))
        if source != self.source:
            self.__init__(source=source, read_at=self.read_at)  # type: ignore[misc]
        s = src.receiver
        if s is None:
            received, self.received = src.frames - self.received, src.frames
            values = [float(received), 0.0, 0.0, 0.0, 0.0, MISSING, MISSING, MISSING, MISSING]
            kbps_in = MISSING
        else:
            received, values = self._receiver(s, src.rtt, src.loss_reported or 0.0)
            kbps_in = (s.bytes_received - self.octets_in) * 8 / 1000 / seconds
            self.octets_in = s.bytes_received
        kbps_out = MISSING
        if src.octets_sent is not None:
            kbps_out = max(0, src.octets_sent - self.octets_out) * 8 / 1000 / seconds
            self.octets_out = src.octets_sent
        level_in = level_out = None
        if src.heard is not None:
            m = src.heard
            level_in = level_dbfs(m.energy - self.energy_in, m.samples - self.samples_in)
            self.energy_in, self.samples_in = m.energy, m.samples
        if src.sent is not None:
            m = src.sent
            level_out = level_dbfs(m.energy - self.energy_out, m.samples - self.samples_out)
            self.energy_out, self.samples_out = m.energy, m.samples
        values += [
            kbps_in,
            kbps_out,
            MISSING if level_in is None else level_in,
            MISSING if level_out is None else level_out,
            MISSING if src.loss_reported is None else src.loss_reported * 100,
        ]
        return values, received, level_in

    def _receiver(
        self, s: ReceiverStats, rtt: float | None, loss_out: float
    ) -> tuple[int, list[float]]:
        recovered = s.fec_packets_received + s.red_recovered_packets
        stretched = s.inserted_samples_for_deceleration + s.removed_samples_for_acceleration
        received, lost = s.packets_received - self.received, max(0, s.packets_lost - self.lost)
        concealed_ms = (s.concealed_samples - self.concealed) / OUTPUT_RATE
        emitted = s.jitter_buffer_emitted_count - self.emitted
        delay = (s.jitter_buffer_delay - self.delay) / emitted * 1000 if emitted else MISSING
        # Both ways, as the quality bands count it (rtc/quality.py): what the bridge lost or
        # concealed of the leg, and what the leg reports lost of the bridge.
        loss = max(
            lost / (received + lost) if received + lost else 0.0, concealed_ms / 1000, loss_out
        )
        mos = estimate_mos(min(loss, 1.0), s.jitter, rtt) if received else MISSING
        values = [
            float(received),
            float(lost),
            float(recovered - self.recovered),
            concealed_ms,
            (stretched - self.stretched) / OUTPUT_RATE,
            s.jitter * 1000,
            delay,
            MISSING if rtt is None else rtt * 1000,
            mos,
        ]
        self.received, self.lost, self.recovered = s.packets_received, s.packets_lost, recovered
        self.concealed, self.stretched = s.concealed_samples, stretched
        self.delay, self.emitted = s.jitter_buffer_delay, s.jitter_buffer_emitted_count
        # A sender in DTX (silent, sending nothing) still accounts for its frames: the
        # watchdog then hears its silence as silence, not as packets that stopped.
        dtx_frames, self.dtx = (s.dtx_samples - self.dtx) // (20 * OUTPUT_RATE), s.dtx_samples
        return received + dtx_frames, values
