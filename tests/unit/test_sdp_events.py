"""``telephone-event`` (RFC 4733) in SDP: one reader and one writer for every leg (``rtc/sdp.py``).

The browser's answer, Meta's legs and a trunk's phone each ask the same reader with their own
clocks; every SDP we write names the same events (the sixteen DTMF keys)."""

from __future__ import annotations

from bridge.audio.dtmf import DIGITS
from bridge.engines.cloudapi.sdp import for_meta, read_remote
from bridge.rtc.rfc4733 import add_telephone_event
from bridge.rtc.sdp import EVENT_FMTP, audio_section, edit_audio
from bridge.trunks import sdp as trunk_sdp


def offer(*rtpmaps: str, formats: str = "") -> str:
    pts = formats or " ".join(r.split()[0] for r in rtpmaps)
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    lines += [f"m=audio 4000 RTP/AVP {pts}", *(f"a=rtpmap:{r}" for r in rtpmaps)]
    return "\r\n".join(lines) + "\r\n"


CHROMIUM = offer(
    "111 opus/48000/2", "110 telephone-event/48000", "126 telephone-event/8000", "0 PCMU/8000"
)


def test_the_reader_takes_the_first_clock_asked_for_that_the_m_line_has() -> None:
    audio = audio_section(CHROMIUM)
    assert audio.telephone_event(8000, 48_000) == (126, 8000)
    assert audio.telephone_event(48_000, 8000) == (110, 48_000)
    assert audio.telephone_event(16_000) is None
    assert audio.telephone_event(16_000, any_clock=True) == (110, 48_000)  # its first


def test_the_reader_keeps_to_the_m_line_and_its_order() -> None:
    # An rtpmap the m-line does not list is no payload of it (RFC 4566 §5.14).
    unlisted = offer("0 PCMU/8000", "101 telephone-event/8000", formats="0")
    assert audio_section(unlisted).telephone_event(8000, any_clock=True) is None
    two = offer("0 PCMU/8000", "102 telephone-event/8000", "101 telephone-event/8000")
    assert audio_section(two).telephone_event(8000) == (102, 8000)  # the offerer's order


def test_each_leg_reads_its_event_with_its_own_clocks() -> None:
    assert read_remote(CHROMIUM).dtmf_pt == 126  # Meta's: 8 kHz only
    assert read_remote(offer("111 opus/48000/2", "110 telephone-event/48000")).dtmf_pt is None
    # A trunk's phone: the codec's clock, else any (baresip pairs 8 kHz events with Opus).
    phone = trunk_sdp.read(CHROMIUM, ("opus", "PCMU"), srtp=False)
    assert (phone.codec, phone.event_pt, phone.event_rate) == ("opus", 110, 48_000)
    g711 = trunk_sdp.read(CHROMIUM, ("PCMU",), srtp=False)
    assert (g711.codec, g711.event_pt, g711.event_rate) == ("PCMU", 126, 8000)
    baresip = offer("111 opus/48000/2", "101 telephone-event/8000")
    assert trunk_sdp.read(baresip, ("opus",), srtp=False).event_rate == 8000


def test_every_sdp_we_write_names_the_dtmf_keys_alone() -> None:
    assert EVENT_FMTP == f"0-{len(DIGITS) - 1}" == "0-15"
    ours = trunk_sdp.offer("127.0.0.1", 4000, ("opus", "PCMU"), None).decode()
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n" in ours
    assert "a=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-15\r\n" in ours
    answer = add_telephone_event(offer("111 opus/48000/2"), 126, 8000)
    assert answer.split("\r\n")[5:9] == [
        "m=audio 4000 RTP/AVP 111 126",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:126 telephone-event/8000",
        "a=fmtp:126 0-15",
    ]
    meta = for_meta(offer("111 opus/48000/2") + "a=fingerprint:sha-256 AB\r\n")
    assert "a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-15\r\na=ptime:20\r\n" in meta


def test_the_one_editor_of_aiortcs_sdp_completes_its_audio_m_line_alone() -> None:
    # What the browser's answer (Opus parameters, RED, telephone-event) and Meta's SDP are
    # made with: lines after a codec's rtpmap, a payload type moved on the m-line, lines
    # dropped; another m-line with the same payload type is not the audio's.
    sdp = offer("111 opus/48000/2", "0 PCMU/8000") + (
        "a=fmtp:111 minptime=10\r\na=ptime:60\r\nm=video 0 RTP/AVP 111\r\n"
        "a=rtpmap:111 VP8/90000\r\n"
    )
    out = edit_audio(
        sdp,
        ["a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111"],
        after=111,
        first=63,
        drop=lambda ln: ln.startswith("a=ptime:"),
    ).split("\r\n")
    assert out[5:12] == [
        "m=audio 4000 RTP/AVP 63 111 0",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=rtpmap:0 PCMU/8000",
        "a=fmtp:111 minptime=10",
        "m=video 0 RTP/AVP 111",
    ]
    assert out[12:] == ["a=rtpmap:111 VP8/90000", ""]
    moved = edit_audio(sdp, last=111).split("\r\n")[5]
    assert moved == "m=audio 4000 RTP/AVP 0 111"
    # No rtpmap of ``after``: the lines describe a payload beside one that is not there.
    assert "a=fmtp:126" not in edit_audio(sdp, ["a=fmtp:126 0-15"], after=8)


def test_metas_g711_is_read_from_its_m_line_as_every_codec_is() -> None:
    # AudioSection.encodings, as the codec Meta's answer picked is read: the m-line's order,
    # a static payload type without its rtpmap, and no rtpmap the m-line does not list.
    meta = offer("111 opus/48000/2", "8 PCMA/8000", "0 PCMU/8000", formats="111 0 8")
    assert read_remote(meta).g711 == ("PCMU", "PCMA")
    assert read_remote(offer("111 opus/48000/2", formats="111 8")).g711 == ("PCMA",)
    assert read_remote(offer("111 opus/48000/2", "0 PCMU/8000", formats="111")).g711 == ()
