"""SDP (RFC 4566): the one reader and the one writer of an audio m-line.

:func:`audio_section` reads the first ``m=audio`` section (format, codecs, keys, address, RTCP,
direction) for every leg that reads one itself: a SIP trunk's (``trunks/sdp.py``) and Meta's
SDES leg's (``rtc/sdes.py``); each checks what its own leg needs of it. :func:`audio_sdp` writes
the SDP of both (aiortc writes the WebRTC legs'), and :func:`edit_audio` completes aiortc's
where it says less than we answer (the browser's Opus parameters, RED, Meta's rules).
``telephone-event`` (RFC 4733) is read here for every leg (:meth:`AudioSection.telephone_event`)
and written here (:func:`telephone_event`, :func:`payload_lines`), into our SDP or into
aiortc's, which has none.

A browser's offer, checked before aiortc sees it, and the Opus parameters of our answer to it
are ``rtc/browser_sdp.py``'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..audio.dtmf import DIGITS
from ..errors import BadOffer

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


def number(text: str) -> bool:
    """Whether ``text`` is a number of the SDP's grammar: ASCII digits (RFC 4566 §9).
    ``str.isdigit`` alone also says yes to digits ``int`` refuses (``"⁹"``): an offer's
    ``ValueError``, a 500, where the offer is at fault."""
    return text.isascii() and text.isdigit()


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
    """The audio section of an SDP (:func:`audio_section`: the first live one), with what it
    inherits from the session level."""

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

    @property
    def rtcp_address(self) -> tuple[str, int]:
        """Where the far end takes RTCP: on the RTP port with ``a=rtcp-mux`` (RFC 5761
        §5.1.1), else at its ``a=rtcp:`` port and address (RFC 3605), else on the next port
        up (RFC 3550 §11); :class:`BadOffer` when an address is not an IP address."""
        address, attr = self.address, self.rtcp
        if self.rtcp_mux:
            return address, self.port
        if attr and number(attr[0]):
            if not 0 < int(attr[0]) < 65536:
                raise BadOffer(f"the SDP's RTCP port {attr[0][:10]} is not usable")
            host = connection_address("c=" + " ".join(attr[1:4])) if len(attr) >= 4 else address
            return host, int(attr[0])
        return address, self.port + 1

    def encodings(self) -> dict[str, str]:
        """Each payload type of the m-line → its encoding name, lower-cased (``opus``,
        ``pcmu``, ``telephone-event``): its ``a=rtpmap``'s, else its static one
        (:data:`STATIC_PT`); ``""`` when neither. A format that is no number is no payload
        type (RFC 3551 §6)."""
        static = {str(pt): name for name, pt in STATIC_PT.items()}
        return {
            pt: self.rtpmaps.get(pt, static.get(pt, "")).split("/")[0].lower()
            for pt in self.formats
            if number(pt)
        }

    def payload_type(self, encoding: str) -> int | None:
        """The first payload type of the m-line whose encoding starts with ``encoding``
        (``opus/48000``): an ``a=rtpmap`` of a type the m-line does not list offers nothing
        (RFC 3264 §5.1), and an answer may list only what the offer did (§6.1)."""
        encoding = encoding.lower()
        found = (
            pt
            for pt, name in self.rtpmaps.items()
            if name.lower().startswith(encoding) and pt in self.formats
        )
        return next((int(pt) for pt in found if number(pt)), None)

    def telephone_event(self, *clocks: int, any_clock: bool = False) -> tuple[int, int] | None:
        """The m-line's ``telephone-event`` payload type and clock (RFC 4733 §7.1.1): its first
        at the first of ``clocks`` it has one at, else, with ``any_clock``, its first at any
        (a clock not written: 8000; one of 0 Hz, whose durations mean nothing: no event);
        ``None`` when none fits."""
        events: list[tuple[int, int]] = []
        for pt in self.formats:
            encoding, clock = [*self.rtpmaps.get(pt, "").lower().split("/"), ""][:2]
            rate = int(clock) if number(clock) else 8000
            if encoding == "telephone-event" and number(pt) and rate > 0:
                events.append((int(pt), rate))
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
    """The first ``m=audio`` section of ``sdp`` that is not refused (its first 400 lines), else
    the first (a refused stream's port is 0, RFC 3264 §6: a later live one is the audio);
    :class:`BadOffer` when there is none or its m-line is malformed."""
    text = sdp.decode("utf-8", "replace") if isinstance(sdp, bytes) else sdp
    media: list[str] = []
    audio: AudioSection | None = None
    session_c = session_direction = ""
    for ln in sdp_lines(text)[:400]:
        if ln.startswith("m="):
            media.append(ln)
            if (audio is None or audio.port == 0) and ln.startswith("m=audio "):
                parts = ln.split()
                if len(parts) < 4 or not number(parts[1].split("/")[0]):
                    raise BadOffer(f"the SDP's audio m-line is malformed: {ln[:60]!r}")
                audio = AudioSection(
                    int(parts[1].split("/")[0]), parts[2], parts[3:], len(media) - 1
                )
        elif not media:  # the session level: defaults of every m-line
            if ln.startswith("c="):
                session_c = ln
            elif ln.startswith("a=") and ln[2:] in DIRECTIONS:  # an attribute (RFC 3264 §5.1)
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
        elif ln.startswith("a=") and ln[2:] in DIRECTIONS:
            audio.direction = ln[2:]
    if audio is None:
        raise BadOffer("the SDP has no audio m-line")
    audio.connection = audio.connection or session_c
    audio.direction = audio.direction or session_direction or "sendrecv"
    audio.media_lines = tuple(media)
    return audio


def origin(sdp: str | bytes) -> tuple[int, int]:
    """The session id and version of ``sdp``'s ``o=`` line (RFC 4566 §5.2; :func:`audio_sdp`
    writes them): ``ValueError`` without one."""
    text = sdp.decode("ascii", "replace") if isinstance(sdp, bytes) else sdp
    for line in sdp_lines(text):
        if line.startswith("o="):
            fields = line[2:].split()
            if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                return int(fields[1]), int(fields[2])
    raise ValueError("the SDP has no o= line")


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


def edit_audio(
    sdp: str,
    lines: Sequence[str] = (),
    *,
    after: int | str | None = None,
    first: int | None = None,
    last: int | None = None,
    drop: Callable[[str], bool] | None = None,
) -> str:
    """``sdp`` (aiortc's, which says less than we answer) with its audio m-line (the first, the
    one :func:`audio_section` reads) completed: ``lines`` written after the ``a=rtpmap`` of
    payload type ``after`` (none when it has none: they describe a payload beside that one),
    payload type ``first`` moved to the front of the m-line's formats (the one the far end
    then sends, RFC 3264 §6.1) or ``last`` to its end, and every line ``drop`` says dropped,
    wherever it is (the lines written are ours: never dropped)."""
    out: list[str] = []
    todo = list(lines)  # not yet written
    rtpmap = None if after is None else f"a=rtpmap:{after} "
    in_audio = seen_audio = False
    for ln in sdp_lines(sdp):
        if drop is not None and drop(ln):
            continue
        if ln.startswith("m="):
            in_audio = not seen_audio and ln.startswith("m=audio ")
            seen_audio = seen_audio or in_audio
            if in_audio and (first is not None or last is not None):
                ln = _moved(ln, first, last)
        out.append(ln)
        if in_audio and todo and rtpmap is not None and ln.startswith(rtpmap):
            out += todo
            todo = []
    return "\r\n".join(out) + "\r\n"


def static_rtpmaps(sdp: str, names: Sequence[str]) -> str:
    """``sdp`` with an ``a=rtpmap`` at the end of its audio section for each payload type of
    its audio m-line that is the static one of a codec in ``names`` (:data:`STATIC_PT`) and
    has none: RFC 3551 §6 lets a far end leave them unwritten, and aiortc knows only the
    codecs an ``a=rtpmap`` names (it refuses the description: no codec in common)."""
    section = audio_section(sdp)
    missing = [
        f"a=rtpmap:{pt} {name}/8000"
        for name, pt in STATIC_PT.items()
        if name in names and str(pt) in section.formats and str(pt) not in section.rtpmaps
    ]
    if not missing:
        return sdp
    lines = sdp_lines(sdp)
    m_lines = [i for i, ln in enumerate(lines) if ln.startswith("m=")]
    after = m_lines[section.index + 1] if section.index + 1 < len(m_lines) else len(lines)
    return "\r\n".join([*lines[:after], *missing, *lines[after:]]) + "\r\n"


def _moved(m_line: str, first: int | None, last: int | None) -> str:
    """``m_line`` with payload type ``first`` at the front of its formats and ``last`` at the
    end (each added when it is not there)."""
    fields = m_line.split()
    front = [] if first is None else [str(first)]
    back = [] if last is None else [str(last)]
    kept = [pt for pt in fields[3:] if pt not in (*front, *back)]
    return " ".join([*fields[:3], *front, *kept, *back])
