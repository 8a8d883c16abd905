"""RFC 4733 ``telephone-event`` in band: one key press from its RTP packets.

A key press is a run of packets with the same RTP timestamp; the duration grows in each, and
the last three carry the end bit (retransmitted for loss). A press is reported once, at its
first end packet; if the end packets are all lost, it is reported when the next press (a new
timestamp) begins.
"""

from __future__ import annotations

from collections.abc import Callable

EVENTS = "0123456789*#ABCD"
"""Event codes 0-15 (RFC 4733 §3.2): digits, ``*``, ``#``, ``A``-``D``."""


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
