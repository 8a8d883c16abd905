"""DTLS with every stack, and the reasons ICE and DTLS fail.

**Ciphers.** aiortc's DTLS context offers only ECDHE-ECDSA suites. A peer whose certificate is
RSA (GStreamer's webrtcbin, many gateways) cannot take one when it is the DTLS server (the
bridge answers ``a=setup:active``): the handshake fails with ``no shared cipher``. The seam
wraps aiortc's context and sets :data:`CIPHERS`: aiortc's ECDSA suites first, then the same
with RSA authentication. The bridge keeps its ECDSA certificate; as the server it picks an
ECDSA suite and accepts any client certificate (its fingerprint is what is checked).

**Reasons.** aiortc logs DTLS failures at DEBUG only and keeps no reason. A hook on the
transport's state records one (``_bridge_failure``) as it turns failed: the OpenSSL error then
being handled, the connection closed under it, or the post-handshake step that refused the
peer (:data:`STEP_REASONS`). Why ICE failed follows from whether the leg had ever connected.
:func:`diagnose` says which. The failures metric names a reason only from a bounded set
(:func:`reason_label`: ``other`` for the rest): DTLS's, ICE's and a leg's time limits'
(:data:`NOT_CONNECTED`, :data:`NO_RTP`, whose configured seconds go in the reason's detail,
never in the label).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from aiortc import RTCCertificate, RTCDtlsTransport, RTCPeerConnection
from OpenSSL import SSL

from . import aiortc_seam as seam

AIORTC_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)
"""What aiortc sets (its ``_create_ssl_context``): ECDSA authentication only."""

CIPHERS = (
    AIORTC_CIPHERS + ":ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
"""aiortc's suites, then the same with RSA authentication (for RSA-certificate servers)."""

_ORIGINAL_CONTEXT = seam.ORIGINAL.create_ssl_context
_ORIGINAL_SET_STATE = seam.ORIGINAL.set_state

STEP_REASONS = {
    "_validate_peer_identity": "certificate fingerprint mismatch",
    "_setup_srtp": "no SRTP protection profile negotiated",
}
"""The reason for a failure after the handshake, by the aiortc 1.16 step that set it (the
caller of ``_set_state``; a step of another name gives :data:`GENERIC`, never an error)."""

GENERIC = "DTLS handshake failed"
ABORTED = "the peer aborted the DTLS handshake"
CLOSED = "the connection closed during the DTLS handshake"

OPENSSL_REASONS = (
    "no shared cipher",
    "no suitable signature algorithm",
    "no shared signature algorithms",
    "peer did not return a certificate",
    "certificate verify failed",
    "unsupported protocol",
    "wrong version number",
    "no protocols available",
    "unexpected message",
    "sslv3 alert handshake failure",
    "tlsv1 alert protocol version",
    "tlsv1 alert decode error",
    "tlsv1 alert internal error",
)
"""OpenSSL's reasons a WebRTC peer's DTLS handshake is known to fail with."""

ICE_CHECKS_FAILED = "ICE connectivity checks failed"
ICE_LOST = "ICE connection lost (consent expired)"
CONNECTION_LOST = "connection lost"
"""Nobody here closed the connection: consent expired (aioice closed it) or the far end did."""
PEER_CONNECTION_FAILED = "peer connection failed"
NOT_CONNECTED = "not connected"
"""A session not connected within ``BRIDGE_CONNECT_TIMEOUT`` (the watchdog's)."""
NO_RTP = "no RTP"
"""A connected session that sent no RTP for ``BRIDGE_MEDIA_TIMEOUT`` (the watchdog's)."""

REASON_LABELS = frozenset(
    {
        GENERIC,
        ABORTED,
        CLOSED,
        *STEP_REASONS.values(),
        *OPENSSL_REASONS,
        ICE_CHECKS_FAILED,
        ICE_LOST,
        CONNECTION_LOST,
        PEER_CONNECTION_FAILED,
        NOT_CONNECTED,
        NO_RTP,
    }
)
"""The reasons ``bridge_webrtc_failures_total`` names; any other is counted as ``other``
(:func:`reason_label`)."""


def ssl_error_reason(exc: BaseException) -> str:
    """OpenSSL's reason string (``no shared cipher``), not its whole error stack."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list):
        for entry in args[0]:
            if isinstance(entry, tuple) and entry and entry[-1]:
                return str(entry[-1])
        # OpenSSL queued nothing: the peer ended the handshake (a fatal alert, e.g. when it
        # found no cipher suite it could use with its certificate).
        return ABORTED
    return str(exc) or type(exc).__name__


@functools.wraps(_ORIGINAL_CONTEXT)
def create_ssl_context(self: RTCCertificate, srtp_profiles: list[Any]) -> SSL.Context:
    ctx = _ORIGINAL_CONTEXT(self, srtp_profiles)
    ctx.set_cipher_list(CIPHERS.encode())
    return ctx


@functools.wraps(_ORIGINAL_SET_STATE)
def set_state(self: RTCDtlsTransport, state: seam.State) -> None:
    if state == seam.State.FAILED and not getattr(self, "_bridge_failure", None):
        # Before aiortc sets the state (its listeners read the reason then).
        step = sys._getframe(1).f_code.co_name
        self._bridge_failure = failure_reason(sys.exc_info()[1], step)  # type: ignore[attr-defined]
    _ORIGINAL_SET_STATE(self, state)


def failure_reason(handling: BaseException | None, step: str) -> str:
    """Why DTLS failed: the error aiortc's handshake is handling as it sets the state, else the
    step that set it."""
    if isinstance(handling, SSL.Error):
        return ssl_error_reason(handling)
    if isinstance(handling, ConnectionError):
        return CLOSED
    return STEP_REASONS.get(step, GENERIC)


def reason_label(reason: str) -> str:
    """``reason`` as the failures metric's label: one of :data:`REASON_LABELS`, else
    ``other``. A DTLS reason is OpenSSL's text, or an exception's, which the peer's handshake
    chooses: as a label each new text would be a series of its own; the WARNING and the
    ``webrtc.state`` event keep the text (and a reason's detail: a time limit's seconds)."""
    return reason if reason in REASON_LABELS else "other"


def diagnose(pc: RTCPeerConnection, ever_connected: bool) -> tuple[str, str]:
    """``(stage, reason)`` for a failed peer connection: ICE first, then DTLS."""
    dtls_transports = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and dtls not in dtls_transports:
            dtls_transports.append(dtls)
    for dtls in dtls_transports:
        if dtls.transport.state == "failed":
            return "ice", ICE_LOST if ever_connected else ICE_CHECKS_FAILED
    for dtls in dtls_transports:
        if dtls.state == "failed":
            return "dtls", getattr(dtls, "_bridge_failure", None) or GENERIC
    return "webrtc", PEER_CONNECTION_FAILED
