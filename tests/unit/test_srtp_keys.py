"""An SDES leg's keys on its socket (``rtc/srtpudp.py`` ``RtpSocket``), Meta's SDES leg's and a
trunk phone's alike: our key made as it binds (an offer's, or an answer's under the offered
line), an answer held to our suite, the far end's key and address followed; and the SRTP
contexts across a re-INVITE (``set_keys``): a direction whose key and suite stay keeps its
context, so its rollover counter goes on past a sequence wrap (RFC 3711 §3.3.1); a changed key
starts a fresh one."""

from __future__ import annotations

import struct
from typing import Any

import pylibsrtp
import pytest

from bridge.errors import BadOffer
from bridge.rtc.sdes import new_crypto
from bridge.rtc.srtpudp import RtpSocket

PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 0x1234) + bytes(
        [seq & 0xFF] * 20
    )


def session(key: bytes, direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=PROFILE))


class Wire:
    """What the socket sends, as a datagram transport would take it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, _to: Any) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_our_key_is_made_as_the_socket_binds_and_the_far_ends_sdp_is_followed() -> None:
    """An offer's key is fresh (tag 1, ``_80``), an answer's takes the offered line's tag and
    suite with a key of its own; an answer to our offer in another suite is refused; the far
    end's key reads what it sends and ours protects what we send; an unspecified address (a
    hold, RFC 3264 §8.4) keeps where packets go. A clear socket makes no key."""
    offerer, answerer, clear = (
        RtpSocket(name, lambda *_: None, lambda *_: None, srtp)
        for name, srtp in (("offerer", True), ("answerer", True), ("clear", False))
    )
    try:
        await offerer.open("127.0.0.1", "")
        theirs = new_crypto(4, "AES_CM_128_HMAC_SHA1_32")
        await answerer.open("127.0.0.1", "", theirs)
        await clear.open("127.0.0.1", "")
        ours, answered = offerer.crypto, answerer.crypto
        assert ours is not None and (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
        assert answered is not None and answered.key != theirs.key
        assert (answered.tag, answered.suite) == (4, "AES_CM_128_HMAC_SHA1_32")
        assert clear.crypto is None and clear.local[1] > 0
        with pytest.raises(BadOffer, match="AES_CM_128_HMAC_SHA1_32 is not ours"):
            offerer.check_answer(theirs)
        offerer.check_answer(new_crypto(1))  # our suite: taken
        heard: list[int] = []
        offerer.on_rtp = lambda data, _at: heard.append(struct.unpack("!H", data[2:4])[0])
        wire, bound = Wire(), offerer.transport
        offerer.transport = wire  # type: ignore[assignment]
        far = new_crypto()
        offerer.follow("127.0.0.1", 4000, ("127.0.0.1", 4000), far)
        offerer.follow("0.0.0.0", 4002, ("0.0.0.0", 4002), far)  # the far end holds
        assert (offerer.rtp_to, offerer.rtcp_to) == (("127.0.0.1", 4000), ("127.0.0.1", 4000))
        far_tx = session(far.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        offerer.datagram_arrived(far_tx.protect(rtp(5)), ("127.0.0.1", 4000), 0.0)
        offerer.send_rtp(rtp(6))
        far_rx = session(ours.key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        assert heard == [5] and offerer.auth_failed == 0
        assert struct.unpack("!H", far_rx.unprotect(wire.sent[-1])[2:4])[0] == 6
        offerer.transport = bound
    finally:
        for sock in (offerer, answerer, clear):
            sock.close()


def keyed_socket(ours: bytes, theirs: bytes) -> tuple[RtpSocket, Wire, list[int]]:
    """An SRTP socket keyed with ``ours`` and ``theirs``, sending to a :class:`Wire`; the
    sequence numbers it hears."""
    heard: list[int] = []
    sock = RtpSocket(
        "test",
        lambda data, _at: heard.append(struct.unpack("!H", data[2:4])[0]),
        lambda _data, _at: None,
        srtp=True,
    )
    wire = Wire()
    sock.transport = wire  # type: ignore[assignment]
    sock.set_remote(("127.0.0.1", 9), ("127.0.0.1", 9))
    sock.set_keys(ours, theirs, PROFILE)
    return sock, wire, heard


def test_unchanged_keys_keep_their_contexts_past_a_sequence_wrap() -> None:
    ours, theirs = new_crypto().key, new_crypto().key
    sock, wire, heard = keyed_socket(ours, theirs)
    far_tx = session(theirs, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    far_rx = session(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    seqs = list(range(65530, 65536 + 4))  # across the wrap: the rollover counter is 1 after it
    for seq in seqs:
        sock.datagram_arrived(far_tx.protect(rtp(seq)), ("127.0.0.1", 9), 0.0)
        sock.send_rtp(rtp(seq))
    sock.set_keys(ours, theirs, PROFILE)  # a hold, a resume, a session refresh: the same keys
    for seq in range(65536 + 4, 65536 + 8):
        sock.datagram_arrived(far_tx.protect(rtp(seq)), ("127.0.0.1", 9), 0.0)
        sock.send_rtp(rtp(seq))
    assert heard == [seq & 0xFFFF for seq in range(65530, 65536 + 8)]
    assert sock.auth_failed == 0
    # The far end reads all we sent, past the wrap and the re-INVITE (a fresh context would
    # have sent with the rollover counter at 0 again: its authentication fails there).
    assert [struct.unpack("!H", far_rx.unprotect(p)[2:4])[0] for p in wire.sent] == heard


def test_a_changed_key_gets_a_fresh_context_the_other_direction_keeps_its_own() -> None:
    ours, theirs, rekeyed = new_crypto().key, new_crypto().key, new_crypto().key
    sock, wire, heard = keyed_socket(ours, theirs)
    far_rx = session(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    for seq in range(65534, 65536 + 2):
        sock.send_rtp(rtp(seq))
    sock.set_keys(ours, rekeyed, PROFILE)  # the phone re-keys; our key stays
    sock.datagram_arrived(
        session(rekeyed, pylibsrtp.Policy.SSRC_ANY_OUTBOUND).protect(rtp(3)), ("127.0.0.1", 9), 0.0
    )
    sock.send_rtp(rtp(65536 + 2))
    assert heard == [3] and sock.auth_failed == 0
    assert len([far_rx.unprotect(p) for p in wire.sent]) == 5


class _Tx:
    def __init__(self, body: bytes) -> None:
        self.req = type("Req", (), {"body": body, "call_id": "c"})()
        self.dialog = type("Dialog", (), {"key": ("c", "t")})()
        self.responses: list[tuple[int, bytes]] = []

    async def respond(self, status: int, _reason: str, body: bytes = b"", **_: Any) -> bool:
        self.responses.append((status, body))
        return True


async def test_a_re_invite_that_renumbers_the_crypto_line_re_keys_the_legs_socket() -> None:
    """``trunks/reinvite.py``: the re-offer's line is taken under a fresh key of ours, and the
    leg's socket protects with it (the far end reads it with the key of our answer) and reads
    the phone's new key (before, the answer named a line the re-offer no longer had)."""
    from bridge.trunks import sdp as trunk_sdp
    from bridge.trunks.media import TrunkMedia
    from bridge.trunks.participant import SipParticipant
    from bridge.trunks.refusals import TrunkRefusals
    from bridge.trunks.reinvite import _reinvited

    ours, theirs, rekeyed = new_crypto(), new_crypto(), new_crypto(3)
    head = "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"

    def phone(crypto: Any, version: int) -> bytes:
        sdp = head.replace(" 1 1 ", f" 1 {version} ") + "m=audio 4000 RTP/SAVP 0\r\n"
        return (
            sdp + "a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" + crypto.attribute() + "\r\n"
        ).encode()

    class Leg:
        take_remote = SipParticipant.take_remote
        participant_id = "p"
        on_hold = held_call = False
        trunk = type("Trunk", (), {"trunk_id": "t", "hold_music": None})()

    leg = Leg()
    leg.remote = trunk_sdp.read(phone(theirs, 1), ("PCMU",), srtp=True)
    leg.media = media = TrunkMedia(
        "test", "PCMU", 0, None, lambda _pcm: None, lambda _now: None, lambda *_: None, srtp=True
    )
    sock = media.socket
    sock.crypto = ours
    leg.sdp_sent = trunk_sdp.offer("127.0.0.1", 30000, ("PCMU",), ours)
    heard: list[int] = []
    sock.on_rtp = lambda d, _at: heard.append(struct.unpack("!H", d[2:4])[0])
    wire = Wire()
    sock.transport, sock.local = wire, ("127.0.0.1", 30000)  # type: ignore[assignment]
    leg.take_remote(media, leg.remote)
    line = type("Line", (), {"legs": {("c", "t"): leg}, "media_host": "127.0.0.1"})()
    catalog = type("Catalog", (), {"trunks": {}})()
    tx = _Tx(phone(rekeyed, 2))
    await _reinvited(line, catalog, None, TrunkRefusals(lambda: None), tx)  # type: ignore[arg-type]
    ((status, body),) = tx.responses
    assert sock.crypto is not None
    assert status == 200 and sock.crypto.tag == 3 and sock.crypto.key != ours.key
    assert sock.crypto.attribute() in body.decode()
    sock.datagram_arrived(
        session(rekeyed.key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND).protect(rtp(7)),
        ("127.0.0.1", 4000),
        0.0,
    )
    sock.send_rtp(rtp(8))
    assert heard == [7] and sock.auth_failed == 0
    far_rx = session(sock.crypto.key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    assert struct.unpack("!H", far_rx.unprotect(wire.sent[-1])[2:4])[0] == 8
