"""The route a frame takes through one Cloud API call, hop by hop: the one list of it.

Each hop is where the frame is handed on (``module:Owner.method``), when (a phase of the
worker clock, ``media/clock.py`` ``Phase``, or the UDP callback a packet is read in) and what
may wait there (its bound). docs/architecture.md's *The route, hop by hop* is drawn from
:data:`ROUTE` (``tests/unit/test_docs.py`` keeps them equal, and checks each hop names a
method that exists). Both directions run within one tick of the worker clock: no task and no
queue between the legs. A forwarded packet (pass-through, ``rtc/passthrough.py``) goes from
the datagram's callback to the other leg's wire in it, in one function past the pass-through
(``ForwardingTrack.forward``).
"""

from __future__ import annotations

from typing import NamedTuple


class Hop(NamedTuple):
    where: str
    """``module:Owner.method`` under ``bridge/``."""
    when: str
    """The clock phase, or the UDP callback."""
    waits: str
    """What may wait there (its bound), or ``-``."""


_INPUT = "INPUT (a wake-up while datagrams are few)"

ROUTE: dict[str, tuple[Hop, ...]] = {
    "browser → Meta": (
        Hop("rtc.udp_poll:UdpPoller.read", _INPUT, "one tick's datagrams, in the socket"),
        Hop("rtc.dtls_srtp:DtlsSrtp.datagram", "UDP callback", "-"),
        Hop("rtc.rtp_session:RtpSession.receive_rtp", "UDP callback", "-"),
        Hop("rtc.uplink:Playout.packet", "UDP callback", "the receiver's reorder buffer"),
        Hop("rtc.uplink:Playout._tick", "RECEIVE", "-"),
        Hop("media.conference:CallPort.accept", "RECEIVE", "-"),
        Hop(
            "media.conference:Conference._input",
            "RECEIVE",
            "4 frames while mixing (oldest dropped: `microphoneFramesDropped`)",
        ),
        Hop("media.bus:CallBus.push_uplink", "RECEIVE (MIX while mixing)", "-"),
        Hop("media.conference:CallPort.take", "SEND", "-"),
        Hop("media.bus:CallBus.take_uplink", "SEND", "3 frames (a late sender)"),
        Hop("rtc.tracks:OpusBusTrack.packets", "SEND", "-"),
        Hop("rtc.rtpsend:LeanSender.send_encoded", "SEND", "-"),
        Hop("rtc.dtls_srtp:DtlsSrtp.send_rtp", "SEND", "-"),
    ),
    "Meta → browser": (
        Hop("rtc.udp_poll:UdpPoller.read", _INPUT, "one tick's datagrams, in the socket"),
        Hop("rtc.dtls_srtp:DtlsSrtp.datagram", "UDP callback", "-"),
        Hop("rtc.rtp_session:RtpSession.receive_rtp", "UDP callback", "-"),
        Hop("rtc.uplink:Playout.packet", "UDP callback", "the receiver's reorder buffer"),
        Hop("rtc.uplink:Playout._tick", "RECEIVE", "-"),
        Hop("engines.channels:LegPort.received", "RECEIVE", "-"),
        Hop("media.conference:CallPort.accept", "RECEIVE", "-"),
        Hop("media.bus:CallBus.push_downlink", "RECEIVE", "-"),
        Hop(
            "media.conference:Conference.from_whatsapp",
            "RECEIVE",
            "4 frames while mixing (oldest dropped: `whatsappInFramesDropped`)",
        ),
        Hop("media.conference:CallPort.take", "SEND", "-"),
        Hop(
            "media.frames:DownlinkSink.take",
            "SEND",
            "3 frames (a late sender; oldest dropped: `listenerFramesDropped`)",
        ),
        Hop("rtc.tracks:OpusBusTrack.packets", "SEND", "-"),
        Hop("rtc.rtpsend:LeanSender.send_encoded", "SEND", "-"),
        Hop("rtc.dtls_srtp:DtlsSrtp.send_rtp", "SEND", "-"),
    ),
    "Meta → browser, forwarded": (
        Hop("rtc.udp_poll:UdpPoller.read", _INPUT, "one tick's datagrams, in the socket"),
        Hop("rtc.dtls_srtp:DtlsSrtp.datagram", "UDP callback", "-"),
        Hop("rtc.rtp_session:RtpSession.receive_rtp", "UDP callback", "-"),
        Hop("rtc.uplink:Playout.packet", "UDP callback", "-"),
        Hop("rtc.passthrough:PassThrough.offer", "UDP callback", "-"),
        Hop("rtc.forwarding_track:ForwardingTrack.forward", "UDP callback", "-"),
        Hop("rtc.rtpsend:RtpStream.packetise", "UDP callback", "-"),
        Hop("rtc.dtls_srtp:DtlsSrtp.send_rtp", "UDP callback", "-"),
    ),
}


def table() -> str:
    """:data:`ROUTE` as the Markdown table docs/architecture.md shows."""
    lines = ["| direction | hop | when | what may wait |", "|---|---|---|---|"]
    for direction, hops in ROUTE.items():
        for i, hop in enumerate(hops):
            module, name = hop.where.split(":")
            lines.append(
                f"| {direction if i == 0 else ''} | `{module.replace('.', '/')}.py` "
                f"`{name}` | {hop.when} | {hop.waits} |"
            )
    return "\n".join(lines)
