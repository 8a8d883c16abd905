"""The numbers of an SDP (ports, payload types, clocks; RFC 4566 §5.14, §6: ASCII digits) as
its one reader takes them: anything else is the offer's fault, a ``BadOffer`` (a 400 on the
WebRTC route, a 488 to a trunk's INVITE), never an exception of Python's (a 500).

``str.isdigit`` says yes to digits ``int`` refuses (superscripts: ``"⁹".isdigit()``), so an
offer with one was a ``ValueError`` out of the reader: the route's 500 and its traceback, a
trunk INVITE's 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import BadOffer
from bridge.rtc.browser_sdp import opus_parameters, validate_offer
from bridge.rtc.sdes import read_savp
from bridge.rtc.sdp import audio_section
from bridge.trunks import sdp as trunk_sdp

OFFERS = Path(__file__).resolve().parents[1] / "fixtures" / "offers"
CHROMIUM = (OFFERS / "chromium.sdp").read_text()
KEY = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40


def phone(*media: str) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", *media]
    return "\r\n".join(lines) + "\r\n"


def test_a_browser_offer_whose_port_is_no_ascii_number_is_refused() -> None:
    m_line = next(ln for ln in CHROMIUM.splitlines() if ln.startswith("m=audio 9 "))
    offer = CHROMIUM.replace(m_line, m_line.replace(" 9 ", " ⁹ ", 1))
    with pytest.raises(BadOffer):
        validate_offer(offer)
    with pytest.raises(BadOffer):
        audio_section(offer)


def test_a_payload_type_that_is_no_ascii_number_offers_nothing() -> None:
    # Opus written as payload type "¹¹¹" on the m-line and its rtpmap: not a payload type.
    offer = phone("m=audio 4000 RTP/AVP ¹¹¹ 0", "a=rtpmap:¹¹¹ opus/48000/2", "a=rtpmap:0 PCMU/8000")
    assert audio_section(offer).payload_type("opus/48000") is None
    assert opus_parameters(offer) == {}
    assert trunk_sdp.read(offer, ("opus", "PCMU"), srtp=False).codec == "PCMU"
    events = phone("m=audio 4000 RTP/AVP 0 ¹⁰¹", "a=rtpmap:¹⁰¹ telephone-event/8000")
    assert audio_section(events).telephone_event(8000, any_clock=True) is None


def test_an_rtcp_port_that_is_no_ascii_number_is_no_rtcp_port() -> None:
    # As any a=rtcp whose port is no number: RTCP on the next port up (RFC 3550 §11).
    offer = phone("m=audio 4000 RTP/AVP 0", "a=rtcp:⁴⁰⁰¹")
    assert trunk_sdp.read(offer, ("PCMU",), srtp=False).rtcp == ("127.0.0.1", 4001)


def test_an_rtcp_port_out_of_range_is_refused() -> None:
    offer = phone("m=audio 4000 RTP/SAVP 0", "a=rtcp:70000", KEY)
    with pytest.raises(BadOffer, match="RTCP port"):
        read_savp(offer)
    assert read_savp(offer.replace("a=rtcp:70000", "a=rtcp:4001")).rtcp == ("127.0.0.1", 4001)


def test_a_telephone_event_with_no_clock_is_no_event() -> None:
    # A clock of 0 Hz: its durations cannot be read (the detector divided by it: each key
    # press was a ZeroDivisionError on the receive path, lost) nor written (every event 0 long).
    offer = phone(
        "m=audio 4000 RTP/AVP 0 101 102",
        "a=rtpmap:101 telephone-event/0",
        "a=rtpmap:102 telephone-event/8000",
    )
    assert audio_section(offer).telephone_event(8000, any_clock=True) == (102, 8000)
    alone = phone("m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/0")
    remote = trunk_sdp.read(alone, ("PCMU",), srtp=False)
    assert (remote.event_pt, remote.event_rate) == (None, 8000)


def test_only_an_attribute_is_a_direction() -> None:
    """RFC 3264 §5.1's directions are ``a=`` attributes: a session named ``inactive`` (``s=``)
    or a media title ``sendonly`` (``i=``) says nothing of where media goes. Both were read as
    the direction (a PBX's re-INVITE so named taken for a hold: our answer mirrored it and
    the leg sent nothing)."""
    named = phone("m=audio 4000 RTP/AVP 0").replace("s=-", "s=inactive")
    assert audio_section(named).direction == "sendrecv"
    titled = phone("m=audio 4000 RTP/AVP 0", "i=sendonly")
    assert trunk_sdp.read(titled, ("PCMU",), srtp=False).direction == "sendrecv"
    held = phone("m=audio 4000 RTP/AVP 0", "a=sendonly")
    assert audio_section(held).direction == "sendonly"
