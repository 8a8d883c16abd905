"""A libsrtp session's per-packet calls straight into libsrtp (bridge/rtc/srtpudp.py
``LeanSrtp``): the same bytes out as pylibsrtp's own ``Session`` methods, the same errors
(``pylibsrtp.Error`` on an authentication or replay failure, ``ValueError`` on a packet too
long), and anything that is not a pylibsrtp 1.0 session passed through as it is."""

from __future__ import annotations

import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from bridge.rtc.srtpudp import LeanSrtp, lean_srtp

KEY = bytes(range(30))


def _session(inbound: bool, profile: int = Policy.SRTP_PROFILE_AES128_CM_SHA1_80) -> Session:
    key = KEY if profile == Policy.SRTP_PROFILE_AES128_CM_SHA1_80 else bytes(range(28))
    kind = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key=key, ssrc_type=kind, srtp_profile=profile))


def _rtp(seq: int, payload: bytes = bytes(range(160))) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


@pytest.mark.parametrize(
    "profile", [Policy.SRTP_PROFILE_AES128_CM_SHA1_80, Policy.SRTP_PROFILE_AEAD_AES_128_GCM]
)
def test_the_same_bytes_both_ways_as_pylibsrtps_own_calls(profile: int) -> None:
    lean_tx, own_tx = lean_srtp(_session(False, profile)), _session(False, profile)
    lean_rx, own_rx = lean_srtp(_session(True, profile)), _session(True, profile)
    assert isinstance(lean_tx, LeanSrtp) and isinstance(lean_rx, LeanSrtp)
    for seq in range(100, 140):
        packet = _rtp(seq)
        protected = lean_tx.protect(packet)
        assert protected == own_tx.protect(packet)
        assert lean_rx.unprotect(protected) == own_rx.unprotect(protected) == packet
    for n in range(20):
        rtcp = struct.pack("!BBHII", 0x80, 201, 1, 0x1234, n) + bytes(4 * n)
        protected = lean_tx.protect_rtcp(rtcp)
        assert protected == own_tx.protect_rtcp(rtcp)
        assert lean_rx.unprotect_rtcp(protected) == own_rx.unprotect_rtcp(protected) == rtcp


def test_its_errors_are_pylibsrtps() -> None:
    tx, rx = lean_srtp(_session(False)), lean_srtp(_session(True))
    protected = tx.protect(_rtp(7))
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect(tampered)
    assert rx.unprotect(protected) == _rtp(7)
    with pytest.raises(pylibsrtp.Error):  # replayed
        rx.unprotect(protected)
    with pytest.raises(ValueError):
        tx.protect(_rtp(8, bytes(1500)))
    with pytest.raises(ValueError):
        rx.unprotect(bytes(1501))


def test_its_rtcp_errors_are_pylibsrtps() -> None:
    tx, rx, own = lean_srtp(_session(False)), lean_srtp(_session(True)), _session(False)
    rtcp = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    protected = tx.protect_rtcp(rtcp)
    tampered = protected[:-1] + bytes([protected[-1] ^ 1])
    with pytest.raises(pylibsrtp.Error):
        rx.unprotect_rtcp(tampered)
    assert rx.unprotect_rtcp(protected) == rtcp
    with pytest.raises(pylibsrtp.Error):  # replayed
        rx.unprotect_rtcp(protected)
    # The same room as pylibsrtp's for the SRTCP trailer: the longest packet it takes, too.
    longest = 1500 - pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN
    padded = struct.pack("!BBHI", 0x80, 201, longest // 4 - 1, 0x1234) + bytes(longest - 8)
    assert len(tx.protect_rtcp(padded)) == len(own.protect_rtcp(padded))
    for session in (tx, own):
        with pytest.raises(ValueError):
            session.protect_rtcp(padded + bytes(4))
    with pytest.raises(ValueError):
        rx.unprotect_rtcp(bytes(1501))


def test_what_is_not_a_pylibsrtp_session_is_passed_through() -> None:
    stand_in = object()
    assert lean_srtp(stand_in) is stand_in
    assert lean_srtp(None) is None
