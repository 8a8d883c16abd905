"""A PBX's SDES offer (RFC 4568) on a trunk: the best line we can use is taken, whatever comes
first, and our answer names that line by its tag and suite."""

from __future__ import annotations

import base64

import pytest

from bridge.errors import BadOffer
from bridge.rtc.sdes import answer_crypto
from bridge.trunks import sdp as trunk_sdp

KEY = base64.b64encode(bytes(range(30))).decode()
HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def offer(*cryptos: str) -> str:
    lines = [f"a=crypto:{c} inline:{KEY}" for c in cryptos]
    return (
        HEAD + "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n" + "\r\n".join(lines) + "\r\n"
    )


def test_the_best_usable_line_is_taken_and_answered_by_its_tag_and_suite() -> None:
    # FreeSWITCH's order: AEAD and 256-bit suites first, which we do not take (they used to
    # refuse the call: only the first line was read).
    remote = trunk_sdp.read(
        offer(
            "1 AEAD_AES_256_GCM_8",
            "2 AES_256_CM_HMAC_SHA1_80",
            "3 AES_CM_128_HMAC_SHA1_32",
            "4 AES_CM_128_HMAC_SHA1_80",
        ),
        ("PCMU",),
        srtp=True,
    )
    assert remote.crypto is not None
    assert (remote.crypto.tag, remote.crypto.suite) == (4, "AES_CM_128_HMAC_SHA1_80")
    ours = answer_crypto(remote.crypto)
    assert (ours.tag, ours.suite) == (4, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key != remote.crypto.key and len(ours.key) == 30  # our own, fresh
    answer = trunk_sdp.offer("192.0.2.9", 5000, (), ours, answer_to=remote).decode()
    (line,) = [ln for ln in answer.split("\r\n") if ln.startswith("a=crypto:")]
    assert line.startswith("a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:")


def test_a_32_bit_tag_is_answered_with_it() -> None:
    remote = trunk_sdp.read(offer("7 AES_CM_128_HMAC_SHA1_32"), ("PCMU",), srtp=True)
    assert remote.crypto is not None
    ours = answer_crypto(remote.crypto)
    assert (ours.tag, ours.suite, ours.profile) == (
        7,
        "AES_CM_128_HMAC_SHA1_32",
        remote.crypto.profile,
    )


def test_no_usable_line_is_refused_with_the_first_reason() -> None:
    with pytest.raises(BadOffer, match="AEAD_AES_256_GCM_8 is not supported"):
        trunk_sdp.read(
            offer("1 AEAD_AES_256_GCM_8", "2 AES_256_CM_HMAC_SHA1_80"), ("PCMU",), srtp=True
        )


@pytest.mark.parametrize(
    "param", ["UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP", "KDR=24"]
)
def test_a_line_whose_session_parameters_change_the_packets_is_passed_over(param) -> None:
    """RFC 4568 §6.3: a line asking for SRTP unencrypted or unauthenticated, or a key
    derivation rate, protects packets otherwise than the plain suite we run: it was taken as
    if the parameter were not there (what the PBX then sent failed to unprotect, or ours were
    unreadable to it). Another line is taken; with none, the offer is refused naming it."""
    key = f"inline:{KEY}"
    lines = [f"1 AES_CM_128_HMAC_SHA1_80 {key} {param}", f"2 AES_CM_128_HMAC_SHA1_32 {key}"]
    body = HEAD + "m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    remote = trunk_sdp.read(
        body + "".join(f"a=crypto:{ln}\r\n" for ln in lines), ("PCMU",), srtp=True
    )
    assert remote.crypto is not None and remote.crypto.tag == 2
    with pytest.raises(BadOffer, match=param.split("=")[0]):
        trunk_sdp.read(body + f"a=crypto:{lines[0]}\r\n", ("PCMU",), srtp=True)


def test_session_parameters_that_leave_the_packets_alone_are_taken() -> None:
    """KDR=0 (the default), a window size hint and FEC parameters (no FEC here) change
    nothing of what the suite does: the line is taken."""
    line = f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=0 WSH=128 FEC_ORDER=FEC_SRTP"
    body = HEAD + f"m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{line}\r\n"
    remote = trunk_sdp.read(body, ("PCMU",), srtp=True)
    assert remote.crypto is not None and remote.crypto.tag == 1


def test_an_answer_to_a_video_phone_refuses_its_video_in_place() -> None:
    """A PBX extension that is a video phone offers ``m=video`` beside its audio: the answer
    has one m-line per offered one, the video refused with port 0 in its place (RFC 3264 §6).
    Before, the answer had the audio alone, and such a phone takes it for a wrong answer."""
    from bridge.trunks import sdp as trunk_sdp

    for order in (("video", "audio"), ("audio", "video")):
        sections = {
            "audio": "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
            "video": "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        }
        offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        offer += "".join(sections[kind] for kind in order)
        remote = trunk_sdp.read(offer, ("PCMU",), srtp=False)
        answer = trunk_sdp.offer("127.0.0.1", 5000, ("PCMU",), None, answer_to=remote).decode()
        m_lines = [ln for ln in answer.split("\r\n") if ln.startswith("m=")]
        expected = {"audio": "m=audio 5000 RTP/AVP 0 101", "video": "m=video 0 RTP/AVP 96"}
        assert m_lines == [expected[kind] for kind in order], answer


def test_a_refused_audio_stream_before_a_live_one_is_not_the_one_answered() -> None:
    """An offer whose first audio m-line is refused (port 0, RFC 3264 §6: a stream taken out)
    and second is live: the live one is the call's audio, the refused one stays refused.
    Before, the first was read: RTP sent to port 0, the phone heard nothing."""
    from bridge.trunks import sdp as trunk_sdp

    offer = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 0 RTP/AVP 8\r\n"
        "m=audio 4000 RTP/AVP 0\r\n"
    )
    remote = trunk_sdp.read(offer, ("PCMU", "PCMA"), srtp=False)
    assert (remote.port, remote.codec, remote.index) == (4000, "PCMU", 1)
    answer = trunk_sdp.offer("127.0.0.1", 5000, ("PCMU",), None, answer_to=remote).decode()
    m_lines = [ln for ln in answer.split("\r\n") if ln.startswith("m=")]
    assert m_lines == ["m=audio 0 RTP/AVP 8", "m=audio 5000 RTP/AVP 0"], answer
