"""RFC 4733 ``telephone-event`` on a leg's RTP session, both ways (aiortc has no such codec).

* In: the leg's RTP session (``rtc/rtp_session.py``) feeds packets of the telephone-event
  payload type to a :class:`DtmfDetector`. A press is a run of packets with one RTP timestamp,
  its duration growing, the last three with the end bit; it is reported once, at its first end
  packet, or — every end packet lost — when the next press ends or the audio goes on past
  its duration (:meth:`DtmfDetector.audio`: a last press is reported too). A press whose end
  has not come when the next one begins is held until its end comes (reordered behind the
  next press's first packets) or that press is reported, so each is reported once, in order,
  with its own duration. A press held past the duration field's largest value comes as
  segments, each with a timestamp of its own (RFC 4733 §2.5.1.5): one press, their durations
  added.
* Out: :class:`KeyPresses` is the one sender, sans-IO: each tick the leg's track
  (``rtc/tracks.py``) asks it for the tick's packets, sent in place of the tick's audio on the
  audio's own RTP stream (its SSRC and sequence space, counted in its sender reports). A press
  keeps the audio's timestamp as it begins (libwebrtc's choice), marks its first packet, and
  sends its end packet three times (RFC 4733 §2.5.1.4); then its gap, as audio. A press longer
  than the duration field holds (0xFFFF units: 1.37 s at 48 kHz) goes as segments (§2.5.1.5).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..audio.dtmf import DIGITS
from .sdp import audio_section, edit_audio, payload_lines, telephone_event

log = logging.getLogger(__name__)

EVENTS = DIGITS
"""Event codes 0-15 (RFC 4733 §3.2): the DTMF keys in their order (``audio/dtmf.py``)."""
PACKET_MS = 20
END_REPEATS = 3
VOLUME = 10
"""The events' power level: -10 dBm0 (RFC 4733 §2.3.4)."""


class DtmfDetector:
    """Feeds on RFC 4733 payloads; calls ``on_digit(digit, duration_ms)`` once per press, in
    the order the presses began."""

    def __init__(self, on_digit: Callable[[str, int], None], clock_rate: int = 8000) -> None:
        self.on_digit = on_digit
        self.clock_rate = clock_rate
        self._timestamp: int | None = None
        self._digit = ""
        self._duration = 0
        """Of the press's current segment (the event clock's units)."""
        self._segments = 0
        """The durations of its segments before that one (RFC 4733 §2.5.1.5)."""
        self._step = 0
        """The largest step of the press's duration from one packet to the next (the first
        from 0): how often its sender updates it, 20 or 50 ms (§2.5.1.2)."""
        self._before: int | None = None
        """The timestamp of the press, or of the press's segment, before the current one: a
        packet of it may come after the current one began (reordered, or a late repeat)."""
        self._held: _Unended | None = None
        """The press before, its end not seen when the current one began: its digit and
        duration, reported when its end comes late or before the current one is."""
        self.open = False
        """A press began whose end has not come (read by the session on each audio packet: an
        attribute, not a call, on the receive path)."""
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
        if timestamp == self._before:
            held = self._held
            if held is not None:  # the press before, still going or its end reordered
                held.duration = max(held.duration, duration)
                if flags & 0x80:
                    self._report_held()
            return  # else a late repeat of a press reported, or of a full segment (§2.5.1.5)
        if timestamp != self._timestamp:
            if self.open and self._duration >= 0xFFFF and EVENTS[event] == self._digit:
                # The press goes on past the duration field: its next segment (§2.5.1.5).
                self._segments += self._duration
                self._report_held()  # a press before it is long over
            else:
                self._report_held()
                if self.open:  # its end may yet come, reordered: held, not reported yet
                    self._held = _Unended(self._digit, self._segments, self._duration)
                self._digit = EVENTS[event]
                self.open = True
                self._segments = self._step = 0
            self._before, self._timestamp = self._timestamp, timestamp
            self._duration = 0
        if not self.open:
            return  # a retransmitted end packet of a press already reported
        if duration > self._duration:
            self._step = max(self._step, duration - self._duration)
            self._duration = duration
        if flags & 0x80:
            self._report()

    def audio(self, timestamp: int, clock: int) -> None:
        """An audio packet of the stream, RTP time ``timestamp`` on the audio's ``clock``: a
        press whose end packets were all lost is over once the audio is past its duration by
        three of its sender's updates (at least 60 ms; RFC 4733 §2.5.1.3: the sender's audio
        resumes after the event), and is reported then; before, only the next press reported
        it, so a last press never was. The press starts on the audio's timeline and counts its
        duration on the event's own clock (Meta's 8 kHz events beside 48 kHz Opus): compared
        in seconds."""
        if not self.open or self._timestamp is None or not self._duration:
            return
        after = (timestamp - self._timestamp) & 0xFFFFFFFF
        # In event-clock ticks times audio-clock ticks, to stay in integers: past its duration
        # by three updates (a phone that sends its audio beside the event's packets keeps
        # within one or two of it while the key is held: 20 ms updates, or 50 ms ones, §2.5.1.2,
        # the audio up to 50 ms ahead of the latest), each counted 20 to 100 ms; and within 5 s
        # of it (an event timed on another timeline than its audio's is never ended by the
        # audio).
        past = after * self.clock_rate - self._duration * clock
        unit = self.clock_rate * clock
        step = min(max(self._step * clock, unit // 50), unit // 10)
        if 3 * step <= past <= unit * 5:
            self._report()

    def _report(self) -> None:
        self._report_held()
        self.open = False
        self.presses += 1
        duration = self._segments + self._duration
        self.on_digit(self._digit, round(duration * 1000 / self.clock_rate))

    def _report_held(self) -> None:
        """The press before, if one is held: its end came late, or never."""
        held, self._held = self._held, None
        if held is not None:
            self.presses += 1
            duration = held.segments + held.duration
            self.on_digit(held.digit, round(duration * 1000 / self.clock_rate))


@dataclass(slots=True)
class _Unended:
    """A press whose end had not come when the next one began (:class:`DtmfDetector`)."""

    digit: str
    segments: int
    duration: int


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
    segment: int = 0
    """The press's duration before this packet's segment (the event clock's units)."""
    full: bytes = b""
    """The segment before, full (RFC 4733 §2.5.1.5: its largest duration, no end bit), sent
    first at that segment's timestamp, when this tick begins a new one."""


class _Press(NamedTuple):
    event: int
    ticks: int
    gap: int
    """Ticks of audio after it before the next press begins (or ``done`` is called)."""
    done: Callable[[], None] | None


class KeyPresses:
    """A leg's key presses waiting to be sent and the one being sent (module docstring), on
    the leg's ``telephone-event``: its payload type (``payload_type()``, read each tick;
    ``None``: not negotiated, nothing is sent) and :attr:`step`, its clock's units in 20 ms.
    Bounded: a press beyond ``limit`` queued drops the oldest, counted in :attr:`dropped` (a
    caller that must refuse instead reads :attr:`queued` first)."""

    def __init__(
        self,
        limit: int = 32,
        payload_type: Callable[[], int | None] = lambda: None,
        step: int = 160,
    ) -> None:
        self.payload_type = payload_type
        self.step = step
        """The event clock's units in 20 ms (160: 8 kHz, RFC 4733's usual rate)."""
        self._queued: deque[_Press] = deque(maxlen=limit)
        self._current: _Press | None = None
        self._done = 0
        """Ticks of :attr:`_current` sent."""
        self._gap = 0
        self._gap_done: Callable[[], None] | None = None
        self._start = 0
        """The RTP timestamp of the press being sent: its first tick's (RFC 4733 §2.5.1.2)."""
        self._segment = 0
        """The duration of its full segments (RFC 4733 §2.5.1.5), in the event clock's units."""
        self._segment_start = 0
        """The RTP timestamp of its current segment (its first's: the press's)."""
        self.dropped = 0
        self.presses = 0
        self.packets = 0

    def press(
        self,
        digit: str,
        duration_ms: int,
        gap_ms: int = 0,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``digit`` (one of :data:`~bridge.audio.dtmf.DIGITS`) held ``duration_ms``,
        then ``gap_ms`` of audio; ``done()`` once that gap is over."""
        if len(self._queued) == self._queued.maxlen:
            self.dropped += 1
        ticks = max(1, -(-duration_ms // PACKET_MS))
        gap = max(0, -(-gap_ms // PACKET_MS))
        self._queued.append(_Press(EVENTS.index(digit.upper()), ticks, gap, done))

    @property
    def queued(self) -> int:
        """Presses waiting (the one being sent not counted)."""
        return len(self._queued)

    @property
    def pending(self) -> bool:
        """Whether a press is being sent, waits, or its gap is not over."""
        return self._current is not None or bool(self._queued) or self._gap > 0

    def clear(self) -> None:
        """Drop every press not yet sent (their ``done`` never called)."""
        self._queued.clear()
        self._current = self._gap_done = None
        self._gap = 0

    def next_packet(self) -> EventPacket | None:
        """This tick's packet of the press being sent (the next one begins when none is);
        ``None`` when nothing waits or the tick is a gap's."""
        if self._current is None:
            if self._gap > 0:
                self._gap -= 1
                if self._gap == 0:
                    self._finished()
                return None
            if not self._queued:
                return None
            self._current, self._done, self._segment = self._queued.popleft(), 0, 0
        press = self._current
        self._done += 1
        end = self._done >= press.ticks
        duration, full = self._done * self.step - self._segment, b""
        if duration > 0xFFFF:  # past the duration field: a new segment from its end (§2.5.1.5)
            full = event_payload(press.event, False, 0xFFFF)
            self._segment += 0xFFFF
            duration -= 0xFFFF
        packet = EventPacket(
            event_payload(press.event, end, duration), self._done == 1, end, self._segment, full
        )
        if end:
            self.presses += 1
            self._current = None
            self._gap, self._gap_done = press.gap, press.done
            if press.gap == 0:
                self._finished()
        return packet

    def send_tick(self, timestamp: int, send: Callable[[int, bytes, int, bool], None]) -> bool:
        """This tick's packets, sent by ``send(payload_type, payload, rtp_timestamp, marker)``
        in place of the tick's audio, whose RTP time is ``timestamp``: the press's first
        tick's timestamp held for all its packets, the marker on its first, its end packet
        sent :data:`END_REPEATS` times (RFC 4733 §2.5.1); a long press's segments each at
        their own timestamp (§2.5.1.5), the full one's last packet sent as often as an end
        packet is (a receiver that lost it would take the next segment for another press).
        False: the tick is audio's."""
        if not self.pending:
            return False
        payload_type = self.payload_type()
        if payload_type is None:  # the far end takes no events: the presses go
            self.clear()
            return False
        packet = self.next_packet()
        if packet is None:
            return False
        if packet.first:
            self._start = self._segment_start = timestamp
        if packet.full:
            for _ in range(END_REPEATS):
                send(payload_type, packet.full, self._segment_start, False)
                self.packets += 1
            # The new segment begins where the full one ended, on the audio's RTP clock: the
            # ticks' RTP time per event unit so far (the two clocks may differ: Meta's 8 kHz
            # events beside 48 kHz Opus).
            elapsed = (timestamp - self._start) & 0xFFFFFFFF
            offset = packet.segment * elapsed // ((self._done - 1) * self.step)
            self._segment_start = (self._start + offset) & 0xFFFFFFFF
        for i in range(END_REPEATS if packet.end else 1):
            send(payload_type, packet.payload, self._segment_start, packet.first and i == 0)
            self.packets += 1  # the marker once, on the first packet of the press
        return True

    def _finished(self) -> None:
        done, self._gap_done = self._gap_done, None
        if done is not None:
            try:
                done()
            except Exception:  # a caller's bug must not stop the sender's clock
                log.exception("a key press's done callback failed")


def add_telephone_event(answer: str, pt: int, rate: int) -> str:
    """``answer`` (aiortc's, which has no telephone-event) with ``pt`` added to its audio
    m-line, written after its codec's (its first ``a=rtpmap``): the browser may then use its
    ``RTCDTMFSender``. A refused m-line (port 0) is left as it is."""
    audio = audio_section(answer)
    if audio.port == 0:
        return answer
    codec = next(iter(audio.rtpmaps), None)
    return edit_audio(answer, payload_lines(*telephone_event(pt, rate)), after=codec, last=pt)
