"""Why DTLS and ICE failed (bridge/rtc/dtls.py): one hook on aiortc's DTLS state reads the
error its handshake is handling, else the step that refused the peer; ICE's reason follows from
whether the leg had ever connected."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
from OpenSSL import SSL

from bridge.calls.model import CallState
from bridge.calls.watchdog import check_limits
from bridge.config import settings_for_tests
from bridge.media import CallBus
from bridge.rtc import WebRTCSession, aiortc_seam, counters, dtls, hooks
from bridge.rtc.leg import PeerLeg


@pytest.fixture
def transport() -> RTCDtlsTransport:
    hooks.install()
    return RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )


def test_the_openssl_reason_of_the_handshake_being_handled(transport) -> None:
    try:
        raise SSL.Error([("SSL routines", "", "no shared cipher")])
    except SSL.Error:
        transport._set_state(aiortc_seam.State.FAILED)
    assert transport._bridge_failure == "no shared cipher"
    assert transport.state == "failed"


def test_a_peer_that_ends_the_handshake_and_a_closed_connection(transport) -> None:
    assert dtls.failure_reason(SSL.Error([]), "_do_handshake") == (
        "the peer aborted the DTLS handshake"
    )
    try:
        raise ConnectionError
    except ConnectionError:
        transport._set_state(aiortc_seam.State.FAILED)
    assert transport._bridge_failure == "the connection closed during the DTLS handshake"


def test_the_step_after_the_handshake_that_refused_the_peer(transport) -> None:
    def _validate_peer_identity() -> None:  # named as aiortc's step is
        transport._set_state(aiortc_seam.State.FAILED)

    _validate_peer_identity()
    assert transport._bridge_failure == "certificate fingerprint mismatch"
    assert dtls.failure_reason(None, "_setup_srtp") == "no SRTP protection profile negotiated"
    assert dtls.failure_reason(None, "a_step_of_another_release") == dtls.GENERIC


def test_the_first_reason_stays_and_other_states_record_none(transport) -> None:
    transport._set_state(aiortc_seam.State.CONNECTING)
    assert getattr(transport, "_bridge_failure", None) is None
    try:
        raise SSL.Error([("SSL routines", "", "no shared cipher")])
    except SSL.Error:
        transport._set_state(aiortc_seam.State.FAILED)
    transport._set_state(aiortc_seam.State.FAILED)
    assert transport._bridge_failure == "no shared cipher"


def _pc(ice_state: str, dtls_state: str, reason: str | None = None) -> SimpleNamespace:
    dtls_transport = SimpleNamespace(
        transport=SimpleNamespace(state=ice_state), state=dtls_state, _bridge_failure=reason
    )
    transceiver = SimpleNamespace(receiver=SimpleNamespace(transport=dtls_transport))
    return SimpleNamespace(getTransceivers=lambda: [transceiver])


def test_diagnose_says_which_stage_and_why() -> None:
    assert dtls.diagnose(_pc("failed", "new"), ever_connected=False) == (
        "ice",
        "ICE connectivity checks failed",
    )
    assert dtls.diagnose(_pc("failed", "connected"), ever_connected=True) == (
        "ice",
        "ICE connection lost (consent expired)",
    )
    assert dtls.diagnose(_pc("completed", "failed", "no shared cipher"), False) == (
        "dtls",
        "no shared cipher",
    )
    assert dtls.diagnose(_pc("completed", "failed"), False) == ("dtls", dtls.GENERIC)
    assert dtls.diagnose(_pc("completed", "connected"), True) == (
        "webrtc",
        "peer connection failed",
    )


async def test_the_metric_counts_a_reason_it_does_not_know_as_other(caplog) -> None:
    """``bridge_webrtc_failures_total``'s ``reason`` label takes DTLS reasons from a bounded
    set: OpenSSL's reason text (or an exception's) that the set does not name is counted as
    ``other``, while the WARNING and the leg's reason keep the text. Before, each text was a
    label value of its own: a peer could grow the series without bound."""
    odd, known = PeerLeg("odd leg", None, tasks="odd"), PeerLeg("known leg", None, tasks="known")
    try:
        before = dict(counters.FAILURES)
        odd.record_failure("dtls", "bad record mac 0x5f3a from a fuzzing peer")
        known.record_failure("dtls", "no shared cipher")
        added = {k: n - before.get(k, 0) for k, n in counters.FAILURES.items()}
        assert {k: n for k, n in added.items() if n} == {
            ("dtls", "other"): 1,
            ("dtls", "no shared cipher"): 1,
        }
        assert odd.failure_reason == "bad record mac 0x5f3a from a fuzzing peer"
        assert "bad record mac 0x5f3a" in caplog.text
    finally:
        await odd.close()
        await known.close()


@pytest.mark.parametrize("seconds", [7.0, 12.5])
async def test_a_sessions_time_limits_are_labelled_without_their_configured_seconds(
    seconds: float,
) -> None:
    """A session the watchdog fails (not connected within ``BRIDGE_CONNECT_TIMEOUT``, no RTP
    for ``BRIDGE_MEDIA_TIMEOUT``) is counted under a fixed reason whatever the settings say;
    the seconds stay in its reason (the WARNING, the ``webrtc.state`` event). Before, the label
    was ``not connected within 7 s``: a series per configured value, and a dashboard or an
    alert written for one deployment's timeout matched no other's."""
    settings = settings_for_tests(connect_timeout=seconds, media_timeout=seconds)
    waiting = WebRTCSession("c1", CallBus("c1"), settings.media, settings.ice)
    silent = WebRTCSession("c1", CallBus("c1"), settings.media, settings.ice)
    silent.state, silent.connected_at = "connected", waiting.created_at
    runtime = SimpleNamespace(
        call=SimpleNamespace(id="c1", state=CallState.ACTIVE, mono_answered=None),
        participants=SimpleNamespace(sessions={"a": waiting, "b": silent}),
    )
    before = dict(counters.FAILURES)
    try:
        check_limits(settings.calls, [runtime], lambda *_: None, waiting.created_at + 60, set())
        added = {k: n - before.get(k, 0) for k, n in counters.FAILURES.items()}
        assert {k: n for k, n in added.items() if n} == {
            ("timeout", "not connected"): 1,
            ("timeout", "no RTP"): 1,
        }
        assert waiting.failure_reason == f"not connected (within {seconds:g} s)"
        assert silent.failure_reason == f"no RTP (for {seconds:g} s)"
    finally:
        await waiting.close()
        await silent.close()
