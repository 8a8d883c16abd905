"""RED (RFC 2198) audio redundancy with browsers: each packet also carries the previous frame.

Chromium offers ``red/48000/2`` over Opus; answered with RED first, it sends every frame again
inside the next packet, so a lost packet costs nothing and a burst of two costs one frame —
better than in-band FEC's lower-quality copy. aiortc knows no RED, so the answer is rewritten
here, and the leg's RTP session splits RED packets: the primary goes on as plain Opus (counted
in RTCP, so the browser's loss reports stay right), the redundant block to the receiver, which
uses it only for a frame it lacks.

The other way, :class:`RedWrapper` builds RED packets for such a browser while the downlink's
loss calls for it (``rtc/protection.py``), each block exactly the Opus payload sent before. A
clean link gets plain Opus: both payload types were negotiated, so RED costs nothing until a
loss is reported.
"""

from __future__ import annotations

from collections import deque

from .rtpsend import OPUS_FRAME_TICKS
from .sdp import audio_section, edit_audio, payload_lines


def offered_red(offer: str) -> tuple[int, int] | None:
    """(RED payload type, Opus payload type) when the offer's audio has RED over Opus."""
    audio = audio_section(offer)
    opus, red = audio.payload_type("opus/48000"), audio.payload_type("red/48000")
    if opus is None or red is None:
        return None
    blocks = audio.fmtps.get(str(red), "").strip().split("/")
    return (red, opus) if all(b == str(opus) for b in blocks) else None


def add_red(answer: str, red: int, opus: int) -> str:
    """``answer`` with RED listed first on its audio m-line (the browser then sends RED)."""
    return edit_audio(
        answer, payload_lines(red, "red/48000/2", f"{opus}/{opus}"), after=opus, first=red
    )


def split_red(payload: bytes) -> list[tuple[int, int, bytes]] | None:
    """RFC 2198 §3: the blocks of a RED payload as (timestamp offset, payload type, data),
    oldest first, the primary (offset 0) last; ``None`` if malformed."""
    headers: list[tuple[int, int, int]] = []
    i = 0
    while True:
        if i >= len(payload):
            return None
        first = payload[i]
        if not first & 0x80:  # the last header: one byte, the primary's payload type
            headers.append((first & 0x7F, 0, -1))
            i += 1
            break
        if i + 4 > len(payload):
            return None
        word = int.from_bytes(payload[i + 1 : i + 4], "big")
        headers.append((first & 0x7F, word >> 10, word & 0x3FF))
        i += 4
    blocks = []
    for pt, offset, length in headers:
        if length < 0:
            length = len(payload) - i
        if length < 0 or i + length > len(payload):
            return None
        blocks.append((offset, pt, payload[i : i + length]))
        i += length
    return blocks


MAX_BLOCK = 0x3FF
"""A redundant block's length has 10 bits (RFC 2198 §3)."""
MAX_OFFSET = 0x3FFF
"""A redundant block's timestamp offset has 14 bits."""


def join_red(redundant: list[tuple[int, bytes]], primary: bytes, payload_type: int) -> bytes:
    """RFC 2198 §3: a RED payload of ``redundant`` blocks (timestamp offset, data), oldest
    first, then ``primary``; every block of ``payload_type``."""
    headers = b"".join(
        bytes([0x80 | payload_type]) + ((offset << 10) | len(data)).to_bytes(3, "big")
        for offset, data in redundant
    )
    return headers + bytes([payload_type]) + b"".join(d for _, d in redundant) + primary


class RedWrapper:
    """Wraps each Opus payload sent with the previous one or two (``depth``) into RED."""

    def __init__(self, red: int, opus: int, frame_ticks: int = OPUS_FRAME_TICKS) -> None:
        self.red = red
        self.opus = opus
        self.frame_ticks = frame_ticks
        self._sent: deque[tuple[int, bytes]] = deque(maxlen=2)
        self.packets = 0
        """RED packets built."""
        self.redundant_octets = 0
        """Octets the copies (and RED headers) added."""

    def wrap(self, payload: bytes, pts: int, depth: int) -> tuple[bytes, int | None]:
        """The payload to send for the Opus ``payload`` at RTP time ``pts`` and its payload
        type (``None``: plain Opus, when ``depth`` is 0 or nothing fits before it)."""
        blocks = []
        if depth > 0:
            for old_pts, old in self._sent:
                offset = (pts - old_pts) & 0xFFFFFFFF
                if (
                    0 < offset <= min(depth * self.frame_ticks, MAX_OFFSET)
                    and len(old) <= MAX_BLOCK
                ):
                    blocks.append((offset, old))
        newest = self._sent[-1][0] if self._sent else None
        if newest is None or 0 < (pts - newest) & 0xFFFFFFFF < 0x80000000:
            self._sent.append((pts & 0xFFFFFFFF, payload))  # not an older, reordered packet
        if not blocks:
            return payload, None
        out = join_red(blocks, payload, self.opus)
        self.packets += 1
        self.redundant_octets += len(out) - len(payload)
        return out, self.red


class RedStats:
    def __init__(self) -> None:
        self.packets = 0
        self.malformed = 0
