"""The SDES leg's packets and counters: Meta's decrypted RTP dispatched (Opus to the playout,
RFC 4733 events to the detector), the stream RFC 4733 events are sent on, the RTP/RTCP quality
sample (RFC 3550) and ``leg_json``."""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from ...rtc.leg import Quality, account_concealment
from ...rtc.quality import change
from ...rtc.rfc4733 import EventSender
from ...rtc.rtprecv import payload_bounds
from ...rtc.tracks import OpusBusTrack

if TYPE_CHECKING:
    from .sdes import SdesPeer

_HEADER = struct.Struct("!BBHII")


def receive_rtp(peer: SdesPeer, plain: bytes) -> None:
    """One RTP packet from Meta, decrypted: Opus to the playout, telephone-event to the
    DTMF detector, anything else counted."""
    bounds = payload_bounds(plain)
    if bounds is None:
        peer.socket.junk += 1
        return
    _, second, seq, timestamp, ssrc = _HEADER.unpack_from(plain)
    pt = second & 0x7F
    payload = plain[bounds[0] : bounds[1]]
    if peer.connected_at is None:
        peer.connected_at = time.monotonic()
        if peer.state == "connecting":
            peer.state = "connected"
    if pt == peer.opus_pt:
        peer.rtcp.received(ssrc, seq, timestamp)
        peer.playout.packet(seq, timestamp, payload)
    elif pt == peer.dtmf_pt:
        peer.rtcp.received(ssrc, seq, timestamp, audio=False)
        peer.dtmf.feed(timestamp, payload)
    else:
        peer.unknown_payloads += 1


class StreamSender:
    """What :class:`~bridge.rtc.rfc4733.EventSender` writes through: our stream and its send."""

    def __init__(self, peer: SdesPeer) -> None:
        self.stream = peer.stream
        self.send = peer.send_packet


def sample(peer: SdesPeer) -> Quality:
    """The change of the leg's RTP/RTCP counters since its last sample."""
    r, far = peer.rtcp, peer.rtcp.far
    sent = (peer.stream.audio_packets - far.packets_lost) if r.far_reports else 0
    now = Quality(
        uplink_packets=r.packets_received,
        uplink_lost=r.packets_lost,
        uplink_jitter_s=r.jitter_s,
        downlink_packets=max(0, sent),
        downlink_lost=far.packets_lost,
        downlink_jitter_s=far.jitter_s if r.far_reports else None,
        rtt_s=far.rtt_s,
    )
    delta = change(now, peer.totals)
    peer.totals = now
    account_concealment(delta, peer.playout)
    peer.last = delta
    return delta


def leg_json(
    peer: SdesPeer, track: OpusBusTrack | None, events: EventSender | None
) -> dict[str, Any]:
    """The leg as a call's report shows it (``media: sdes``)."""
    sock, last = peer.socket, peer.last
    first = None
    if peer.first_sent_at is not None and peer.started_at is not None:
        first = round((peer.first_sent_at - peer.started_at) * 1000, 1)
    rtt = peer.rtcp.far.rtt_s
    return {
        "media": "sdes",
        "state": peer.state,
        "totals": peer.totals.as_json(),
        "lastSample": last.as_json() if last else None,
        "lossFraction": last.loss_fraction if last else None,
        "mos": None if peer.mos is None else round(peer.mos, 2),
        "receiver": peer.playout.stats.as_w3c(),
        "failure": peer.failure,
        "connectMs": None
        if peer.connected_at is None
        else round((peer.connected_at - peer.created_at) * 1000, 1),
        "firstPacketMs": first,
        "local": f"{sock.local[0]}:{sock.local[1]}",
        "remote": None if sock.rtp_to is None else f"{sock.rtp_to[0]}:{sock.rtp_to[1]}",
        "latched": sock.latched,
        "framesReceived": peer.port.frames,
        "framesSent": track.frames_sent if track is not None else 0,
        "silentFramesSent": track.silent_frames if track is not None else 0,
        "framesForwarded": track.forwarded_frames if track is not None else 0,
        "packetsNotDecoded": peer.playout.not_decoded,
        "sendUnderruns": peer.port.source.empty,
        "srtpAuthFailed": sock.auth_failed,
        "junkDropped": sock.junk,
        "rtcpSent": sock.rtcp_sent,
        "rtcpReceived": sock.rtcp_received,
        "rttMs": None if rtt is None else round(rtt * 1000, 1),
        "rtpLate": peer.rx.uplink_rtp_late,
        "decodeErrors": peer.rx.uplink_decode_errors,
        "dtmfPresses": peer.dtmf.presses,
        "dtmfSent": events.presses if events is not None else 0,
    }
