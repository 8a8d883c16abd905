"""SDES-SRTP in SDP: the ``a=crypto`` attribute (RFC 4568) and the ``RTP/SAVP`` media line.

A plain SRTP leg (no ICE, no DTLS) learns everything it needs from the far end's SDP: where to
send (``c=`` and ``m=``, RFC 4566; RTCP at ``a=rtcp:`` (RFC 3605), on the RTP port with
``a=rtcp-mux`` (RFC 5761), else on the next port up) and the key the far end protects its
packets with (``a=crypto``). Each side sends its own key in its own SDP (RFC 4568 §6.1): we
protect with ours, and unprotect with theirs.

Only what Meta's SIP road uses is taken (its SDES SDP: one crypto line, suite
``AES_CM_128_HMAC_SHA1_80``, one inline key, no lifetime or MKI); ``AES_CM_128_HMAC_SHA1_32``
is accepted too, as libsrtp has it. Anything else is refused with :class:`~bridge.errors.BadOffer`
naming what is wrong (a SIP engine answers it with 488), never half-used.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

import pylibsrtp

from ..errors import BadOffer
from .sdp import audio_section

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
"""The crypto suites taken, best first (RFC 4568 §6.2), with their libsrtp profiles."""
DEFAULT_SUITE = "AES_CM_128_HMAC_SHA1_80"
UNPROTECTED = frozenset({"UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP"})
"""Session parameters (RFC 4568 §6.3) a line is refused for, as a key derivation rate is."""
KEY_LENGTH = 30
"""A 128-bit master key and a 112-bit master salt, concatenated (RFC 4568 §6.2.1)."""

_CRYPTO = re.compile(r"^(\d{1,9})\s+([A-Za-z0-9_]+)\s+(\S+)(?:\s+(.*))?$")


@dataclass(frozen=True)
class Crypto:
    """One ``a=crypto`` attribute: its tag, suite and master key||salt."""

    tag: int
    suite: str
    key: bytes

    @property
    def profile(self) -> int:
        """The libsrtp profile of the suite."""
        return SUITES[self.suite]

    def attribute(self) -> str:
        """The SDP line (RFC 4568 §9.1)."""
        inline = base64.b64encode(self.key).decode()
        return f"a=crypto:{self.tag} {self.suite} inline:{inline}"


def new_crypto(tag: int = 1, suite: str = DEFAULT_SUITE) -> Crypto:
    """A fresh random key (RFC 4568 §6.1: a new one per session, never reused)."""
    return Crypto(tag, suite, secrets.token_bytes(KEY_LENGTH))


def answer_crypto(offered: Crypto) -> Crypto:
    """Our key in an answer that accepts ``offered`` (the offer's line we chose): a fresh key
    under its tag and suite (RFC 4568 §7.1.2: the answer names the accepted line by its tag,
    with the same suite)."""
    return new_crypto(offered.tag, offered.suite)


def parse_crypto(value: str) -> Crypto:
    """The value of an ``a=crypto:`` line (after the colon). Raises :class:`BadOffer` for an
    unknown suite, a key that is not base64 or not 30 bytes, a lifetime below 2^31 or an MKI
    (RFC 4568 §6.1, §6.2), or a session parameter that changes how packets are protected
    (§6.3: unencrypted or unauthenticated SRTP, a key derivation rate)."""
    m = _CRYPTO.match(value.strip())
    if m is None:
        raise BadOffer(f"a=crypto is malformed: {value[:80]!r}")
    tag, suite, params = int(m.group(1)), m.group(2).upper(), m.group(3)
    if suite not in SUITES:
        raise BadOffer(f"a=crypto suite {suite[:40]} is not supported (use {DEFAULT_SUITE})")
    first = params.split(";")[0]  # one key is enough (§6.1: several are for rekeying)
    if not first.lower().startswith("inline:"):
        raise BadOffer("a=crypto key must be inline:<base64 key||salt>")
    material, *extra = first[len("inline:") :].split("|")
    try:
        key = base64.b64decode(material, validate=True)
    except (binascii.Error, ValueError):
        raise BadOffer("a=crypto key is not valid base64") from None
    if len(key) != KEY_LENGTH:
        raise BadOffer(f"a=crypto key is {len(key)} bytes; {suite} needs {KEY_LENGTH}")
    for part in extra:
        if ":" in part:  # MKI: libsrtp would need a key per index; Meta sends none
            raise BadOffer("a=crypto with an MKI is not supported")
        power = part.startswith("2^")
        lifetime = part[2:] if power else part
        if not re.fullmatch(r"[0-9]{1,40}", lifetime):
            raise BadOffer(f"a=crypto lifetime {part[:20]!r} is malformed")
        # 2^n is compared by its n, never computed: the far end's n of a billion was a
        # billion-bit number, the event loop blocked (and its memory) while it was made.
        if (int(lifetime) < 31) if power else (int(lifetime) < 2**31):
            raise BadOffer(f"a=crypto lifetime {part[:20]} is too short")  # rekeying: re-INVITE
    for param in (m.group(4) or "").split():
        name, _, value = param.partition("=")
        if name.upper() in UNPROTECTED or (name.upper() == "KDR" and value != "0"):
            # §6.3: these change how every packet is protected; run as the plain suite, what
            # one side sends the other cannot unprotect. (WSH, a hint, and FEC_*, with no FEC
            # here, change nothing.)
            raise BadOffer(f"a=crypto session parameter {param[:30]} is not supported")
    return Crypto(tag, suite, key)


@dataclass(frozen=True)
class SavpMedia:
    """What the far end's SDP says about its audio on a plain SRTP leg."""

    address: str
    port: int
    rtcp: tuple[str, int]
    """Where it takes RTCP (``AudioSection.rtcp_address``)."""
    rtcp_mux: bool
    crypto: Crypto
    """The chosen ``a=crypto`` (its key protects the far end's packets)."""
    index: int  # both as AudioSection has them
    media_lines: tuple[str, ...]


def read_savp(sdp: str) -> SavpMedia:
    """The first audio ``RTP/SAVP`` m-line's address, ports and chosen key (the best suite
    offered). Raises :class:`BadOffer` with the reason when there is none it can use."""
    audio = audio_section(sdp)
    if audio.profile.upper() != "RTP/SAVP":
        raise BadOffer(
            f"the SDP's audio is {audio.profile[:30]}, not RTP/SAVP (SDES-SRTP); "
            "DTLS-SRTP needs BRIDGE_CLOUDAPI_MEDIA=dtls"
        )
    address, port = audio.address, audio.port
    if not 0 < port < 65536:
        raise BadOffer(f"the SDP's audio port {port} is not usable")
    if not audio.cryptos:
        raise BadOffer("the SDP's audio has no a=crypto (RFC 4568) key")
    crypto = best_crypto(audio.cryptos)
    rtcp = audio.rtcp_address
    return SavpMedia(address, port, rtcp, audio.rtcp_mux, crypto, audio.index, audio.media_lines)


def best_crypto(values: list[str]) -> Crypto:
    """The usable ``a=crypto`` of the best suite among an SDP's (the values of its lines); the
    first error if none is usable. Offers list suites we do not take (FreeSWITCH's begin with
    AEAD and 256-bit ones): those are passed over, not refused."""
    usable: list[Crypto] = []
    errors: list[BadOffer] = []
    for value in values:
        try:
            usable.append(parse_crypto(value))
        except BadOffer as exc:
            errors.append(exc)
    if not usable:
        raise errors[0]
    return min(usable, key=lambda c: list(SUITES).index(c.suite))
