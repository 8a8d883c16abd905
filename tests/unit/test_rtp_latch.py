"""Symmetric RTP on a plain (``RTP/AVP``) leg's socket (``rtc/srtpudp.py`` ``RtpSocket``, a
trunk's phone): the far end is learnt from its first packet, and from then on a packet from
anywhere else neither takes the stream nor is heard (the "RTP bleed" attack: anyone who reached
the port with one packet had the call's audio sent to them, the phone hearing nothing); a new
address in the far end's SDP (a re-INVITE) is learnt again from its packets. Real sockets on
loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Iterator

import pytest

from bridge.rtc import udp_poll
from bridge.rtc.srtpudp import RtpSocket

from ..support.waits import until


def packet(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes(160)


@pytest.fixture
def peers() -> Iterator[list[socket.socket]]:
    socks = []
    for _ in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def where(s: socket.socket) -> tuple[str, int]:
    host, port = s.getsockname()[:2]
    return host, port


async def test_a_plain_leg_keeps_to_the_source_it_learnt_until_its_sdp_moves(
    peers: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    phone, stranger, moved = peers
    heard: list[int] = []
    leg = RtpSocket("trunk", lambda data, _at: heard.append(data[11]), lambda *_: None)
    try:
        ours = await leg.open("127.0.0.1", "")
        # The phone's SDP says one port; NAT (or a PBX) sends from another: that one is learnt.
        leg.follow("127.0.0.1", 9, ("127.0.0.1", 9), None)
        phone.sendto(packet(1, 0xA), ours)
        await until(lambda: heard == [0xA], 2.0, "the phone's first packet")
        assert leg.rtp_to == where(phone) and leg.latched
        stranger.sendto(packet(7, 0xB), ours)

        def handled() -> bool:  # heard (before), or dropped and counted
            return len(heard) > 1 or getattr(leg, "foreign", 0) > 0

        await until(handled, 2.0, "the stranger's packet")
        assert leg.rtp_to == where(phone) and heard == [0xA]  # not taken, not heard
        assert leg.foreign == 1
        leg.send_rtp(packet(2, 0xC))
        assert phone.recvfrom(2048)[0][11] == 0xC  # our audio still goes to the phone
        # A session refresh (the same SDP) keeps the learnt source.
        leg.follow("127.0.0.1", 9, ("127.0.0.1", 9), None)
        assert leg.rtp_to == where(phone)
        # A re-INVITE moves the media elsewhere: learnt again from its first packet.
        leg.follow(*where(moved), where(moved), None)
        moved.sendto(packet(3, 0xD), ours)
        await until(lambda: heard == [0xA, 0xD], 2.0, "the new address's first packet")
        assert leg.rtp_to == where(moved)
        phone.sendto(packet(4, 0xA), ours)  # the old one now is a stranger
        await until(lambda: leg.foreign == 2, 2.0, "the old address's packet counted")
        assert leg.rtp_to == where(moved) and heard == [0xA, 0xD]
        said = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING  # once a socket
    finally:
        leg.close()


async def test_a_socket_closed_while_it_binds_is_not_left_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the loop's own transports (``BRIDGE_UDP_POLL=false``) binding awaits the loop: a
    leg closed meanwhile (a call ended as its SDP was answered) closed nothing, and the socket
    it was binding stayed open for good, receiving into a leg that was gone."""
    monkeypatch.setattr(udp_poll, "enabled", False)
    leg = RtpSocket("trunk", lambda *_: None, lambda *_: None)
    opening = asyncio.ensure_future(leg.open("127.0.0.1", ""))
    try:
        await asyncio.sleep(0)  # the bind has begun, and waits for the loop
        leg.close()
        await opening
        assert leg.transport is not None and leg.transport.is_closing()
    finally:
        leg.close()
