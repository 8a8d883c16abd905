"""Hostile UDP cannot hurt a call: a filter in front of aioice and aiortc.

Anyone who can reach a media port can send it anything. Left alone, aioice hands every
datagram that is not STUN to aiortc's DTLS transport, whatever its source, and aiortc's
receive loop ends the transport on the first one it cannot handle (an empty datagram: an
``IndexError``; a 1600-byte RTP-looking one: libsrtp's "packet is too long"); a malformed STUN
message raises inside the datagram callback. the seam (``rtc/aiortc_seam.py``) puts a filter in
front of ``aioice.ice.StunProtocol.datagram_received`` (host and relayed candidates both go
through it). A datagram is dropped — counted in ``bridge_udp_dropped_total{reason}``, never
raised — when:

* it is empty (``empty``);
* once the ICE pair of its component is selected, it is not STUN and comes from none of the
  peer's candidates paired with that socket (``unknown_source``);
* its first byte puts it in none of the RFC 7983 ranges the bridge speaks — STUN 0-3, DTLS
  20-63, RTP/RTCP 128-191 (``unknown_type``);
* it does not parse as what its first byte says: ``stun_malformed``, ``dtls_malformed``,
  ``rtp_malformed`` (too short, a header longer than the datagram, or longer than libsrtp's
  1500-byte buffer);
* it is a STUN request without a valid MESSAGE-INTEGRITY under our ICE password (RFC 8445
  §7.3; ``stun_unauthenticated``), a response to no transaction of ours (``stun_unexpected``),
  or an indication (``stun_indication``: aioice has no use for them on this socket).

What passes and is not STUN (first byte above 3) goes straight to the ICE connection's
``data_received``, where aioice would hand it after trying to parse it as STUN (an exception
per media packet; and an RTP packet whose sequence number happens to equal its length less 20
would parse as a STUN header).

Behind it, SRTP and SRTCP go to the leg's own receive step (``rtc/dtls_srtp.py``), which
counts what it cannot unprotect or parse and never raises; aiortc's DTLS receive loop sees
only DTLS records, whose errors it keeps to itself. aioice's TURN client callback drops what it
cannot parse (``turn_malformed``).
"""

from __future__ import annotations

import functools
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from . import aiortc_seam as seam
from .counters import drop

log = logging.getLogger(__name__)

MAX_SRTP = 1500
"""libsrtp's buffer in pylibsrtp: longer (S)RTP raises ``ValueError`` inside aiortc."""

_DTLS_TYPES = {20, 21, 22, 23, 24, 25}  # ChangeCipherSpec, Alert, Handshake, Data, heartbeat, ACK
_DTLS_VERSIONS = {b"\xfe\xff", b"\xfe\xfd", b"\xfe\xfc"}


def _dtls_ok(data: bytes) -> bool:
    """Every record of the datagram has a sane header and fits in it."""
    pos, n = 0, len(data)
    while pos < n:
        first = data[pos]
        if first in _DTLS_TYPES:  # DTLSPlaintext / DTLSCiphertext 1.2 header, 13 bytes
            if n - pos < 13 or data[pos + 1 : pos + 3] not in _DTLS_VERSIONS:
                return False
            length = struct.unpack_from("!H", data, pos + 11)[0]
            pos += 13 + length
            if pos > n:
                return False
        elif 32 <= first <= 63:  # DTLS 1.3 unified header: 001CSLEE
            if first & 0x10:
                return True  # connection ID of a length we do not know: leave it to OpenSSL
            head = 1 + (2 if first & 0x08 else 1)
            if not first & 0x04:
                return n - pos > head  # the record runs to the end of the datagram
            if n - pos < head + 2:
                return False
            pos += head + 2 + struct.unpack_from("!H", data, pos + head)[0]
            if pos > n:
                return False
        else:
            return False
    return True


def _rtp_ok(data: bytes) -> bool:
    n = len(data)
    if n > MAX_SRTP:
        return False
    if 192 <= data[1] <= 223:  # RTCP (RFC 5761 §4): header and SSRC, SRTCP index
        return n >= 12
    if n < 12:
        return False
    head = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if n < head + 4:
            return False
        head += 4 + 4 * struct.unpack_from("!H", data, head + 2)[0]
    return n >= head


def _stun_verdict(protocol: Any, data: bytes) -> str | None:
    try:
        message = seam.stun.parse_message(data)
    except Exception:  # ValueError, struct.error, KeyError, ...: all malformed
        return "stun_malformed"
    cls = message.message_class
    if cls == seam.stun.Class.REQUEST:
        connection = protocol.receiver
        if "USERNAME" not in message.attributes or not message.check_message_integrity(
            connection.local_password.encode("utf8")
        ):
            return "stun_unauthenticated"
        return None
    if cls in (seam.stun.Class.RESPONSE, seam.stun.Class.ERROR):
        if message.transaction_id not in protocol.transactions:
            return "stun_unexpected"
        return None  # aioice's transaction checks the response's integrity
    return "stun_indication"


def _from_a_peer_candidate(protocol: Any, source: tuple[Any, Any]) -> bool:
    """Whether ``source`` is one of the peer's candidates (aioice's ``remote_candidates``).

    Media may arrive on any pair the peer found valid (RFC 8445 §12.1), and the two agents can
    settle on different pairs — the browser on its relay to our host candidate, we on our
    relay to its relay — before our own check of the peer's pair has come back. A third party
    is still refused: its address is none of the peer's candidates (signalled, or learnt as
    peer-reflexive from a check that carried our ICE password: aioice adds those too)."""
    return any((c.host, c.port) == source for c in protocol.receiver.remote_candidates)


def verdict(protocol: Any, data: bytes, addr: tuple[Any, ...]) -> str | None:
    """Why ``data`` from ``addr`` must be dropped, or ``None`` to let aioice have it."""
    if not data:
        return "empty"
    first = data[0]
    if first < 4:
        return _stun_verdict(protocol, data)
    pair = seam.nominated(protocol.receiver).get(protocol.local_candidate.component)
    source = (addr[0], addr[1])
    if pair is not None and (pair.protocol is not protocol or pair.remote_addr != source):
        if not _from_a_peer_candidate(protocol, source):
            return "unknown_source"
    if 20 <= first <= 63:
        return None if _dtls_ok(data) else "dtls_malformed"
    if 128 <= first <= 191:
        return None if _rtp_ok(data) else "rtp_malformed"
    return "unknown_type"


_ORIGINAL_STUN = seam.ORIGINAL.stun_datagram_received
_ORIGINAL_TURN = seam.ORIGINAL.turn_datagram_received


@functools.wraps(_ORIGINAL_STUN)
def guarded_datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
    """A datagram from the loop's transport (no stamp of the socket's): its arrival is now."""
    if not isinstance(data, bytes):
        data = data.encode()
    guarded_datagram_arrived(self, data, addr, time.monotonic())


def timed_receiver(protocol: Any) -> Callable[[bytes, Any, float], None]:
    """``protocol``'s (aioice's ``StunProtocol``) guarded receive path, taking each datagram
    with its arrival: a polled socket's handler (``rtc/udp_poll.py``, ``rtc/ice.py``)."""
    return functools.partial(guarded_datagram_arrived, protocol)


def guarded_datagram_arrived(self: Any, data: bytes, addr: tuple[Any, ...], at: float) -> None:
    """The guard (module docstring), then STUN to aioice and the rest to the connection, with
    ``at``, its arrival, to the leg that took its datagrams (``rtc/dtls_srtp.py``)."""
    try:
        reason = verdict(self, data, addr)
    except Exception:
        log.debug("UDP guard could not classify a datagram from %s", addr, exc_info=True)
        reason = "unclassified"
    if reason is not None:
        drop(reason)
        return
    try:
        if data[0] > 3:  # not STUN (RFC 7983): straight on, without aioice's try at parsing it
            taken = seam.taken_datagrams(self.receiver)
            if taken is not None:
                taken(data, self.local_candidate.component, at)
            else:
                self.receiver.data_received(data, self.local_candidate.component)
        else:
            _ORIGINAL_STUN(self, data, addr)
    except Exception:
        drop("ice_error")
        log.debug("aioice failed on a datagram from %s", addr, exc_info=True)


@functools.wraps(_ORIGINAL_TURN)
def guarded_turn_datagram_received(self: Any, data: bytes | str, addr: tuple[str, int]) -> None:
    if not data:
        drop("empty")
        return
    try:
        _ORIGINAL_TURN(self, data, addr)
    except Exception:
        drop("turn_malformed")
        log.debug("TURN client failed on a datagram from %s", addr, exc_info=True)
