"""SDP as Meta's media servers take it (Meta's Cloud API Calling documentation, its Media section).

aiortc's SDP differs from what Meta accepts in three ways, fixed here on the text we send: it
lists sha-384 and sha-512 fingerprints besides sha-256 (Meta refuses them: 100/2494010), it
does not know ``telephone-event`` (Meta's DTMF, payload type 126), and its Opus ``fmtp``
describes 48 kHz stereo.

A number with ``audio.additional_codecs`` gets offers with G.711 besides Opus, and Meta
transcodes to whichever the business answers with. :func:`leg_codecs` is the one rule: the
call's other leg's G.711 when Meta takes it (a PBX phone: its packets then go through as they
are), else Opus; :func:`answer_codec` answers with it, our own offers list the same codecs and
:func:`answered_codec` reads which Meta picked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import BadOffer
from ...rtc.sdp import audio_section, edit_audio, fmtp_parameters, payload_lines, telephone_event

DTMF_PT = 126
"""The payload type Meta offers ``telephone-event/8000`` on (and the one our offers use)."""

OPUS_FMTP = (
    "minptime=20;useinbandfec=1;maxaveragebitrate=20000;maxplaybackrate=16000;"
    "sprop-maxcapturerate=16000"
)
"""What we ask for and describe: wideband (16 kHz) voice at about 20 kbit/s, in-band FEC."""

DEFAULT_BITRATE = 20_000
MIN_BITRATE, MAX_BITRATE = 6_000, 24_000


G711 = ("PCMU", "PCMA")


@dataclass(frozen=True)
class RemoteAudio:
    """What the far end's SDP says about the audio we send it and its DTMF."""

    opus_pt: int | None
    dtmf_pt: int | None
    bitrate: int
    fec: bool
    g711: tuple[str, ...] = ()
    """The G.711 codecs it offers (``PCMU``, ``PCMA``), in its order."""


def leg_codecs(other_leg: tuple[str, ...], meta_takes: tuple[str, ...] = G711) -> tuple[str, ...]:
    """The WhatsApp leg's codecs, preferred first (module docstring): the G.711s of
    ``other_leg`` (the codecs of the call's other leg, preferred first: a PBX phone's) that
    Meta takes (``meta_takes``: those its offer names), then ``opus`` (a browser, a model,
    the bus: everything else is coded from 16 kHz audio)."""
    g711 = [c for c in other_leg if c in G711 and c in meta_takes]
    return (*dict.fromkeys(g711), "opus")


def answer_codec(remote: RemoteAudio, other_leg: tuple[str, ...]) -> str:
    """The codec to answer Meta's offer with: :func:`leg_codecs`' first, of those offered."""
    return leg_codecs(other_leg, remote.g711)[0]


def answered_codec(answer: str, offered: tuple[str, ...]) -> str:
    """The codec Meta's answer to our offer of ``offered`` chose: the first of its audio
    m-line's that is one of them (:class:`BadOffer` when none is)."""
    wanted = {codec.lower(): codec for codec in offered}
    for name in audio_section(answer).encodings().values():
        if name in wanted:
            return wanted[name]
    raise BadOffer(f"Meta's answer has none of the codecs offered ({', '.join(offered)})")


def read_remote(sdp: str) -> RemoteAudio:
    """Opus' payload type and fmtp (bitrate cap, FEC) and telephone-event's payload type."""
    audio = audio_section(sdp)
    opus = audio.payload_type("opus/48000")
    params = fmtp_parameters(audio.fmtps.get(str(opus), ""))
    try:
        bitrate = int(params.get("maxaveragebitrate", DEFAULT_BITRATE))
    except ValueError:
        bitrate = DEFAULT_BITRATE
    bitrate = max(MIN_BITRATE, min(MAX_BITRATE, bitrate))
    g711 = tuple(name.upper() for name in audio.encodings().values() if name.upper() in G711)
    fec = params.get("useinbandfec", "1") != "0"
    event = audio.telephone_event(8000)
    return RemoteAudio(opus, None if event is None else event[0], bitrate, fec, g711)


def for_meta(sdp: str, dtmf_pt: int = DTMF_PT) -> str:
    """Our SDP (offer or answer) as Meta accepts it: only the sha-256 fingerprint, Opus with
    the wideband-voice fmtp (or the one G.711 answered) and ``ptime:20``, and
    ``telephone-event/8000`` on ``dtmf_pt``."""
    section = audio_section(sdp)
    opus = audio = section.payload_type("opus/48000")
    if audio is None:  # a G.711 answer (``answer_codec``): telephone-event follows it
        audio = section.payload_type("PCMA/8000")
        audio = section.payload_type("PCMU/8000") if audio is None else audio
    events = str(dtmf_pt)

    def rewritten_or_refused(ln: str) -> bool:
        if ln.startswith("a=fingerprint:"):
            return not ln.lower().startswith("a=fingerprint:sha-256 ")
        if opus is not None and ln.startswith(f"a=fmtp:{opus} "):
            return True  # rewritten below
        return ln.startswith(("a=ptime:", f"a=rtpmap:{events} ", f"a=fmtp:{events} "))

    ours = [f"a=fmtp:{opus} {OPUS_FMTP}"] if opus is not None else []
    ours += [*payload_lines(*telephone_event(dtmf_pt)), "a=ptime:20"]
    out = edit_audio(sdp, ours, after=audio, last=dtmf_pt, drop=rewritten_or_refused)
    if "a=fingerprint:sha-256 " not in out:
        raise ValueError("aiortc's SDP has no sha-256 fingerprint")
    return out
