"""SDP (RFC 4566): the one reader and the one writer of an audio m-line, and a WebRTC offer's
validation.

:func:`audio_section` reads the first ``m=audio`` section (format, codecs, keys, address, RTCP,
direction) for every leg that reads one itself: a SIP trunk's (``trunks/sdp.py``) and Meta's
SDES leg's (``rtc/sdes.py``); each checks what its own leg needs of it. :func:`audio_sdp` writes
the SDP of both (aiortc writes the WebRTC legs'). ``telephone-event`` (RFC 4733) is read here
for every leg (:meth:`AudioSection.telephone_event`) and written here (:func:`telephone_event`,
:func:`payload_lines`), into our SDP or into aiortc's, which has none.

aiortc accepts SDP it cannot answer (garbage passes ``setRemoteDescription`` and then fails in
``setLocalDescription``), so the bridge checks an offer's shape first and refuses what it cannot
serve with a precise 400: exactly one audio m-line over ``UDP/TLS/RTP/SAVPF`` (RFC 5764), a
``sha-256`` DTLS fingerprint (RFC 8122), ICE credentials (RFC 8839), and Opus among the offered
codecs (RFC 7587).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..audio.dtmf import DIGITS
from ..errors import BadOffer, TooLarge

MAX_OFFER_BYTES = 16 * 1024
_LINE = re.compile(r"^[a-z]=.*$")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
"""The ``a=`` direction attributes of RFC 3264 §5.1."""
STATIC_PT = {"PCMU": 0, "PCMA": 8, "G722": 9}
"""The static payload types of the codecs the bridge carries (RFC 3551 §6): an m-line may name
them without an ``a=rtpmap``."""


EVENT_FMTP = f"0-{len(DIGITS) - 1}"
"""The events we send and take on ``telephone-event``: the DTMF keys' codes (RFC 4733 §3.2),
the one alphabet of ``audio/dtmf.py``."""


def telephone_event(pt: int, rate: int = 8000) -> tuple[int, str, str]:
    """``telephone-event`` at ``rate`` on ``pt`` as a payload of :func:`audio_sdp` (its rtpmap
    and fmtp)."""
    return pt, f"telephone-event/{rate}", EVENT_FMTP


def payload_lines(pt: int, rtpmap: str, fmtp: str = "") -> list[str]:
    """The ``a=rtpmap`` line of payload type ``pt``, and its ``a=fmtp`` when it has one."""
    return [f"a=rtpmap:{pt} {rtpmap}", *([f"a=fmtp:{pt} {fmtp}"] if fmtp else [])]


def sdp_lines(sdp: str) -> list[str]:
    """The non-blank lines of ``sdp``, CRLF or LF, stripped."""
    return [ln.strip() for ln in sdp.replace("\r\n", "\n").split("\n") if ln.strip()]


def connection_address(line: str) -> str:
    """The address of a ``c=`` line (RFC 4566 §5.7); :class:`BadOffer` unless an IP address."""
    parts = line[2:].split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise BadOffer(f"the SDP's connection line is not IN IP4/IP6: {line[:60]!r}")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise BadOffer(
            f"the SDP's connection address is not an IP address: {address[:60]}"
        ) from None
    return address


@dataclass
class AudioSection:
    """The first ``m=audio`` section of an SDP, with what it inherits from the session level."""

    port: int
    profile: str
    """As written (``RTP/AVP``, ``RTP/SAVP``, ...)."""
    formats: list[str]
    index: int
    """Which m-line (from 0) it is."""
    connection: str = ""
    """Its ``c=`` line, else the session's (:attr:`address` reads it)."""
    rtpmaps: dict[str, str] = field(default_factory=dict)
    """Payload type → encoding as written (``opus/48000/2``)."""
    fmtps: dict[str, str] = field(default_factory=dict)
    """Payload type → its ``a=fmtp`` parameters as written (:func:`fmtp_parameters` reads them)."""
    cryptos: list[str] = field(default_factory=list)
    """Each ``a=crypto:`` value (RFC 4568), in order."""
    rtcp_mux: bool = False
    rtcp: list[str] = field(default_factory=list)
    """The ``a=rtcp:`` value's fields (RFC 3605): port, then an optional address."""
    direction: str = ""
    """Its direction, else the session's, else ``sendrecv`` (RFC 3264 §5.1)."""
    media_lines: tuple[str, ...] = ()
    """Every m-line of the SDP, in order (an answer has as many, RFC 3264 §6)."""

    @property
    def address(self) -> str:
        """The connection address (:func:`connection_address`; :class:`BadOffer` when none)."""
        if not self.connection:
            raise BadOffer("the SDP has no connection address for its audio")
        return connection_address(self.connection)

    def encodings(self) -> dict[str, str]:
        """Each payload type of the m-line → its encoding name, lower-cased (``opus``,
        ``pcmu``, ``telephone-event``): its ``a=rtpmap``'s, else its static one
        (:data:`STATIC_PT`); ``""`` when neither."""
        static = {str(pt): name for name, pt in STATIC_PT.items()}
        return {
            pt: self.rtpmaps.get(pt, static.get(pt, "")).split("/")[0].lower()
            for pt in self.formats
        }

    def payload_type(self, encoding: str) -> int | None:
        """The first payload type whose encoding starts with ``encoding`` (``opus/48000``)."""
        encoding = encoding.lower()
        found = (pt for pt, name in self.rtpmaps.items() if name.lower().startswith(encoding))
        return next((int(pt) for pt in found if pt.isdigit()), None)

    def telephone_event(self, *clocks: int, any_clock: bool = False) -> tuple[int, int] | None:
        """The m-line's ``telephone-event`` payload type and clock (RFC 4733 §7.1.1): its first
        at the first of ``clocks`` it has one at, else, with ``any_clock``, its first at any
        (a clock not written: 8000); ``None`` when none fits."""
        events: list[tuple[int, int]] = []
        for pt in self.formats:
            encoding, clock = [*self.rtpmaps.get(pt, "").lower().split("/"), ""][:2]
            if encoding == "telephone-event" and pt.isdigit():
                events.append((int(pt), int(clock) if clock.isdigit() else 8000))
        for wanted in clocks:
            found = next((e for e in events if e[1] == wanted), None)
            if found is not None:
                return found
        return events[0] if events and any_clock else None


def fmtp_parameters(value: str) -> dict[str, str]:
    """The parameters of an ``a=fmtp`` value (``key=value;…``), names lower-cased."""
    params: dict[str, str] = {}
    for part in value.split(";"):
        key, _, v = part.strip().partition("=")
        if key:
            params[key.lower()] = v.strip()
    return params


def audio_section(sdp: str | bytes) -> AudioSection:
    """The first ``m=audio`` section of ``sdp`` (its first 400 lines); :class:`BadOffer` when
    there is none or its m-line is malformed."""
    text = sdp.decode("utf-8", "replace") if isinstance(sdp, bytes) else sdp
    media: list[str] = []
    audio: AudioSection | None = None
    session_c = session_direction = ""
    for ln in sdp_lines(text)[:400]:
        if ln.startswith("m="):
            media.append(ln)
            if audio is None and ln.startswith("m=audio "):
                parts = ln.split()
                if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                    raise BadOffer(f"the SDP's audio m-line is malformed: {ln[:60]!r}")
                audio = AudioSection(
                    int(parts[1].split("/")[0]), parts[2], parts[3:], len(media) - 1
                )
        elif not media:  # the session level: defaults of every m-line
            if ln.startswith("c="):
                session_c = ln
            elif ln[2:] in DIRECTIONS:
                session_direction = ln[2:]
        elif audio is None or audio.index != len(media) - 1:
            continue  # another m-line's
        elif ln.startswith("c="):
            audio.connection = ln
        elif ln.startswith("a=rtpmap:"):
            pt, _, name = ln[len("a=rtpmap:") :].partition(" ")
            audio.rtpmaps[pt] = name
        elif ln.startswith("a=fmtp:"):
            pt, _, params = ln[len("a=fmtp:") :].partition(" ")
            audio.fmtps[pt] = params
        elif ln.startswith("a=crypto:"):
            audio.cryptos.append(ln[len("a=crypto:") :])
        elif ln == "a=rtcp-mux":
            audio.rtcp_mux = True
        elif ln.startswith("a=rtcp:"):
            audio.rtcp = ln[len("a=rtcp:") :].split()
        elif ln[2:] in DIRECTIONS:
            audio.direction = ln[2:]
    if audio is None:
        raise BadOffer("the SDP has no audio m-line")
    audio.connection = audio.connection or session_c
    audio.direction = audio.direction or session_direction or "sendrecv"
    audio.media_lines = tuple(media)
    return audio


def audio_sdp(
    address: str,
    port: int,
    payloads: Sequence[tuple[int, str, str]],
    *,
    origin: tuple[int, int],
    key: str = "",
    direction: str = "sendrecv",
    rtcp_mux: bool = True,
    rtcp_port: bool = False,
    ssrc: tuple[int, str] | None = None,
    streams: Sequence[str] = ("m=audio",),
    index: int = 0,
) -> str:
    """Our SDP of one audio stream on ``port``: ``payloads`` as (payload type, rtpmap, fmtp or
    ""), 20 ms packets, ``RTP/SAVP`` with the ``a=crypto`` line ``key`` (RFC 4568), else
    ``RTP/AVP``. ``origin``: the ``o=`` line's session id and version (RFC 4566 §5.2);
    ``rtcp_port``: an ``a=rtcp:`` naming the RTP port (RFC 3605), for a peer that does not
    multiplex but still sends to the one port we read; ``ssrc``: ``a=ssrc`` with a cname
    (RFC 5576). An answer has one m-line per offered one (``streams``, the audio at ``index``):
    the others refused, port 0 (RFC 3264 §6)."""
    family = "IP6" if ":" in address else "IP4"
    formats = " ".join(str(pt) for pt, _, _ in payloads)
    audio = [
        f"m=audio {port} {'RTP/SAVP' if key else 'RTP/AVP'} {formats}",
        f"c=IN {family} {address}",
    ]
    if rtcp_port:
        audio.append(f"a=rtcp:{port} IN {family} {address}")
    if rtcp_mux:
        audio.append("a=rtcp-mux")
    audio.append(f"a={direction}")
    for payload in payloads:
        audio += payload_lines(*payload)
    audio.append("a=ptime:20")
    if key:
        audio.append(key)
    if ssrc is not None:
        audio.append(f"a=ssrc:{ssrc[0]} cname:{ssrc[1]}")
    lines = ["v=0", f"o=- {origin[0]} {origin[1]} IN {family} {address}", "s=-", "t=0 0"]
    for i, m in enumerate(streams):
        if i == index:
            lines += audio
        else:
            fields = m.split()
            lines.append(" ".join([fields[0], "0", *fields[2:]]))
    return "\r\n".join(lines) + "\r\n"


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
    if len(parts) < 4 or not parts[1].isdigit():
        raise BadOffer(f"malformed m-line: {section[0][:80]!r}")
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
    """``sdp`` without ``a=end-of-candidates`` when it has no candidate at all.

    Such an offer comes from a peer that will be learned as peer-reflexive from its
    connectivity checks (RFC 8445 §7.3.1.3). aioice, told the remote candidates are complete
    while it has none, drops the component (it prunes components without a remote candidate)
    and then gathers nothing: the answer had no candidate (``m=audio 9``) and the call could not
    connect. Left open, the component keeps its candidates, the peer's checks create the pair,
    and a peer that never checks still ends at the leg's connect timeout."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    if any(ln.startswith("a=candidate:") for ln in lines):
        return sdp
    kept = [ln for ln in lines if ln.strip() != "a=end-of-candidates"]
    return sdp if len(kept) == len(lines) else "\r\n".join(kept)


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
    lines = sdp_lines(sdp)
    fmtp = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params)
    out: list[str] = []
    for ln in lines:
        if ln.startswith(f"a=fmtp:{pt} "):
            continue
        out.append(ln)
        if ln.startswith(f"a=rtpmap:{pt} "):
            out.append(fmtp)
    return "\r\n".join(out) + "\r\n"
