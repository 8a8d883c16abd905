"""WhatsApp's Opus forwarded untouched to a phone on an Opus trunk, and the phone's to WhatsApp
(issue 48): what ``rtc/passthrough.py`` does for a browser, for a trunk leg. The same for G.711
when Meta offered it (``audio.additional_codecs``) and the WhatsApp leg was answered in the
phone's G.711: no codec work at all on either leg while nothing else is heard.

On a Cloud API call whose only participant is a phone that speaks Opus (RFC 7587) and is the agent,
nothing needs WhatsApp's audio re-encoded for the phone, nor the phone's for WhatsApp: the packets
go through as they arrived, with the sender's in-band FEC, and neither leg pays for an encoder. The
policy (who may be forwarded to) is ``calls/forwarding.py``'s; the mechanics are
:class:`~bridge.trunks.media.TrunkMedia`'s ``offer`` (down: WhatsApp → phone, numbered into the
trunk leg's own RTP stream as a track's are, ``rtc/forward_run.py``, RFC 3550 §5.1, so a loss before
the bridge stays a gap the phone's decoder rebuilds from FEC) and the WhatsApp leg's ``PassThrough``
(up). Both directions are still decoded for the conference (recording, forks, meters) while
something on the bus reads them. Only packets of one 20 ms frame are forwarded: what each leg's peer
was told to expect (``minptime=20``, Meta's 20 ms ptime).
"""

from __future__ import annotations

from ..audio.phone_codecs import NARROW_SAMPLES


def one_20ms_packet(codec: str, payload: bytes) -> bool:
    """Whether a packet of ``codec`` carries exactly 20 ms: Opus by its TOC byte, G.711 by
    its length; other codecs are never forwarded."""
    if codec == "opus":
        return one_20ms_frame(payload)
    return codec in ("PCMU", "PCMA") and len(payload) == NARROW_SAMPLES  # a byte a sample


def one_20ms_frame(payload: bytes) -> bool:
    """Whether an Opus packet holds one 20 ms frame, by its TOC byte (RFC 6716 §3.1): frame
    count code 0, and a configuration whose frame size is 20 ms (SILK 1, 5, 9; hybrid 13, 15;
    CELT 19, 23, 27, 31)."""
    if not payload or payload[0] & 0x03:
        return False
    config = payload[0] >> 3
    if config < 12:
        return config % 4 == 1
    if config < 16:
        return config % 2 == 1
    return config % 4 == 3
