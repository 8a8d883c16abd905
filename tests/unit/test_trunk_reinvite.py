"""The answer to a PBX's re-INVITE (``bridge/trunks/reinvite.py``), with no network: the
direction mirrored (RFC 3264 §6.1), RFC 2543's 0.0.0.0 hold read as one (§8.4), the o= version
one up on a change and the same SDP again on a refresh (§8), and what the bridge refuses
(another codec, another address family, the stream removed: a 488)."""

from __future__ import annotations

import logging

import pytest

from bridge.errors import BadOffer
from bridge.rtc.sdes import Crypto, new_crypto
from bridge.rtc.sdp import DIRECTIONS, origin
from bridge.trunks import sdp
from bridge.trunks.reinvite import answer, warning

CODECS = ("PCMU", "PCMA")


def phone_sdp(
    direction: str | None = "sendrecv",
    *,
    address: str = "192.0.2.10",
    port: int = 40000,
    formats: str = "0 101",
    version: int = 1,
    session_direction: str | None = None,
) -> bytes:
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=phone 77 {version} IN {family} {address}", "s=-"]
    lines += [f"c=IN {family} {address}", "t=0 0"]
    if session_direction:
        lines.append(f"a={session_direction}")
    lines += [f"m=audio {port} RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000"]
    lines += ["a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000"]
    if direction:
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def session() -> tuple[sdp.Remote, bytes]:
    """A call's far end (the phone's answer to our offer) and our offer."""
    ours = sdp.offer("198.51.100.7", 30000, CODECS, None)
    return sdp.read(phone_sdp(), CODECS, srtp=False), ours


def answered(offer: bytes, current: sdp.Remote, sent: bytes, crypto=None):
    return answer(offer, current, sent, address="198.51.100.7", port=30000, crypto=crypto)


def direction_of(body: bytes) -> str:
    found = [ln[2:] for ln in body.decode().splitlines() if ln[2:] in DIRECTIONS]
    assert len(found) == 1, body
    return found[0]


@pytest.mark.parametrize(
    ("offered", "ours", "holding"),
    [
        ("sendonly", "recvonly", True),
        ("inactive", "inactive", True),
        ("recvonly", "sendonly", False),
        ("sendrecv", "sendrecv", False),
        (None, "sendrecv", False),  # no attribute: sendrecv (RFC 3264 §5.1)
    ],
)
def test_the_answer_mirrors_the_offered_direction(offered, ours, holding) -> None:
    current, sent = session()
    got = answered(phone_sdp(offered), current, sent)
    assert direction_of(got.body) == ours == got.direction
    assert got.holding is holding
    assert got.sending is (ours in ("sendrecv", "sendonly"))
    text = got.body.decode()
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in text  # same port, the codec in use alone
    assert "c=IN IP4 198.51.100.7\r\n" in text


def test_a_session_level_direction_is_the_m_lines_default() -> None:
    current, sent = session()
    got = answered(phone_sdp(None, session_direction="sendonly"), current, sent)
    assert got.offered == "sendonly" and got.direction == "recvonly"
    media_level = phone_sdp("sendrecv", session_direction="inactive")
    assert answered(media_level, current, sent).direction == "sendrecv"


@pytest.mark.parametrize(
    ("offered", "read_as", "ours"),
    [("sendrecv", "sendonly", "recvonly"), ("recvonly", "inactive", "inactive")],
)
def test_rfc_2543_hold_by_0_0_0_0_is_a_hold(offered, read_as, ours) -> None:
    current, sent = session()
    got = answered(phone_sdp(offered, address="0.0.0.0"), current, sent)
    assert (got.offered, got.direction, got.holding) == (read_as, ours, True)


def test_the_o_line_version_goes_up_on_a_change_and_stays_on_a_refresh() -> None:
    current, sent = session()
    first_session, first_version = origin(sent)
    hold = answered(phone_sdp("sendonly", version=2), current, sent)
    assert origin(hold.body) == (first_session, first_version + 1)
    resume = answered(phone_sdp("sendrecv", version=3), hold.remote, hold.body)
    assert origin(resume.body) == (first_session, first_version + 2)
    # A session refresh (the same offer again, session-timer style): the same SDP, version too.
    refresh = answered(phone_sdp("sendrecv", version=3), resume.remote, resume.body)
    assert refresh.body == resume.body
    # The o= line keeps everything but the version (RFC 3264 §8).
    o_lines = [b.decode().splitlines()[1].split() for b in (sent, hold.body, resume.body)]
    assert {tuple(o[:2] + o[3:]) for o in o_lines} == {tuple(o_lines[0][:2] + o_lines[0][3:])}


def test_the_codec_in_use_is_kept_when_the_offer_lists_others_first() -> None:
    current, sent = session()
    got = answered(phone_sdp("sendonly", formats="8 0 101"), current, sent)
    assert got.remote.codec == "PCMU" and got.remote.pt == 0
    assert "m=audio 30000 RTP/AVP 0 101" in got.body.decode()


def test_an_address_within_the_family_is_followed() -> None:
    current, sent = session()
    got = answered(phone_sdp(address="192.0.2.99", port=41000), current, sent)
    assert (got.remote.address, got.remote.port) == ("192.0.2.99", 41000)


@pytest.mark.parametrize(
    ("offer", "why"),
    [
        (phone_sdp(formats="8 101"), "the offer drops PCMU, the codec in use"),
        (phone_sdp(address="2001:db8::1"), "moves the audio to IPv6"),
        (phone_sdp(port=0), "removes the audio stream (port 0"),
        (b"v=0\r\nm=video 5000 RTP/AVP 96\r\n", "no audio m-line"),
    ],
)
def test_what_the_bridge_cannot_follow_is_refused_with_the_reason(offer, why) -> None:
    current, sent = session()
    with pytest.raises(BadOffer, match=why.replace("(", r"\(")) as caught:
        answered(offer, current, sent)
    name, value = warning(caught.value)
    assert name == "Warning" and value.startswith('399 bridge "') and value.endswith('"')
    assert value.count('"') == 2


def test_an_srtp_leg_keeps_our_key_and_follows_the_phones() -> None:
    ours, theirs, rekeyed = new_crypto(), new_crypto(), new_crypto()

    def savp(crypto, direction: str) -> bytes:
        text = phone_sdp(direction).decode().replace("RTP/AVP", "RTP/SAVP")
        return (text + crypto.attribute() + "\r\n").encode()

    sent = sdp.offer("198.51.100.7", 30000, CODECS, ours)
    current = sdp.read(savp(theirs, "sendrecv"), CODECS, srtp=True)
    got = answered(savp(rekeyed, "sendonly"), current, sent, crypto=ours)
    assert got.remote.crypto is not None and got.remote.crypto.key == rekeyed.key
    assert got.crypto is ours
    assert ours.attribute() in got.body.decode() and "RTP/SAVP" in got.body.decode()
    with pytest.raises(BadOffer, match="RTP/AVP"):
        answered(phone_sdp("sendonly"), current, sent, crypto=ours)


def savp_lines(*cryptos: Crypto, direction: str = "sendrecv") -> bytes:
    text = phone_sdp(direction).decode().replace("RTP/AVP", "RTP/SAVP")
    return (text + "".join(c.attribute() + "\r\n" for c in cryptos)).encode()


@pytest.mark.parametrize(
    ("reoffered", "tag", "suite"),
    [
        # the tags renumbered: the best line is now tag 3
        (lambda: (new_crypto(3, "AES_CM_128_HMAC_SHA1_80"),), 3, "AES_CM_128_HMAC_SHA1_80"),
        # the suite changed under the same tag
        (lambda: (new_crypto(1, "AES_CM_128_HMAC_SHA1_32"),), 1, "AES_CM_128_HMAC_SHA1_32"),
        # a suite we do not take first, ours second under another tag (FreeSWITCH's order)
        (
            lambda: (
                Crypto(1, "AEAD_AES_256_GCM", b"x" * 44),
                new_crypto(2, "AES_CM_128_HMAC_SHA1_80"),
            ),
            2,
            "AES_CM_128_HMAC_SHA1_80",
        ),
    ],
)
def test_a_re_offer_that_changes_the_crypto_line_gets_a_fresh_key_under_it(
    reoffered, tag: int, suite: str
) -> None:
    """RFC 4568 §7.1.2: the answer names the line it accepts, by its tag and with its suite; a
    re-offer that renumbers or changes them is answered under the new line with a new key of
    ours (the leg re-keys with it), never with the first answer's line."""
    ours, theirs = new_crypto(), new_crypto()
    sent = sdp.offer("198.51.100.7", 30000, CODECS, ours)
    current = sdp.read(savp_lines(theirs), CODECS, srtp=True)
    got = answered(savp_lines(*reoffered()), current, sent, crypto=ours)
    assert got.crypto is not None and got.crypto is not ours
    assert (got.crypto.tag, got.crypto.suite) == (tag, suite) and got.crypto.key != ours.key
    lines = [ln for ln in got.body.decode().splitlines() if ln.startswith("a=crypto:")]
    assert lines == [got.crypto.attribute()]
    assert got.remote.crypto is not None and got.remote.crypto.tag == tag


def test_a_re_offer_with_no_suite_we_take_is_refused() -> None:
    ours, theirs = new_crypto(), new_crypto()
    sent = sdp.offer("198.51.100.7", 30000, CODECS, ours)
    current = sdp.read(savp_lines(theirs), CODECS, srtp=True)
    with pytest.raises(BadOffer, match="not supported"):
        answered(savp_lines(Crypto(1, "AEAD_AES_256_GCM", b"x" * 44)), current, sent, crypto=ours)


def test_rtcp_mux_is_offered_and_answered_only_when_offered() -> None:
    """RFC 5761 §5.1.1: our offer says ``a=rtcp-mux``; the phone's SDP is read for it; our
    answer keeps it only when the phone's offer had it (else the leg sends no RTCP)."""
    ours = sdp.offer("198.51.100.7", 30000, CODECS, None).decode()
    assert "a=rtcp-mux\r\n" in ours
    plain = sdp.read(phone_sdp(), CODECS, srtp=False)
    assert not plain.rtcp_mux
    assert "a=rtcp-mux" not in sdp.offer("198.51.100.7", 30000, (), None, answer_to=plain).decode()
    muxed = sdp.read(phone_sdp().decode() + "a=rtcp-mux\r\n", CODECS, srtp=False)
    assert muxed.rtcp_mux
    answer_sdp = sdp.offer("198.51.100.7", 30000, (), None, answer_to=muxed).decode()
    assert "a=rtcp-mux\r\n" in answer_sdp
    # Only the audio m-line's attribute counts (a video m-line's is not ours).
    other = phone_sdp().decode() + "m=video 0 RTP/AVP 96\r\na=rtcp-mux\r\n"
    assert not sdp.read(other, CODECS, srtp=False).rtcp_mux


@pytest.mark.parametrize("offered", ["sendonly", "sendrecv"], ids=["hold", "resume"])
async def test_a_hold_or_resume_racing_the_calls_end_changes_nothing_and_says_nothing(
    offered: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The phone (the call's agent) holds or resumes as the call ends: the call's hold refuses
    an ended call (``CallHold.set``), and that is no failure of anyone's. Before, the hold
    logged "hold music not played" at WARNING, then its refusal, like a resume's, went out of
    the re-INVITE's handler as an exception."""
    from types import SimpleNamespace

    from bridge.calls.hold import Hold
    from bridge.media import CallBus, Role
    from bridge.trunks.reinvite import Answer, set_hold

    events: list[str] = []
    hold = Hold(CallBus("c1"), lambda type_, **_: events.append(type_), live=lambda: False)
    runtime = SimpleNamespace(hold=hold, emit=lambda type_, **_: events.append(type_))
    leg = SimpleNamespace(
        participant_id="pbx", on_hold=offered == "sendrecv", held_call=offered == "sendrecv"
    )
    leg.role, leg.runtime = Role.AGENT, runtime
    remote, body = session()
    got = Answer(remote, offered, "recvonly", body, None)

    async def music() -> None:
        raise AssertionError("no music for an ended call")

    await set_hold(leg, got, music)  # type: ignore[arg-type]
    assert events == ["participant.held" if offered == "sendonly" else "participant.unheld"]
    assert not hold.held
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
