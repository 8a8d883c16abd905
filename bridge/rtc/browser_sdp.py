"""A browser's SDP: its offer, checked before aiortc sees it, and the Opus parameters of our
answer (the audio m-line itself is read and written by ``rtc/sdp.py``).

aiortc accepts SDP it cannot answer (garbage passes ``setRemoteDescription`` and then fails in
``setLocalDescription``), so the bridge checks an offer's shape first and refuses what it cannot
serve with a precise 400: exactly one audio m-line, not rejected (its port not 0, RFC 3264 §6),
over ``UDP/TLS/RTP/SAVPF`` (RFC 5764), a ``sha-256`` DTLS fingerprint (RFC 8122), ICE
credentials (RFC 8839), and Opus among the offered codecs (RFC 7587).
"""

from __future__ import annotations

import re

from ..errors import BadOffer, TooLarge
from .sdp import audio_section, edit_audio, fmtp_parameters, number

MAX_OFFER_BYTES = 16 * 1024
_LINE = re.compile(r"^[a-z]=.*$")


def validate_offer(sdp: str) -> None:
    """Raise :class:`BadOffer` (or :class:`TooLarge`) unless the bridge can answer ``sdp``."""
    if len(sdp.encode("utf-8", "surrogateescape")) > MAX_OFFER_BYTES:
        raise TooLarge(f"the SDP offer is larger than {MAX_OFFER_BYTES} bytes")
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0] != "v=0":
        raise BadOffer("the SDP offer must start with 'v=0'")
    for ln in lines:
        if not _LINE.match(ln) or "\x00" in ln:
            raise BadOffer(f"malformed SDP line: {ln[:60]!r}")
    session: list[str] = []
    media: list[list[str]] = []
    for ln in lines:
        if ln.startswith("m="):
            media.append([ln])
        elif media:
            media[-1].append(ln)
        else:
            session.append(ln)
    kinds = [m[0][2:].split(" ", 1)[0] for m in media]
    if kinds.count("audio") != 1 or len(kinds) != 1:
        others = sorted(set(k for k in kinds if k != "audio"))
        detail = f" (it has {', '.join(others)})" if others else ""
        raise BadOffer(
            "the bridge carries audio only: the offer must have exactly one audio m-line and "
            f"no video or data channel{detail}",
            code="unsupported_media",
        )
    section = media[0]
    parts = section[0][2:].split()
    if len(parts) < 4 or not number(parts[1]):
        raise BadOffer(f"malformed m-line: {section[0][:80]!r}")
    if int(parts[1]) == 0:  # RFC 3264 §6: port zero rejects the stream; nothing would flow
        raise BadOffer(
            "the offer's audio m-line is rejected (port 0): there would be no audio to carry"
        )
    if parts[2] != "UDP/TLS/RTP/SAVPF":
        raise BadOffer(
            f"the audio m-line uses {parts[2][:40]!r}; WebRTC needs UDP/TLS/RTP/SAVPF (DTLS-SRTP)"
        )
    attrs = session + section
    fingerprints = [a for a in attrs if a.startswith("a=fingerprint:")]
    if not any(a[len("a=fingerprint:") :].lower().startswith("sha-256 ") for a in fingerprints):
        raise BadOffer("the offer has no sha-256 DTLS fingerprint (a=fingerprint:sha-256 …)")
    if not any(a.startswith("a=ice-ufrag:") and len(a) > 12 for a in attrs) or not any(
        a.startswith("a=ice-pwd:") and len(a) > 10 for a in attrs
    ):
        raise BadOffer("the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)")
    payloads = set(parts[3:])
    opus = [
        a
        for a in section
        if a.lower().startswith("a=rtpmap:")
        and a.split(":", 1)[1].split(" ", 1)[0] in payloads
        and " opus/48000" in a.lower()
    ]
    if not opus:
        raise BadOffer(
            "the offer has no Opus (opus/48000/2); the bridge speaks Opus only",
            code="no_common_codec",
        )


def open_candidates(sdp: str) -> str:
    """``sdp`` without its mDNS candidates, and without ``a=end-of-candidates`` when it has no
    candidate left.

    A browser that hides its host addresses offers them as mDNS names (``<uuid>.local``,
    draft-ietf-mmusic-mdns-ice-candidates): only a host on the browser's own link can resolve
    them, and aioice would try for a second at every offer (multicast from the bridge, the
    answer held meanwhile) and then drop them. They are dropped here at once, as §3.2.1 lets an
    agent that does not resolve them; the browser is learned from its checks instead.

    An offer with no candidate comes from a peer that will be learned as peer-reflexive from
    its connectivity checks (RFC 8445 §7.3.1.3). aioice, told the remote candidates are
    complete while it has none, drops the component (it prunes components without a remote
    candidate) and then gathers nothing: the answer had no candidate (``m=audio 9``) and the
    call could not connect. Left open, the component keeps its candidates, the peer's checks
    create the pair, and a peer that never checks still ends at the leg's connect timeout."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    kept = [ln for ln in lines if not _mdns_candidate(ln)]
    if not any(ln.startswith("a=candidate:") for ln in kept):
        kept = [ln for ln in kept if ln.strip() != "a=end-of-candidates"]
    return sdp if len(kept) == len(lines) else "\r\n".join(kept)


def check_pairs(offer: str, answer: str) -> None:
    """:class:`BadOffer` when no candidate of the ``offer`` can pair with one of the ``answer``
    (ours, gathered): a pair joins two candidates of one transport and address family (RFC
    8445 §6.1.2.2), and the bridge's ICE runs over UDP only (no ICE-TCP, RFC 6544). aioice
    would fail such a session at once, after a 200; the browser is told why instead. An offer
    with no candidate, or with mDNS ones, is left to its checks (:func:`open_candidates`)."""
    theirs = [ln.split() for ln in offer.splitlines() if ln.startswith("a=candidate:")]
    if not theirs or any(len(f) < 5 or _mdns_candidate(" ".join(f)) for f in theirs):
        return
    ours = {
        _family(f[4])
        for f in (ln.split() for ln in answer.splitlines())
        if f and f[0].startswith("a=candidate:") and len(f) > 4
    }
    udp = [f for f in theirs if f[2].lower() == "udp"]
    if any(_family(f[4]) in ours for f in udp):
        return
    if not udp:
        raise BadOffer(
            "the offer's candidates are all TCP: the bridge's ICE runs over UDP (offer UDP "
            "candidates, or relay candidates through a TURN server)"
        )
    families = " and ".join(sorted({_family(f[4]) for f in udp}))
    gathered = " and ".join(sorted(ours)) or "none"
    raise BadOffer(
        f"the offer's candidates are {families} only and the bridge's are {gathered}: no "
        "pair can form (a TURN server's relay candidates would reach it)"
    )


def _family(address: str) -> str:
    return "IPv6" if ":" in address else "IPv4"


def _mdns_candidate(line: str) -> bool:
    """Whether ``line`` is an ``a=candidate`` whose address is an mDNS name (RFC 8839 §5.1:
    the fifth field is the connection address)."""
    if not line.startswith("a=candidate:"):
        return False
    fields = line.split()
    return len(fields) > 4 and fields[4].rstrip(".").lower().endswith(".local")


OPUS_ANSWER_FMTP = (
    ("minptime", "10"),
    ("useinbandfec", "1"),
    ("stereo", "0"),
    ("sprop-stereo", "0"),
    ("maxplaybackrate", "16000"),
    ("sprop-maxcapturerate", "16000"),
    ("maxaveragebitrate", "32000"),
)
"""The Opus parameters of the bridge's answer (RFC 7587 §6.1). aiortc answers with none, and
then every browser keeps its in-band FEC off (``useinbandfec`` defaults to 0), so a lost packet
could only be concealed. The rest says what the bus is: mono, 16 kHz (the browser's encoder
then spends its bits on wideband voice), and asks for 32 kbit/s: told 16 kHz alone, Chromium
drops to 20 kbit/s, where libopus has no room left for FEC data (RFC 6716 §2.1.7; the
Chromium test saw none at 15 % loss)."""


def opus_parameters(sdp: str) -> dict[str, str]:
    """The Opus ``a=fmtp`` parameters of ``sdp``'s audio (names lower-cased; empty when none)."""
    audio = audio_section(sdp)
    return fmtp_parameters(audio.fmtps.get(str(audio.payload_type("opus/48000")), ""))


def answer_fmtp(
    max_bitrate: int | None = None, *, dtx: bool = False
) -> tuple[tuple[str, str], ...]:
    """:data:`OPUS_ANSWER_FMTP`, asking for at most ``max_bitrate`` when given (a Cloud API
    call: what Meta takes, so the browser's packets can go to it untouched), and with ``dtx``
    for DTX (``usedtx=1``, RFC 7587 §6.1: the browser then sends almost nothing while its
    microphone is silent, ``audio/dtx.py``)."""
    params: tuple[tuple[str, str], ...] = OPUS_ANSWER_FMTP
    if max_bitrate is not None:
        params = tuple((k, str(max_bitrate) if k == "maxaveragebitrate" else v) for k, v in params)
    return (*params, ("usedtx", "1")) if dtx else params


def asks_for_dtx(sdp: str) -> bool:
    """The offer's Opus parameters say its decoder prefers DTX (``usedtx=1``, RFC 7587 §6.1)."""
    return opus_parameters(sdp).get("usedtx") == "1"


def with_opus_fmtp(sdp: str, params: tuple[tuple[str, str], ...] = OPUS_ANSWER_FMTP) -> str:
    """``sdp`` with its Opus ``a=fmtp`` line replaced by ``params`` (added after the rtpmap)."""
    pt = audio_section(sdp).payload_type("opus/48000")
    if pt is None:
        return sdp
    fmtp = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params)
    return edit_audio(sdp, [fmtp], after=pt, drop=lambda ln: ln.startswith(f"a=fmtp:{pt} "))
