"""The bridge's own RTP send path for audio: packetise → SRTP protect → send.

aiortc's ``RTCRtpSender`` does this per 20 ms packet, in Python: its ``_run_rtp`` loop awaits
the track, hands the packet to its encoder's ``pack`` (a time-base conversion), builds an
``RtpPacket``, reads the wall clock through ``datetime`` twice (abs-send-time, which audio never
negotiates, and the sender report's NTP time), sets the header extensions and serialises them
through ``HeaderExtensionsMap``, keeps the packet object in a NACK history (aiortc offers no
NACK for audio), sets the marker bit on every packet, then awaits ``_send_rtp`` (SRTP, ICE).
The bridge's audio senders (:class:`~bridge.rtc.tracks.OpusBusTrack`) already hold the finished
Opus payload and its RTP time, so every leg sends them itself (aiortc's sender never starts,
``rtc/dtls_srtp.py``), and a trunk's phone leg (``trunks/media.py``) sends its G.711, G.722
or Opus through the same track and sender, onto its plain or SRTP socket:

* :class:`RtpStream` is one SSRC's packetiser and the one owner of its sequence numbers: the
  bridge's encoded packets, packets forwarded from another leg (``rtc/passthrough.py``, which
  keep the source's gaps) and RFC 4733 events (``rtc/rfc4733.py``) all take their numbers
  here. It builds the 12-byte header with ``struct`` and appends the header extension block,
  built once at start (the ``mid``, RFC 8843: constant for the stream). The marker bit
  follows RFC 3551 §4.1 / RFC 7587 §4.1: set on the first packet of the stream and on the first
  packet of a talkspurt (RTP time moved on by more than a frame with no sequence gap: the
  sender sent nothing meanwhile), clear otherwise; events set it themselves (RFC 4733 §2.5.1).
* :class:`LeanSender` is the one RTP sender (each leg's ``RtpLeg`` has one,
  ``rtc/rtp_leg.py``): a callback on the worker clock's ``SEND`` phase
  (no task), it plays a track (each tick ``track.packets(now)`` → :meth:`RtpStream.packetise`
  → the leg's wire: ``rtc/dtls_srtp.py``'s SRTP and nominated ICE pair, ``rtc/srtpudp.py``'s
  SDES socket, a trunk's plain or SRTP socket) and sends what else the leg hands it
  (:meth:`LeanSender.send_now`: a parked leg's keepalive); a forwarded packet goes from the
  source's receive callback through the stream to :attr:`LeanSender.send_rtp` in one function
  (``rtc/forwarding_track.py``). The stream keeps the time pair of its newest audio packet for
  the session's sender reports (RFC 3550 §6.4.1); events count as packets and octets but never
  move it: their RTP time is the event's start.
  While a forwarding run carries its ticks (its packets go out from the source's receive
  callback) the sender has nothing to do each tick: it rests off the clock until the one tick
  at which the run may end (``ClockedTrack.carried_until``; the worker's resting senders share
  one one-shot callback on the clock, ``rtc/rests.py``), and a run that ends sooner
  (forwarding refused, a key press, a hold, a new source) wakes it for the next send phase
  (:meth:`LeanSender.wake`).
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..media.clock import Phase, worker_clock
from .rests import REST_AT_LEAST, Rests, rests_of

log = logging.getLogger(__name__)

RTP_HEADER = struct.Struct("!BBHII")
"""The fixed RTP header (RFC 3550 §5.1): first octet, marker and payload type, sequence
number, timestamp, SSRC; written here, read by the session (``rtc/rtp_session.py``)."""
_NTP_EPOCH = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
OPUS_CLOCK = 48_000
"""Opus' RTP clock (RFC 7587 §4.1), whatever rate it is coded at."""
OPUS_FRAME_TICKS = OPUS_CLOCK // 50
"""20 ms on Opus' RTP clock."""


def random_sequence_number() -> int:
    """A random first sequence number in the lower half (as aiortc and libwebrtc: SRTP's
    rollover counter is then never guessed wrong at the start)."""
    return secrets.randbelow(0x8000)


def ntp_time(unix: float) -> int:
    """A Unix time as a 64-bit NTP timestamp (RFC 3550 §4): its seconds wrap in 2036, into
    NTP's era 1 (RFC 5905 §6)."""
    return int((unix + _NTP_EPOCH) * 4294967296.0) & 0xFFFFFFFFFFFFFFFF


def mid_extension(ext_id: int, mid: str | None) -> bytes:
    """The header extension block carrying the ``mid`` (RFC 8843 §15.1) in RFC 8285's one-byte
    form (profile ``0xBEDE``, length in words, ``id << 4 | len - 1``, the value, zero padding),
    ready to follow the fixed header; ``b""`` with no ``mid`` or one the form cannot carry."""
    value = (mid or "").encode()
    if not value or len(value) > 16 or not 1 <= ext_id <= 14:
        return b""
    element = bytes([(ext_id << 4) | (len(value) - 1)]) + value
    element += bytes(-len(element) % 4)
    return struct.pack("!HH", 0xBEDE, len(element) >> 2) + element


class RtpStream:
    """One SSRC's RTP packets: numbers, RTP time, marker and counts (module docstring).

    RTP times given to it are the sender's own (from 0); the stream adds a random origin
    (RFC 3550 §5.1). Sequence numbers are the stream's unless a packet brings its own (a
    forwarded one, mapped onto this stream: see ``rtc/passthrough.py``).
    """

    def __init__(
        self,
        ssrc: int,
        payload_type: int = 111,
        *,
        frame_ticks: int = OPUS_FRAME_TICKS,
        first_seq: int | None = None,
        origin: int | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.frame_ticks = frame_ticks
        self.next_seq = random_sequence_number() if first_seq is None else first_seq
        self.numbered = 0
        """Packets this stream gave a number itself (encoded audio, RFC 4733 events)."""
        """The number the next packet gets (unless it brings its own)."""
        self.origin = secrets.randbits(32) if origin is None else origin
        self.extension = b""
        """The header extension block (see :func:`mid_extension`), set at start."""
        self.packets = 0
        self.octets = 0
        """Payload octets sent (RFC 3550 §6.4.1: no headers, no padding)."""
        self.audio_packets = 0
        self.last_pts: int | None = None
        """The sender's RTP time of the latest (newest) audio packet."""
        self.sent_pts = 0
        self.sent_at: float | None = None
        """The sender's RTP time of the newest audio packet, and when it was packetised to go
        out (wall clock, ``time.time()``): our sender reports' time pair (RFC 3550 §6.4.1,
        ``rtc/rtcp.py``), kept as each packet is numbered (events never move it: their RTP time
        is the event's start, RFC 4733)."""
        self.markers = 0

    def packetise(
        self,
        payload: bytes,
        pts: int,
        seq: int | None = None,
        *,
        marker: bool | None = None,
        payload_type: int | None = None,
        audio_type: int | None = None,
    ) -> bytes:
        """One RTP packet (plaintext). ``marker=None`` (audio): the stream decides (first
        packet, or first of a talkspurt); an event gives its own and ``payload_type``. Audio
        goes out as the stream's payload type, or ``audio_type`` (RED around it)."""
        if seq is None:
            seq = self.next_seq
            self.numbered += 1
        if payload_type is None:  # audio
            last = self.last_pts
            step = 0 if last is None else (pts - last) & 0xFFFFFFFF
            if marker is None:  # the first packet, or the first after a pause in sending
                marker = last is None or (
                    seq == self.next_seq and self.frame_ticks < step < 0x80000000
                )
            if step < 0x80000000:  # not an older, reordered packet
                self.last_pts = pts & 0xFFFFFFFF
                self.sent_pts, self.sent_at = pts, time.time()
            self.audio_packets += 1
            payload_type = self.payload_type if audio_type is None else audio_type
        if marker:
            self.markers += 1
        # Later packets continue after the highest number sent (a reordered packet, forwarded
        # with a lower number, does not move the count back).
        if (seq - self.next_seq) & 0x8000 == 0:
            self.next_seq = (seq + 1) & 0xFFFF
        self.packets += 1
        self.octets += len(payload)
        ext = self.extension
        header = RTP_HEADER.pack(
            0x90 if ext else 0x80,
            (0x80 if marker else 0) | payload_type,
            seq & 0xFFFF,
            (pts + self.origin) & 0xFFFFFFFF,
            self.ssrc,
        )
        return header + ext + payload

    def timestamp(self, pts: int) -> int:
        """The on-the-wire RTP timestamp of the sender's RTP time ``pts``."""
        return (pts + self.origin) & 0xFFFFFFFF


class ClockedTrack(Protocol):
    """What :class:`LeanSender` plays (``rtc/tracks.py`` ``OpusBusTrack``)."""

    @property
    def readyState(self) -> str: ...

    def played_by(self, player: Any) -> None:
        """``player`` ticks it from now (its :meth:`LeanSender.on_clock`), or once it is on
        the clock (a parked track)."""

    def packets(self, now: float) -> list[Any]:
        """The tick's packets (``now`` its time), encoded or events; none while it sends
        nothing this tick."""

    def carried_until(self) -> float | None:
        """While another leg's packets carry its ticks (a forwarding run) and nothing but the
        source's quiet can end that: the time that would (``time.monotonic()`` base); its
        sender need not tick before, unless woken (:meth:`LeanSender.wake`)."""

    def stop(self) -> None: ...


class LeanSender:
    """A leg's one clocked RTP sender (module docstring): on the worker clock's ``SEND`` phase
    (``media/clock.py``; no task of its own), each tick it sends what its track says for the
    tick (``track.packets(now)``), each packet numbered on its (the session's) :class:`RtpStream`
    and handed as plaintext to ``send_rtp`` (the leg's wire: protect and send;
    ``ConnectionError`` while it cannot, which ends the sender and the track). A track's packets
    (``rtc/tracks.py``'s ``EncodedPacket``) carry ``data``, ``pts`` (RTP time from 0 on the
    codec's clock) and ``seq`` (``None``: the stream numbers it). A forwarded packet comes to
    :attr:`send_rtp` numbered by the track (``ForwardingTrack.forward``)."""

    def __init__(self, stream: RtpStream, send_rtp: Callable[[bytes], None]) -> None:
        self.stream = stream
        self.send_rtp = send_rtp
        self.running = False
        """Whether it sends now (its transport up): forwarding starts only then."""
        self.track: ClockedTrack | None = None
        self._on_clock = False
        self._unregister: Callable[[], None] | None = None
        self._rests: Rests | None = None
        """The worker's resting senders, while this one is among them (:meth:`_rest_until`,
        until the tick they wake it in)."""

    def start(self, track: ClockedTrack) -> None:
        """Play ``track`` from now until it ends or the transport goes: on the clock unless it
        is parked (``rtc/connected.py``: it puts itself on when it resumes)."""
        self.track, self.running = track, True
        track.played_by(self)

    def on_clock(self) -> None:
        """The track's first packets at once (a WhatsApp leg's first packet must not wait:
        Meta sends nothing before it), then one tick's every tick."""
        if self.track is None or self._on_clock:
            return
        self._on_clock = True
        try:
            self._tick(time.monotonic())  # the shell reads the clock, once; ticks bring theirs
        except Exception:  # as the clock does with a tick that fails: said, the sender ended
            log.exception("the RTP sender's first tick failed; it sends nothing")
        # Still playing, and still wanted on the clock: the first tick may have ended the track,
        # or parked it (a connected leg's priming of one frame).
        if self._on_clock and self.track is not None and not self.resting:
            self._unregister = worker_clock().register(self._tick, Phase.SEND)

    @property
    def clocked(self) -> bool:
        """Whether it has a place on the worker clock now (a parked leg's has none, nor a
        resting one's: :attr:`resting`)."""
        return self._unregister is not None

    @property
    def resting(self) -> bool:
        """Whether it is off the clock while a forwarding run carries its ticks, waiting for
        the one tick that may end the run (or woken, for the next send phase: :meth:`wake`)."""
        return self._rests is not None

    def carried_until(self) -> float | None:
        """Its track's (``ClockedTrack.carried_until``): until when a run carries its ticks."""
        track = self.track
        return None if track is None else track.carried_until()

    def off_clock(self) -> None:
        self._on_clock = False
        self._leave_clock()
        self._cancel_rest()

    def _leave_clock(self) -> None:
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            unregister()

    def _cancel_rest(self) -> None:
        rests, self._rests = self._rests, None
        if rests is not None:
            rests.discard(self)

    def _rest_until(self, until: float) -> None:
        """Off the clock until the tick at or after ``until``: a forwarding run carries every
        tick before it (its packets go out from the source's receive callback), so those ticks
        would find nothing to do. The worker's resting senders share one one-shot callback
        (``rtc/rests.py``)."""
        self._leave_clock()
        self._cancel_rest()
        self._rests = rests_of(worker_clock())
        self._rests.add(self, until)

    def rested(self, now: float) -> None:
        """The tick a rest waited for (run after that tick's phases, as if in its ``SEND``):
        the tick's work, then on the clock again unless it rests once more."""
        self._rests = None
        self._tick(now)
        if self._on_clock and self.track is not None and not self.resting:
            if self._unregister is None:
                self._unregister = worker_clock().register(self._tick, Phase.SEND)

    def wake(self) -> None:
        """A resting sender's run may end before its source goes quiet (forwarding refused, a
        key press waiting, a hold, a new source): it ticks in the current tick if that tick's
        ``SEND`` is still to come (a receive callback on the clock's ``INPUT`` phase), else in
        the next, and every tick from then on while it has work."""
        rests = self._rests
        if rests is not None:
            # The resting set's one callback comes forward to the latest tick's time (a tick in
            # progress runs it after its phases, a tick past at the next one: ``call_at``);
            # there this sender's run carries no more, so it ticks (``Rests``).
            rests.add(self, rests.clock.now)

    def stop(self) -> None:
        """Play no more (idempotent): off the clock, not running, the track stopped."""
        self.off_clock()
        self.running = False
        track, self.track = self.track, None
        if track is not None:
            track.stop()

    def _tick(self, now: float) -> None:
        track = self.track
        if track is None:
            return
        if track.readyState != "live":
            self.stop()
            return
        try:
            packets = track.packets(now)
            for packet in packets:
                self.send_encoded(packet)
            if not packets:
                until = track.carried_until()
                if until is not None and until > now + REST_AT_LEAST:
                    self._rest_until(until)
        except ConnectionError:
            self.stop()  # the wire is gone: the leg is ending
        except Exception:
            self.stop()  # a bug: the clock logs it and drops the tick; the track ends with it
            raise

    def send_encoded(self, packet: Any) -> None:
        """One packet of the track (``rtc/tracks.py``'s ``EncodedPacket``: encoded on the
        tick, or an RFC 4733 event sent in place of the tick's audio), sent now."""
        if packet.event:
            self.send_now(
                packet.data, packet.pts, marker=packet.marker, payload_type=packet.payload_type
            )
            return
        self.send_now(
            packet.data,
            packet.pts,
            packet.seq,
            marker=packet.marker,
            audio_type=packet.payload_type,
        )

    def send_now(
        self,
        payload: bytes,
        pts: int,
        seq: int | None = None,
        *,
        marker: bool | None = None,
        payload_type: int | None = None,
        audio_type: int | None = None,
    ) -> None:
        """Packetise and send one packet of this stream (see :meth:`RtpStream.packetise`),
        from the sender's tick or a plain callback (a parked leg's keepalive);
        ``ConnectionError`` when the wire is not (or no longer) up."""
        self.send_rtp(
            self.stream.packetise(
                payload, pts, seq, marker=marker, payload_type=payload_type, audio_type=audio_type
            )
        )
