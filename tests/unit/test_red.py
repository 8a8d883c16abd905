"""RED (RFC 2198) from browsers (rtc/red.py): the offer, the answer, the payload split, and the
hook that hands the primary on as Opus and the copy to the receiver."""

from __future__ import annotations

import asyncio

from bridge.rtc.red import RedStats, add_red, hook_red, offered_red, split_red

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


def test_the_hook_passes_the_primary_as_opus_and_the_copy_to_the_receiver() -> None:
    passed: list[bytes] = []
    copies: list[tuple[int, bytes]] = []

    class Dtls:
        async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
            passed.append(data)

    dtls, stats = Dtls(), RedStats()
    hook_red(dtls, 63, 111, lambda ts, p: copies.append((ts, p)), stats)
    # version 2 with a one-word header extension (kept byte for byte), PT 63, seq 7, ts 9600
    header = bytes([0x90, 0x80 | 63]) + (7).to_bytes(2, "big") + (9600).to_bytes(4, "big")
    header += (1234).to_bytes(4, "big") + bytes([0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0])
    rtp = header + red_payload(b"prev", 960, b"prim")
    asyncio.run(dtls._handle_rtp_data(rtp, arrival_time_ms=0))
    assert copies == [(9600 - 960, b"prev")]
    (opus,) = passed
    assert opus[1] == 0x80 | 111 and opus[2:20] == rtp[2:20] and opus[20:] == b"prim"
    other = bytes([0x80, 111]) + rtp[2:12] + b"plain"
    asyncio.run(dtls._handle_rtp_data(other, arrival_time_ms=0))  # not RED: untouched
    assert passed[-1] == other and stats.packets == 1
    asyncio.run(dtls._handle_rtp_data(rtp[:21], arrival_time_ms=0))  # a broken RED payload
    assert stats.malformed == 1 and len(passed) == 2
