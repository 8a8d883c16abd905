"""DTLS with every stack, and the reasons ICE and DTLS fail.

**Ciphers.** aiortc's DTLS context offers only ECDHE-ECDSA suites
(``RTCCertificate._create_ssl_context`` in aiortc 1.16; the private names are in
``rtc/aiortc_seam.py``). That is enough while the peer's
certificate is ECDSA (browsers, libwebrtc), but a peer whose certificate is RSA — GStreamer's
webrtcbin generates only RSA, as do many gateways and embedded stacks — cannot take a suite
from that list when it is the DTLS server (the bridge answers ``a=setup:active``, so it is the
client): the handshake fails with ``no shared cipher``. the seam (``rtc/aiortc_seam.py``) wraps that
method and sets :data:`CIPHERS`: aiortc's own ECDSA suites first, then the same suites with RSA
authentication. The bridge keeps aiortc's ECDSA certificate; the RSA suites only let an
RSA-certificate server be chosen. In the server role the bridge picks an ECDSA suite and
accepts any client certificate type (its fingerprint is what is checked).

**Reasons.** aiortc logs DTLS failures at DEBUG only and keeps no reason. The hooks record one
on the transport (``_bridge_failure``), from the OpenSSL error of the handshake, a fingerprint
mismatch, or no SRTP profile; ICE records the error of ``Connection.connect`` on the aioice
connection. :func:`diagnose` reads them for a failed peer connection.
"""

from __future__ import annotations

import functools
from typing import Any

from aioice import Connection
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
_ORIGINAL_HANDSHAKE = seam.ORIGINAL.do_handshake
_ORIGINAL_IDENTITY = seam.ORIGINAL.validate_peer_identity
_ORIGINAL_SRTP = seam.ORIGINAL.setup_srtp
_ORIGINAL_CONNECT = seam.ORIGINAL.connect
_ORIGINAL_SET_STATE = seam.ORIGINAL.set_state


def ssl_error_reason(exc: BaseException) -> str:
    """OpenSSL's reason string (``no shared cipher``), not its whole error stack."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list):
        for entry in args[0]:
            if isinstance(entry, tuple) and entry and entry[-1]:
                return str(entry[-1])
        # OpenSSL queued nothing: the peer ended the handshake (a fatal alert, e.g. when it
        # found no cipher suite it could use with its certificate).
        return "the peer aborted the DTLS handshake"
    return str(exc) or type(exc).__name__


class _HandshakeSpy:
    """Stands in for the ``SSL.Connection`` during the handshake to keep its error."""

    def __init__(self, real: SSL.Connection, transport: RTCDtlsTransport) -> None:
        self._real = real
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def do_handshake(self) -> None:
        try:
            self._real.do_handshake()
        except SSL.WantReadError:
            raise
        except SSL.Error as exc:
            # Before aiortc sets the state to failed (its listeners read the reason then).
            self._transport._bridge_hint = ssl_error_reason(exc)  # type: ignore[attr-defined]
            raise


@functools.wraps(_ORIGINAL_CONTEXT)
def create_ssl_context(self: RTCCertificate, srtp_profiles: list[Any]) -> SSL.Context:
    ctx = _ORIGINAL_CONTEXT(self, srtp_profiles)
    ctx.set_cipher_list(CIPHERS.encode())
    return ctx


@functools.wraps(_ORIGINAL_SET_STATE)
def set_state(self: RTCDtlsTransport, state: seam.State) -> None:
    if state == seam.State.FAILED and not getattr(self, "_bridge_failure", None):
        self._bridge_failure = getattr(self, "_bridge_hint", None) or "DTLS handshake failed"  # type: ignore[attr-defined]
    _ORIGINAL_SET_STATE(self, state)


@functools.wraps(_ORIGINAL_HANDSHAKE)
async def do_handshake(self: RTCDtlsTransport) -> None:
    real = seam.swap_ssl(self, None)
    spy = _HandshakeSpy(real, self)
    seam.swap_ssl(self, spy)
    self._bridge_hint = "the connection closed during the DTLS handshake"  # type: ignore[attr-defined]
    try:
        await _ORIGINAL_HANDSHAKE(self)
    finally:
        self._bridge_hint = None  # type: ignore[attr-defined]
        current = seam.swap_ssl(self, real)
        if current is not spy:  # aiortc replaced it meanwhile: keep theirs
            seam.swap_ssl(self, current)


@functools.wraps(_ORIGINAL_IDENTITY)
def validate_peer_identity(self: RTCDtlsTransport, remoteParameters: Any) -> None:
    self._bridge_hint = "certificate fingerprint mismatch"  # type: ignore[attr-defined]
    try:
        _ORIGINAL_IDENTITY(self, remoteParameters)
    finally:
        self._bridge_hint = None  # type: ignore[attr-defined]


@functools.wraps(_ORIGINAL_SRTP)
def setup_srtp(self: RTCDtlsTransport) -> None:
    self._bridge_hint = "no SRTP protection profile negotiated"  # type: ignore[attr-defined]
    try:
        _ORIGINAL_SRTP(self)
    finally:
        self._bridge_hint = None  # type: ignore[attr-defined]


@functools.wraps(_ORIGINAL_CONNECT)
async def connect(self: Connection) -> None:
    try:
        await _ORIGINAL_CONNECT(self)
    except ConnectionError as exc:
        self._bridge_failure = str(exc) or "ICE connectivity checks failed"  # type: ignore[attr-defined]
        raise


def diagnose(pc: RTCPeerConnection) -> tuple[str, str]:
    """``(stage, reason)`` for a failed peer connection: ICE first, then DTLS."""
    dtls_transports = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and dtls not in dtls_transports:
            dtls_transports.append(dtls)
    for dtls in dtls_transports:
        ice = dtls.transport
        if ice.state == "failed":
            why = getattr(seam.ice_connection(ice), "_bridge_failure", None)
            return "ice", why or "ICE connection lost (consent expired)"
    for dtls in dtls_transports:
        if dtls.state == "failed":
            return "dtls", getattr(dtls, "_bridge_failure", None) or "DTLS handshake failed"
    return "webrtc", "peer connection failed"
