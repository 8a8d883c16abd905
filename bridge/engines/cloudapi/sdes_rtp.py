"""The SDES leg as a call's report shows it (``leg_json``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...rtc.tracks import OpusBusTrack

if TYPE_CHECKING:
    from .sdes import SdesPeer


def leg_json(peer: SdesPeer, track: OpusBusTrack | None) -> dict[str, Any]:
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
        "junkDropped": sock.junk + peer.session.malformed,
        "rtcpSent": sock.rtcp_sent,
        "rtcpReceived": sock.rtcp_received,
        "rttMs": None if rtt is None else round(rtt * 1000, 1),
        "rtpLate": peer.rx.uplink_rtp_late,
        "decodeErrors": peer.rx.uplink_decode_errors,
        "dtmfPresses": peer.dtmf.presses,
        "dtmfSent": peer.keys_out.presses,
    }
