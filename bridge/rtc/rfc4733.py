"""RFC 4733 ``telephone-event`` on a leg's RTP session, both ways (aiortc has no such codec).

* the leg's RTP session (``rtc/rtp_session.py``) takes packets of the telephone-event payload
  type and feeds them to a :class:`DtmfDetector` (one report per key press);
* :class:`KeyPresses` is the one packetizer: the presses a sender has yet to send, as
  telephone-event payloads one 20 ms tick at a time (sans-IO: the sender asks each tick). Each
  press is a packet every 20 ms with one RTP timestamp (the audio's timestamp as the press
  begins, libwebrtc's choice), the marker bit on the first, a growing duration in the
  telephone-event clock, and the end packet sent three times in its tick (RFC 4733
  §2.5.1.4, as libwebrtc does). A trunk's phone leg asks it on the media clock
  (``trunks/media.py``); :class:`EventSender` drives it for a WebRTC or SDES leg's lean
  sender, writing through the audio's own RTP stream (``rtc/rtpsend.py``), so the events
  share the audio's SSRC and sequence space and its sender reports count them. Audio keeps
  flowing meanwhile.

A key press is a run of packets with the same RTP timestamp; the duration grows in each, and
the last three carry the end bit. The detector reports a press once, at its first end packet;
if the end packets are all lost, it is reported when the next press (a new timestamp) begins.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from ..audio.dtmf import DIGITS

log = logging.getLogger(__name__)

EVENTS = DIGITS
"""Event codes 0-15 (RFC 4733 §3.2): the DTMF keys in their order (``audio/dtmf.py``)."""
PACKET_MS = 20
END_REPEATS = 3
VOLUME = 10
"""The events' power level: -10 dBm0 (RFC 4733 §2.3.4)."""


class DtmfDetector:
    """Feeds on RFC 4733 payloads; calls ``on_digit(digit, duration_ms)`` once per press."""

    def __init__(self, on_digit: Callable[[str, int], None], clock_rate: int = 8000) -> None:
        self.on_digit = on_digit
        self.clock_rate = clock_rate
        self._timestamp: int | None = None
        self._digit = ""
        self._duration = 0
        self._reported = True
        self.presses = 0
        self.malformed = 0

    def feed(self, timestamp: int, payload: bytes) -> None:
        if len(payload) < 4:
            self.malformed += 1
            return
        event, flags = payload[0], payload[1]
        duration = int.from_bytes(payload[2:4], "big")
        if event >= len(EVENTS):
            return  # tones and flash hooks other than DTMF
        if timestamp != self._timestamp:
            if not self._reported:  # the previous press lost all its end packets
                self._report()
            self._timestamp = timestamp
            self._digit = EVENTS[event]
            self._reported = False
            self._duration = 0
        if self._reported:
            return  # a retransmitted end packet of a press already reported
        self._duration = max(self._duration, duration)
        if flags & 0x80:
            self._report()

    def _report(self) -> None:
        self._reported = True
        self.presses += 1
        self.on_digit(self._digit, round(self._duration * 1000 / self.clock_rate))


def event_payload(event: int, end: bool, duration: int, volume: int = VOLUME) -> bytes:
    return bytes([event, (0x80 if end else 0) | (volume & 0x3F)]) + min(duration, 0xFFFF).to_bytes(
        2, "big"
    )


class EventPacket(NamedTuple):
    """One tick of a key press: its payload, whether it is the press's first packet (the
    marker bit) and whether it ends it (sent :data:`END_REPEATS` times)."""

    payload: bytes
    first: bool
    end: bool


class KeyPresses:
    """Key presses waiting to be sent and the one being sent (module docstring). Bounded:
    a press beyond ``limit`` queued drops the oldest, counted in :attr:`dropped`."""

    def __init__(self, limit: int = 32) -> None:
        self._queued: deque[tuple[int, int]] = deque(maxlen=limit)  # (event, ticks)
        self._current: tuple[int, int, int] | None = None  # (event, ticks done, ticks)
        self.dropped = 0
        self.presses = 0

    def press(self, digit: str, duration_ms: int) -> None:
        """Queue ``digit`` (one of :data:`~bridge.audio.dtmf.DIGITS`) held ``duration_ms``."""
        if len(self._queued) == self._queued.maxlen:
            self.dropped += 1
        ticks = max(1, -(-duration_ms // PACKET_MS))
        self._queued.append((EVENTS.index(digit.upper()), ticks))

    @property
    def pending(self) -> bool:
        """Whether a press is being sent or waits."""
        return self._current is not None or bool(self._queued)

    def clear(self) -> None:
        self._queued.clear()
        self._current = None

    def next_packet(self, step: int) -> EventPacket | None:
        """This tick's packet of the press being sent (the next one begins when none is);
        ``None`` when nothing waits. ``step``: the event clock's units in 20 ms."""
        if self._current is None:
            if not self._queued:
                return None
            event, ticks = self._queued.popleft()
            self._current = (event, 0, ticks)
        event, done, ticks = self._current
        done += 1
        end = done >= ticks
        self._current = None if end else (event, done, ticks)
        if end:
            self.presses += 1
        return EventPacket(event_payload(event, end, done * step), done == 1, end)


class EventSender:
    """Sends key presses into an audio sender's RTP stream (see module doc), one press at a
    time, its packets 20 ms apart on the loop's timer.

    ``sender`` is the stream's lean sender (``rtc/rtpsend.py``'s ``LeanSender``): it numbers
    the events with the audio (one owner of the stream's sequence numbers, forwarded packets
    included) and counts them in its sender reports."""

    def __init__(self, sender: Any, audio_clock: int = 48_000) -> None:
        self.sender = sender
        self.audio_clock = audio_clock
        self.packets = 0
        self.presses = 0

    def _now_pts(self) -> int:
        last = self.sender.stream.last_pts
        return (0 if last is None else last) + self.audio_clock * PACKET_MS // 1000

    async def play(
        self, digit: str, duration_ms: int, payload_type: int, clock_rate: int = 8000
    ) -> None:
        """Send one key press (returns after its end packets)."""
        press = KeyPresses(limit=1)
        press.press(digit, duration_ms)
        timestamp = self._now_pts()
        step = clock_rate * PACKET_MS // 1000
        loop = asyncio.get_running_loop()
        start, ticks = loop.time(), 0
        while (packet := press.next_packet(step)) is not None:
            for _ in range(END_REPEATS if packet.end else 1):
                await self.sender.send(
                    packet.payload, timestamp, marker=packet.first, payload_type=payload_type
                )
                self.packets += 1
            ticks += 1
            wait = start + ticks * PACKET_MS / 1000 - loop.time()
            if wait > 0 and not packet.end:
                await asyncio.sleep(wait)
        self.presses += 1


def _sdp_lines(sdp: str) -> list[str]:
    return [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]


def offered_telephone_event(offer: str) -> tuple[int, int] | None:
    """The ``telephone-event`` payload type and clock rate of the offer's first audio m-line
    (8000 Hz preferred: its durations reach 8 s, 48 kHz's only 1.36 s)."""
    found: dict[int, int] = {}
    in_audio = seen_audio = False
    for ln in _sdp_lines(offer):
        if ln.startswith("m="):
            in_audio = ln.startswith("m=audio ") and not seen_audio
            seen_audio = seen_audio or in_audio
        elif in_audio and ln.lower().startswith("a=rtpmap:") and "telephone-event/" in ln.lower():
            number, _, codec = ln[len("a=rtpmap:") :].partition(" ")
            try:
                found[int(number)] = int(codec.split("/")[1])
            except (ValueError, IndexError):
                continue
    for rate in (8000, 48_000, 16_000):
        for pt, r in found.items():
            if r == rate:
                return pt, rate
    return None


def add_telephone_event(answer: str, pt: int, rate: int) -> str:
    """``answer`` (aiortc's, which has no telephone-event) with ``pt`` added to its first audio
    m-line: the browser may then use its ``RTCDTMFSender``."""
    out: list[str] = []
    in_audio = done = False
    for ln in _sdp_lines(answer):
        if ln.startswith("m="):
            if in_audio and not done:
                out += [f"a=rtpmap:{pt} telephone-event/{rate}", f"a=fmtp:{pt} 0-15"]
                done = True
            in_audio = ln.startswith("m=audio ") and not done
            if in_audio:
                parts = ln.split()
                if parts[1] == "0":  # rejected m-line
                    in_audio = False
                else:
                    ln = " ".join([*parts[:3], *[p for p in parts[3:] if p != str(pt)], str(pt)])
        out.append(ln)
        if in_audio and not done and ln.startswith("a=rtpmap:"):
            out += [f"a=rtpmap:{pt} telephone-event/{rate}", f"a=fmtp:{pt} 0-15"]
            done = True
    return "\r\n".join(out) + "\r\n"
