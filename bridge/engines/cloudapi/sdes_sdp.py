"""The SDES leg's offer and answer (RFC 4566, RFC 4568 ``a=crypto``, RFC 3264 for the streams
refused) and where it listens: its socket bound and the address its SDP gives."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from ...config import IceSettings
from ...rtc.sdes import Crypto
from ...rtc.sdp import audio_sdp
from ...rtc.srtpudp import RtpSocket
from .sdp import OPUS_FMTP, STATIC_PT

if TYPE_CHECKING:
    from .sdes import SdesPeer


def sdp(
    peer: SdesPeer,
    address: str,
    crypto: Crypto,
    media_lines: tuple[str, ...] = (),
    index: int = 0,
    *,
    offer: tuple[str, ...] = (),
) -> str:
    """Our SDP: an offer of the codecs ``offer`` names, preferred first (``sdp.leg_codecs``:
    G.711 on its static payload type, Opus on the leg's), or an answer in the leg's one codec
    (Opus, or the G.711 answered); telephone-event with either, on RTP/SAVP with our key. In an
    answer, every other offered stream is refused (port 0)."""
    payloads = [_payload(peer, codec) for codec in offer or (peer.codec,)]
    payloads.append((peer.dtmf_pt, "telephone-event/8000", "0-15"))
    return audio_sdp(
        address,
        peer.socket.local[1],
        payloads,
        origin=(peer.stream.ssrc, peer.stream.ssrc),
        key=crypto.attribute(),
        rtcp_port=True,
        ssrc=(peer.stream.ssrc, peer.rtcp.cname.decode()),
        streams=media_lines or ("m=audio",),
        index=index,
    )


def _payload(peer: SdesPeer, codec: str) -> tuple[int, str, str]:
    if codec == "opus":
        return peer.audio_pt, "opus/48000/2", OPUS_FMTP  # Meta's in an answer, else 111
    return STATIC_PT[codec], f"{codec}/8000", ""


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


async def open_socket(sock: RtpSocket, ice: IceSettings | None, remote_host: str | None) -> str:
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
