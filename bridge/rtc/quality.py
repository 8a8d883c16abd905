"""A leg's RTP/RTCP quality: one :class:`Quality` sample (the change since the previous one)
of its RTP session's counters, with the audio the receiver had to conceal
(what the MOS estimate and the quality bands count)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .uplink import Playout


@dataclass
class Quality:
    """One sample of a leg's RTP/RTCP statistics (deltas since the previous sample)."""

    uplink_packets: int = 0
    uplink_lost: int = 0
    uplink_jitter_s: float = 0.0
    downlink_packets: int = 0
    downlink_lost: int = 0
    downlink_jitter_s: float | None = None
    rtt_s: float | None = None
    loss_fraction: float = 0.0
    """What the MOS estimate counts as lost: the larger of the audio our receiver had to
    conceal and the loss the far end reports of what we send."""
    concealed_fraction: float = 0.0

    @property
    def uplink_loss(self) -> float:
        """The fraction of what the far end sent that the network lost on the way here."""
        received = self.uplink_packets + self.uplink_lost
        return self.uplink_lost / received if received else 0.0

    @property
    def far_end_loss(self) -> float:
        """The fraction of what we sent that the far end's receiver reports say was lost."""
        sent = self.downlink_packets + self.downlink_lost
        return self.downlink_lost / sent if sent else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "uplinkPacketsReceived": self.uplink_packets,
            "uplinkPacketsLost": self.uplink_lost,
            "uplinkJitterMs": round(self.uplink_jitter_s * 1000, 2),
            "downlinkPacketsReceived": self.downlink_packets,
            "downlinkPacketsLost": self.downlink_lost,
            "downlinkJitterMs": None
            if self.downlink_jitter_s is None
            else round(self.downlink_jitter_s * 1000, 2),
            "rttMs": None if self.rtt_s is None else round(self.rtt_s * 1000, 2),
            "concealedFraction": round(self.concealed_fraction, 4),
        }


def sample(now: Quality, prev: Quality, playout: Playout | None) -> Quality:
    """The change of a leg's cumulative counters (``rtc/rtp_session.py`` ``quality()``) from
    ``prev`` to ``now`` (a counter that went back, a restarted stream, counts as no change;
    jitter and round-trip time are as of ``now``): ``uplink`` is what the bridge receives on
    the leg, ``downlink`` what it sends (as the far end's receiver reports tell it). Its loss
    fraction is what the listener misses (with the leg's ``playout``), or without one the
    larger loss of either direction."""
    delta = Quality(
        uplink_packets=max(0, now.uplink_packets - prev.uplink_packets),
        uplink_lost=max(0, now.uplink_lost - prev.uplink_lost),
        uplink_jitter_s=now.uplink_jitter_s,
        downlink_packets=max(0, now.downlink_packets - prev.downlink_packets),
        downlink_lost=max(0, now.downlink_lost - prev.downlink_lost),
        downlink_jitter_s=now.downlink_jitter_s,
        rtt_s=now.rtt_s,
    )
    delta.loss_fraction = max(delta.uplink_loss, delta.far_end_loss)
    if playout is None:
        return delta
    # What the listener misses, not what the network lost: a loss the receiver rebuilt from
    # FEC is heard; a concealed one (or a packet too late to play) is not.
    concealed = playout.concealed_since_last()
    if concealed is None:
        # Nothing was played here: the packets went on untouched (an idle leg,
        # ``rtc/uplink.py``), so the listener's own receiver meets every loss of this leg.
        concealed = delta.uplink_loss
    delta.concealed_fraction = concealed
    delta.loss_fraction = max(concealed, delta.far_end_loss)
    return delta
