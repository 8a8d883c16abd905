"""The SDES leg's pieces that read it but own nothing (:class:`~.sdes.SdesPeer`): its SDP
(RFC 4566 / RFC 4568 ``a=crypto``), its RTP/RTCP quality sample (RFC 3550) and its
``leg_json``; and the local address a peer is reached from."""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from ...config import IceSettings
from ...rtc.leg import Quality, account_concealment
from ...rtc.quality import change
from ...rtc.rfc4733 import EventSender
from ...rtc.rtprecv import payload_bounds
from ...rtc.sdes import Crypto, media_section, session_description
from ...rtc.srtpudp import SrtpSocket
from ...rtc.tracks import OpusBusTrack
from .sdp import OPUS_FMTP

if TYPE_CHECKING:
    from .sdes import SdesPeer

_HEADER = struct.Struct("!BBHII")


def sdp(
    peer: SdesPeer,
    address: str,
    crypto: Crypto,
    media_lines: tuple[str, ...] = (),
    index: int = 0,
) -> str:
    """Our SDP (offer or answer): Opus and telephone-event on RTP/SAVP with our key; in an
    answer, every other offered stream refused (port 0)."""
    payloads = [
        (peer.opus_pt, "opus/48000/2", OPUS_FMTP),
        (peer.dtmf_pt, "telephone-event/8000", "0-15"),
    ]
    audio = media_section(
        address,
        peer.socket.local[1],
        payloads,
        crypto,
        ssrc=peer.stream.ssrc,
        cname=peer.rtcp.cname.decode(),
    )
    lines: list[str] = []
    for i, m in enumerate(media_lines or ("m=audio",)):
        if i == index:
            lines += audio
        else:  # RFC 3264 §6: every offered stream is answered; the others refused
            fields = m.split()
            lines.append(" ".join([fields[0], "0", *fields[2:]]))
    return session_description(address, peer.stream.ssrc, lines)


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


def leg_json(peer: SdesPeer, track: OpusBusTrack | None, events: EventSender) -> dict[str, Any]:
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
        "sendUnderruns": peer.port.source.empty,
        "srtpAuthFailed": sock.auth_failed,
        "junkDropped": sock.junk,
        "rtcpSent": sock.rtcp_sent,
        "rtcpReceived": sock.rtcp_received,
        "rttMs": None if rtt is None else round(rtt * 1000, 1),
        "rtpLate": peer.rx.uplink_rtp_late,
        "decodeErrors": peer.rx.uplink_decode_errors,
        "dtmfPresses": peer.dtmf.presses,
        "dtmfSent": events.presses,
    }


def route_to(host: str, v6: bool) -> str:
    """The local address the kernel would send from to ``host`` (no packet is sent: a UDP
    ``connect`` only picks the route); the host name's address without one."""
    if host:
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((host, 9))
                return str(s.getsockname()[0])
            except OSError:
                pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


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


async def open_socket(sock: SrtpSocket, ice: IceSettings | None, remote_host: str | None) -> str:
    """Bind the leg's socket (on the first ``BRIDGE_ICE_ADDRESSES``, ports from
    ``BRIDGE_RTP_PORTS``); the address our SDP gives (``BRIDGE_PUBLIC_IP``, else the bound
    one, else the one that routes to the far end)."""
    bind = ice.ice_addresses[0] if ice is not None and ice.ice_addresses else ""
    v6 = ":" in (bind or remote_host or "")
    host, _ = await sock.open(bind or ("::" if v6 else "0.0.0.0"), ice.rtp_ports if ice else "")
    if ice is not None and ice.public_ip:
        return ice.public_ip
    if host not in ("0.0.0.0", "::"):
        return host
    return route_to(remote_host or "", v6)
