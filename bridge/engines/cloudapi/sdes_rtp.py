"""The SDES leg as a call's report shows it (``leg_json``): a WhatsApp leg's numbers
(``shell.py``) and its socket's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .shell import WhatsAppLeg

if TYPE_CHECKING:
    from .sdes import SdesPeer


def leg_json(peer: SdesPeer) -> dict[str, Any]:
    """The leg as a call's report shows it (``media: sdes``)."""
    sock = peer.socket
    first = None
    if peer.first_sent_at is not None and peer.started_at is not None:
        first = round((peer.first_sent_at - peer.started_at) * 1000, 1)
    rtt = peer.rtcp.far.rtt_s
    return {
        "media": "sdes",
        **WhatsAppLeg.leg_json(peer),
        "firstPacketMs": first,
        "local": f"{sock.local[0]}:{sock.local[1]}",
        "remote": None if sock.rtp_to is None else f"{sock.rtp_to[0]}:{sock.rtp_to[1]}",
        "latched": sock.latched,
        "srtpAuthFailed": sock.auth_failed,
        "junkDropped": sock.junk + peer.session.malformed,
        "rtcpSent": sock.rtcp_sent,
        "rtcpReceived": sock.rtcp_received,
        "rttMs": None if rtt is None else round(rtt * 1000, 1),
    }
