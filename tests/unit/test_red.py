"""RED (RFC 2198) from browsers (rtc/red.py): the offer, the answer and the payload split (the
session hands the primary on as Opus and the copy to the receiver: test_dtls_srtp.py)."""

from __future__ import annotations

from bridge.rtc.red import add_red, offered_red, split_red

OFFER = (
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 0\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n"
    "a=fmtp:63 111/111\r\na=rtpmap:0 PCMU/8000\r\n"
)


def red_payload(previous: bytes, offset: int, primary: bytes, pt: int = 111) -> bytes:
    header = bytes([0x80 | pt]) + ((offset << 10) | len(previous)).to_bytes(3, "big")
    return header + bytes([pt]) + previous + primary


def test_offer_and_answer() -> None:
    assert offered_red(OFFER) == (63, 111)
    assert offered_red(OFFER.replace("111/111", "111/0")) is None  # not all Opus
    assert offered_red(OFFER.replace("red/48000/2", "foo/48000/2")) is None
    answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    out = add_red(answer, 63, 111)
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 63 111" in out  # RED first: the browser sends it
    assert "a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111" in out


def test_split_red_blocks_oldest_first_primary_last() -> None:
    payload = red_payload(b"old-frame", 960, b"new-frame")
    assert split_red(payload) == [(960, 111, b"old-frame"), (0, 111, b"new-frame")]
    assert split_red(bytes([111]) + b"only") == [(0, 111, b"only")]
    assert split_red(payload[:3]) is None  # a header cut short
    assert split_red(bytes([0x80 | 111, 0, 0x0F, 0xFF, 111]) + b"x") is None  # block too long
    assert split_red(b"") is None
