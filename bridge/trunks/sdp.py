"""A trunk leg's SDP (RFC 4566, offer/answer RFC 3264): what we offer a PBX and what we read
from its answer (or its offer, when the PBX calls in).

Audio only: G.711 µ-law (PT 0) and A-law (PT 8) at 8 kHz, the codecs every PBX has, G.722
(PT 9, ``G722/8000``: its RTP clock is 8 kHz though it samples at 16 kHz, RFC 3551 §4.5.2) and
Opus (PT 111, RFC 7587) when the trunk lists them, and ``telephone-event`` (RFC 4733) for keys
at the codec's RTP clock (8 kHz; 48 kHz beside Opus). ``RTP/AVP`` in the clear, or
``RTP/SAVP`` with an ``a=crypto`` key (SDES, RFC 4568) when the trunk says ``"srtp": "sdes"``.
RTCP is offered on the RTP port (``a=rtcp-mux``, RFC 5761), and answered so when offered.
The first codec of the answer's m-line that we offered is the one both sides send (RFC 3264
§6.1). Anything we cannot use is a :class:`~bridge.errors.BadOffer` naming it (a ``488`` on the
SIP side).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass

from ..errors import BadOffer
from ..rtc.sdes import Crypto, best_crypto
from ..rtc.sdp import STATIC_PT, audio_sdp, audio_section, telephone_event

OURS = {**STATIC_PT, "opus": 111}
"""The payload types we offer each codec we carry with (Opus dynamic, RFC 7587)."""
RTPMAP = {"PCMU": "PCMU/8000", "PCMA": "PCMA/8000", "G722": "G722/8000", "opus": "opus/48000/2"}
FMTP = {"opus": "minptime=20;useinbandfec=1"}
EVENT_PT = 101
"""Our dynamic payload type for ``telephone-event/8000`` (and 102 for ``/48000`` with Opus)."""
MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
"""Our answer's direction for the offer's (RFC 3264 §6.1)."""


@dataclass(frozen=True)
class Remote:
    """What the far end's SDP says of its audio."""

    address: str
    port: int
    rtcp: tuple[str, int]
    """Where it takes RTCP (``AudioSection.rtcp_address``; the leg sends none without
    :attr:`rtcp_mux`)."""
    codec: str
    """``PCMU``, ``PCMA``, ``G722`` or ``opus``: what both sides send."""
    pt: int
    event_pt: int | None
    """Its ``telephone-event/8000`` payload type (``None``: it takes no RFC 4733 keys)."""
    crypto: Crypto | None
    """Its SDES key (``RTP/SAVP``), else ``None`` (plain RTP)."""
    direction: str = "sendrecv"
    event_rate: int = 8000
    """The clock of its ``telephone-event``."""
    rtcp_mux: bool = False
    """It puts RTCP on the RTP port (``a=rtcp-mux``, RFC 5761 §5.1.1)."""
    media_lines: tuple[str, ...] = ()
    """Every m-line of its SDP, in order (a video phone's ``m=video`` beside the audio)."""
    index: int = 0
    """Where the audio is among them: an answer has one m-line per offered one, the others
    refused (RFC 3264 §6)."""


def offered_direction(remote: Remote) -> str:
    """The direction of the far end's SDP; a connection address of ``0.0.0.0`` (or ``::``) says
    it receives nothing (RFC 2543 hold, RFC 3264 §8.4)."""
    if ipaddress.ip_address(remote.address).is_unspecified:
        return {"sendrecv": "sendonly", "recvonly": "inactive"}.get(
            remote.direction, remote.direction
        )
    return remote.direction


def we_send(remote: Remote) -> bool:
    """Whether the far end's SDP (its offer or its answer) takes our media (RFC 3264 §6.1)."""
    return offered_direction(remote) in ("sendrecv", "recvonly")


def offer(
    address: str,
    port: int,
    codecs: tuple[str, ...],
    crypto: Crypto | None,
    *,
    answer_to: Remote | None = None,
    origin: tuple[int, int] | None = None,
    direction: str = "",
) -> bytes:
    """Our SDP: an offer of ``codecs`` (those we carry), or the answer choosing ``answer_to``'s
    codec. ``origin``: the o= line's session id and version (RFC 4566 §5.2; a new session's
    are random); ``direction``: our ``a=`` direction, by default ``sendrecv`` in an offer and
    the offer's mirrored in an answer (RFC 3264 §6.1: a held call's first INVITE too)."""
    if not direction:
        direction = MIRROR[offered_direction(answer_to)] if answer_to else "sendrecv"
    events: list[tuple[int, int]] = []
    if answer_to is not None:
        chosen = [(answer_to.pt, answer_to.codec)]
        if answer_to.event_pt is not None:
            events = [(answer_to.event_pt, answer_to.event_rate)]
    else:
        chosen = [(OURS[c], c) for c in codecs if c in OURS]
        events = [(EVENT_PT, 8000)] + ([(EVENT_PT + 1, 48000)] if "opus" in codecs else [])
    if not chosen:
        raise BadOffer("none of the trunk's codecs is carried (opus, G722, PCMU, PCMA)")
    payloads = [(pt, RTPMAP[codec], FMTP.get(codec, "")) for pt, codec in chosen]
    payloads += [telephone_event(pt, rate) for pt, rate in events]
    # RTCP on the RTP port, the leg's one socket: offered, and kept in the answer when the
    # offer had it (RFC 5761 §5.1.1). Without it the leg sends no RTCP.
    return audio_sdp(
        address,
        port,
        payloads,
        origin=origin or (secrets.randbelow(2**31),) * 2,
        key=crypto.attribute() if crypto is not None else "",
        direction=direction,
        rtcp_mux=answer_to is None or answer_to.rtcp_mux,
        streams=answer_to.media_lines
        if answer_to is not None and answer_to.media_lines
        else ("m=audio",),
        index=answer_to.index if answer_to is not None else 0,
    ).encode()


def read(sdp: bytes | str, codecs: tuple[str, ...], *, srtp: bool) -> Remote:
    """The far end's audio: its address, port, the codec to send (the first of its m-line
    that ``codecs`` has), its ``telephone-event`` and its key. :class:`BadOffer` otherwise."""
    audio = audio_section(sdp)
    port, profile = audio.port, audio.profile.upper()
    if not 0 <= port < 65536:
        raise BadOffer(f"the SDP's audio port {port} is not usable")
    if srtp != (profile == "RTP/SAVP"):
        want = "RTP/SAVP (the trunk says srtp: sdes)" if srtp else "RTP/AVP (srtp: off)"
        raise BadOffer(f"the SDP's audio is {profile[:20]}, not {want}")
    crypto = None
    if srtp:
        if not audio.cryptos:
            raise BadOffer("the SDP's audio has no a=crypto (RFC 4568) key")
        crypto = best_crypto(audio.cryptos)
    names = audio.encodings()
    wanted = {c.lower(): c for c in codecs if c in OURS}
    chosen = next(((int(pt), wanted[n]) for pt, n in names.items() if n in wanted), None)
    if chosen is None:
        offered = ", ".join(n or pt for pt, n in names.items())[:80]
        raise BadOffer(
            f"no common codec: the far end has {offered}; we carry {list(wanted.values())}"
        )
    # The event at the codec's clock (RFC 4733 §2.1), else any (baresip pairs 8 kHz events
    # with Opus): its durations are read and written at its own clock.
    found = audio.telephone_event(48_000 if chosen[1] == "opus" else 8000, any_clock=True)
    event, event_rate = found or (None, 8000)
    return Remote(
        audio.address,
        port,
        audio.rtcp_address,
        chosen[1],
        chosen[0],
        event,
        crypto,
        audio.direction,
        event_rate,
        audio.rtcp_mux,
        audio.media_lines,
        audio.index,
    )
