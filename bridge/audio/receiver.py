"""``Receiver``: RTP packets in, a continuous 20 ms PCM stream out.

One receiver serves every RTP leg: the browser session and the Cloud API's WhatsApp-side peer
(Opus), and a phone on a trunk (Opus, G.711 or G.722: its decoder is the codec's,
``audio/phone_codecs.py``, with the same interface; the phone codecs have no FEC, and their
concealment is pitch repetition, ``audio/plc.py``).
Packets go in as they arrive (:meth:`Receiver.push`); a steady 20 ms clock takes exactly one
frame out (:meth:`Receiver.pop`), whatever the network did, so the engine leg and the bus see
a continuous stream: never a hole, never a splice. What a frame is made of, in order of
preference (the way libwebrtc's NetEq, FreeSWITCH and Asterisk decode):

1. its own packet, decoded — packets that arrive out of order are put back in order (the
   buffer, :class:`~bridge.audio.reorder.ReorderBuffer`, is keyed by RTP timestamp), only a
   packet whose frame was already played is discarded;
2. the in-band FEC (LBRR) copy the *next* packet carries, when the frame's own packet is lost
   (RFC 6716 §2.1.7; ``opus_decode(..., decode_fec=1)``);
3. Opus packet-loss concealment (``opus_decode(NULL)``), which fades to silence; after
   :data:`OUTAGE_FRAMES` concealed frames with nothing buffered the stream is silent until
   packets return, and then starts afresh.

**Packets in, frames out.** The packets are held by the buffer (``audio/reorder.py``) as they
arrive, numbered by the stream's one count of its packets
(:class:`~bridge.audio.reception.RtpReception`: a leg's RTP session counts each packet there
before it comes here; a receiver handed none counts into its own); this class makes the frames,
and is what judges a packet against what it has played (too late for its frame, a redundant
copy out of turn, or the sender's timeline jumped).

**A sender's DTX** is not a loss: after a packet of no audio, a missing frame is comfort noise
(:class:`~bridge.audio.dtx.ComfortNoise`), and the next talk spurt plays at the last one's delay.

**How long to hold packets** is decided apart from how frames are made, as NetEq keeps its
decision logic apart from expand and accelerate: :class:`~bridge.audio.delay.DelayDecision`
says on each tick whether the delay should grow or shrink (a low quantile of packets' slack
steered to a small margin) and whether a frame is worth waiting for its FEC. When a frame is
missing and so is the next packet, and the sender does send FEC, the receiver plays one frame
of concealment and waits a frame for it (NetEq's "expand").

**Sender clock drift** (a sender's 48 kHz clock a few hundred ppm off ours) moves the slacks
slowly and is absorbed without ever adding or dropping a whole frame: decoded samples wait in a
:class:`~bridge.audio.stretch.PlayoutFifo`, which removes or repeats one pitch period at a time
(NetEq's "accelerate" and "preemptive expand", by WSOLA) in a pause or in voiced speech, until
the next packet is needed one tick earlier or later. Only a packet that is late *now* (a jitter
spike) or a loss whose FEC is worth waiting for plays a frame of concealment instead. The counts
use the W3C ``RTCInboundRtpStreamStats`` names (``insertedSamplesForDeceleration``,
``removedSamplesForAcceleration``).

**Delay accounting.** A packet is needed at the tick at which the FIFO holds less than a frame:
``now + 20 ms × (1 + held // frame)``; the decision follows every move of that mapping.

Pure and synchronous (numpy and libopus only): the caller owns the clock and the socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from .delay import CountedJitter, DelayDecision
from .dtx import ComfortNoise
from .opus import OpusDecoder, OpusError
from .pcm import Pcm
from .receiver_stats import ReceiverStats
from .reception import RtpReception
from .reorder import ReorderBuffer
from .stretch import PlayoutFifo, is_pause, licence

__all__ = ["FrameDecoder", "Receiver", "ReceiverStats"]

FRAME_SECONDS = 0.02
OUTAGE_FRAMES = 10
"""Concealed frames in a row, with nothing buffered, after which the stream goes silent and
restarts from the next packet (200 ms: libopus' concealment has faded out by then)."""
STRETCH_SIMILAR = 0.95
"""How alike two pitch periods must be for a stretch in speech (``stretch.SIMILAR``, 0.85, is
the downlink's): a delay step here stretches two or three periods in a row, which a merely
similar vowel does not hide (Opus 3 % loss seed 6: −0.10 at 0.85 and 0.90, −0.02 at 0.95)."""


class FrameDecoder(Protocol):
    """What the receiver needs of a codec (:class:`~bridge.audio.opus.OpusDecoder`, the phone
    codecs of ``audio/phone_codecs.py``): PCM at the receiver's rate, never raising but
    :class:`~bridge.audio.opus.OpusError`."""

    rtp_clock: int
    """The codec's RTP clock (Opus: 48 kHz whatever its bandwidth, RFC 7587 §4.1)."""

    def decode(self, payload: bytes) -> Pcm: ...
    def decode_fec(self, payload: bytes, samples: int) -> Pcm: ...
    def has_fec(self, payload: bytes) -> bool: ...
    def energy(self, payload: bytes) -> float | None:
        """The decoded frame's sum of squares, where the codec tells it without decoding
        (G.711: from its bytes); ``None`` where only decoding does (an idle leg's level,
        ``rtc/uplink.py``)."""

    def conceal(self, samples: int) -> Pcm: ...
    def warm(self, payloads: Iterable[bytes]) -> None: ...


class Receiver:
    """Frames out for one RTP stream: its packets, held by a :class:`ReorderBuffer`, made
    into a continuous stream with FEC, concealment and adaptive delay (see the module
    docstring); ``decoder``: the codec's (Opus by default); ``reception``: the stream's count
    of its packets, kept by whoever hands them over (``None``: the receiver counts its own)."""

    def __init__(
        self, rate: int = 16_000, frame_samples: int = 320, *, min_delay: float = 0.0,
        max_delay: float = 0.2, margin: float = 0.004, window: int = 100,
        quantile: float = 0.02, capacity: int = 64, loss_memory: float = 10.0,
        decoder: FrameDecoder | None = None, reception: RtpReception | None = None,
    ) -> None:  # fmt: skip
        self.rate, self.frame_samples = rate, frame_samples
        self.decoder: FrameDecoder = decoder if decoder is not None else OpusDecoder(rate)
        self.rtp_clock = self.decoder.rtp_clock
        self.frame_ts = self.rtp_clock * frame_samples // rate
        self.decision = DelayDecision(
            min_delay=min_delay, max_delay=max_delay, margin=margin, window=window,
            quantile=quantile, loss_memory=loss_memory,
        )  # fmt: skip
        counts = reception is None
        self.reception = RtpReception(self.rtp_clock) if reception is None else reception
        """What arrived of the stream (received, lost, jitter), the W3C ``stats`` read it."""
        self.stats = ReceiverStats(self.reception)
        self._silence = np.zeros(frame_samples, dtype=np.int16)
        self._packets = ReorderBuffer(
            self.stats, self.reception, capacity, self.decoder.has_fec, counts=counts
        )
        """Packets in: what arrived, and the packets held until their frames are played."""
        self._fifo = PlayoutFifo(rate, frame_samples, similar=STRETCH_SIMILAR)
        """Decoded samples not played yet, stretched to follow the sender's clock."""
        self._playing, self._ticks = False, 0
        self._next = 0
        """Extended RTP timestamp of the next frame to play (while playing)."""
        self._next_due = 0.0
        """Clock time at which that frame will be taken."""
        self._play_from = 0.0
        """When playing may start (the first packet's wait: ``min_delay``, none after a
        restart, the counted packets' jitter after counting)."""
        self._counted = CountedJitter(self.decision)
        self._concealed_run = 0
        self._spare_since: float | None = None
        self._delay_sample, self._waited_for = 0.0, -1
        self._dtx = ComfortNoise(self.decoder, frame_samples, self.frame_ts)

    # -- packets in
    @property
    def playing(self) -> bool:
        """Packets are flowing: false before the first one, and after an outage (the sender
        stopped, or the network did) until the next one arrives."""
        return self._playing

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        """One RTP packet (16-bit number, 32-bit timestamp, payload) and its arrival (seconds,
        :meth:`pop`'s clock). Never raises: a packet that cannot be used is counted."""
        packets = self._packets
        if not packets.started:
            self._play_from = arrival + self.decision.min_delay
        ext_seq, ts = packets.arrive(seq, timestamp, payload, arrival)
        self.decision.arrived(ts / self.rtp_clock, arrival)
        if self._counted.counting:  # decoding again (``count``)
            self._play_from = arrival + self._counted.resume(ts / self.rtp_clock, arrival)
        overflow = packets.overflowed_by(ts)  # a backlog it cannot hold (ReorderBuffer.clear)
        if overflow or (self._playing and abs(ts - self._next) > self.rtp_clock * 2):
            self._restart(flush=overflow)  # or the sender's timeline jumped (a restarted stream)
        elif self._playing:
            due = self._next_due + (ts - self._next) / self.rtp_clock
            self.decision.observe(due - arrival)
            if ts <= self._next - self.frame_ts:
                packets.discard(ext_seq)
                self._dtx.late(payload, ext_seq)
                return
        packets.hold(ext_seq, ts, payload, arrival)

    def count(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        """A packet nobody needs decoded (an idle playout, ``rtc/uplink.py``): taken as
        :meth:`push` takes it (its numbers, octets, reordering), not kept, its slack learned;
        the next :meth:`push` starts the stream afresh, behind that jitter
        (:class:`~bridge.audio.delay.CountedJitter`)."""
        if self._playing or self._packets.held:
            self._restart()
        _, ts = self._packets.arrive(seq, timestamp, payload, arrival)
        self._counted.counted(ts / self.rtp_clock, arrival)

    def push_redundant(self, timestamp: int, payload: bytes, arrival: float) -> None:
        """A redundant copy of an earlier frame (RFC 2198 RED): used only if that frame's own
        packet has not arrived and its turn has not passed; never counted as a packet."""
        ts = self.reception.extend(timestamp) if self._packets.started else None
        if ts is None or (self._playing and not self._next <= ts <= self._next + self.rtp_clock):
            return
        self._packets.hold_redundant(ts, payload, arrival)

    def numbered(self, seq: int) -> None:
        """A packet of this stream that is not audio (an RFC 4733 event) took number ``seq``
        (counted here if the receiver counts its own packets)."""
        packets = self._packets
        reception = self.reception
        ext_seq = reception.numbered(seq) if packets.counts else reception.extend_seq(seq)
        self._dtx.passed(ext_seq if packets.started else None)

    @property
    def delay(self) -> float:
        """Seconds the latest played packet waited in the receiver."""
        return max(0.0, self._delay_sample)

    @property
    def buffered(self) -> int:
        """Packets held, plus the whole frames of decoded samples waiting to be played."""
        return len(self._packets.held) + self._fifo.held // self.frame_samples

    # -- frames out
    def pop(self, now: float) -> Pcm:
        """The next 20 ms frame (``frame_samples`` int16), for the clock tick at ``now``."""
        if not self._playing and not self._start(now):
            packets = self._packets
            if packets.started and not packets.held:  # (held: the first waits its delay)
                self.stats.concealed_samples += self.frame_samples
                self.stats.silent_concealed_samples += self.frame_samples
            return self._silence
        self._next_due = now
        decision = self.decision
        direction = decision.direction(now, sender_fec=self._packets.sender_fec)
        if decision.urgent:
            # Packets are late right now (a jitter spike, not drift): a frame of concealment
            # buys a frame of delay at once, as NetEq's expand does.
            frame = self._conceal_frame(insertion=True)
        elif direction > 0 and decision.step and decision.step_here(self._fifo.paused()):
            # A step up in the delay wanted (after a loss, or more jitter), not a drift: a
            # frame of concealment in a pause, before whatever comes next, as NetEq's expand.
            frame = self._conceal_frame(insertion=True, whole=decision.for_fec)
        elif self._wait_for_fec(now):
            # The frame is missing and so is the one after, whose FEC could rebuild it: play
            # one frame of concealment and wait a frame for it (NetEq's "expand"), which also
            # gives every later loss its next packet in time.
            frame = self._conceal_frame(insertion=False)
        else:
            frame = self._play(direction, now)
        decision.played(is_pause(frame))
        self.stats.emitted(frame.size, self._delay_sample, decision.target)
        self._ticks += 1
        held = self._ticks + self._fifo.held // self.frame_samples
        decision.follow_anchor(held * FRAME_SECONDS - self._next / self.rtp_clock)
        self._next_due = now + FRAME_SECONDS * (1 + self._fifo.held // self.frame_samples)
        return frame

    def _play(self, direction: int, now: float) -> Pcm:
        """The next frame of decoded audio, stretched by a pitch period if the delay should
        move (``direction``: +1 more, -1 less) or if samples wait that buy nothing."""
        fifo, n = self._fifo, self.frame_samples
        while fifo.held < n:
            fifo.feed(self._decode_next())
        # The drift rule (``stretch.licence``): a pause first; then voiced speech too; then
        # anywhere; less delay waits twice as long as more.
        voiced, force = licence(self.decision.waited(now), grow=direction > 0)
        if direction > 0 and (force or not self.decision.step):  # a step waits for a pause (pop)
            short = n - fifo.held % n  # what moves the next decode a tick later
            self.stats.inserted_samples_for_deceleration += fifo.expand(
                short, voiced=voiced, force=force
            )
        elif direction < 0:
            held, rush = self._packets.held, self.decision.rush
            ahead = n + 2 * fifo.max_lag + fifo.window + 2 * n * rush  # a rush: several periods,
            for _ in range(3 if rush else 1):  # out of the next packets too
                if fifo.held < ahead and any(abs(t - self._next) < self.frame_ts for t in held):
                    fifo.feed(self._decode_next())  # a period may come out of the next packet
            limit = fifo.sheddable(fifo.held - n, anywhere=voiced or force)  # keeps a pause
            self.stats.removed_samples_for_acceleration += (
                fifo.rush(voiced=self.decision.rush_voiced)
                if rush
                else fifo.accelerate(limit, voiced=voiced, force=force)
            )
        else:
            # Samples beyond whole frames (left by an earlier stretch) only add delay: shed
            # them where it is unheard, without moving the next decode.
            spare = (fifo.held - n) % n
            if spare < fifo.min_lag:
                self._spare_since = None
            else:  # in a pause; in voiced speech only once it has waited as long as a removal
                if self._spare_since is None:
                    self._spare_since = now
                voiced, _ = licence(now - self._spare_since, grow=False)
                limit = fifo.sheddable(spare, anywhere=voiced)
                self.stats.removed_samples_for_acceleration += fifo.accelerate(limit, voiced=voiced)
        return fifo.take()

    def _conceal_frame(self, *, insertion: bool, whole: bool = False) -> Pcm:
        """One frame of concealment played after what the FIFO holds (in stream order); ``whole``:
        the pause just played made longer to whole frames instead, where it can be (`for_fec`)."""
        fifo, n = self._fifo, self.frame_samples
        owed = n - fifo.held % n
        if not (whole and fifo.lengthen_pause(owed)):  # (a pause: the decoder's state untouched)
            fifo.feed(self._conceal(insertion=insertion))
            owed = n
        self.stats.inserted_samples_for_deceleration += owed
        return fifo.take()

    def _wait_for_fec(self, now: float) -> bool:
        if (
            self._fifo.held >= self.frame_samples
            or self._next in self._packets.held
            or any(abs(t - self._next) <= self.frame_ts for t in self._packets.held)
            or self._waited_for == self._next
            or self._concealed_run > 0  # already concealing: an outage, not a single loss
            or self._dtx.active  # nothing was sent: the sender is silent
            or not self._packets.sends_fec()  # last: a libopus call, only when a frame is missing
        ):
            return False
        if not self.decision.worth_waiting_for_fec():
            return False
        self._waited_for = self._next
        self.decision.last_loss = now
        return True

    def _start(self, now: float) -> bool:
        held = self._packets.held
        if not held or now < self._play_from:
            return False
        self._playing = True
        self._next = min(held)
        self._fifo.clear()
        self._concealed_run = 0
        self._ticks = 0
        self.decision.reset()
        return True

    def _restart(self, *, flush: bool = False) -> None:
        """Forget the timeline: the next packet starts the stream again (``flush``: counted)."""
        self._playing = False
        self._packets.clear(discarded=flush)
        self._fifo.clear()
        self._play_from = -1e9  # no priming delay on a restart
        self._dtx.forget_numbers()

    def _decode_next(self) -> Pcm:
        packets = self._packets
        packet = packets.take(self._next)
        if packet is None and packets.held:
            # Not every sender's packets sit on one 20 ms grid from its first packet (a
            # first packet of another length, a timestamp nudged by the sender's clock): a
            # packet less than a frame from where we are is the next one, and the timeline
            # follows it.
            near = [t for t in packets.held if abs(t - self._next) < self.frame_ts]
            if near:
                self._next = min(near)
                packet = packets.take(self._next)
        if packet is not None:
            try:
                pcm = self.decoder.decode(packet.payload)
            except OpusError:
                self.stats.decode_errors += 1
                pcm = np.zeros(0, dtype=np.int16)
            if pcm.size:
                self._next += pcm.size * self.rtp_clock // self.rate
                self._concealed_run = 0
                self._dtx.decoded(packet.payload, packet.seq)
                self.stats.total_samples_received += pcm.size
                self._delay_sample = self._next_due - packet.arrival
                return pcm
        quiet = self._next_due - packets.last_arrival  # the sender's DTX, or a loss?
        noise = None if self._dtx.lost(packets.held, self._next) else self._dtx.fill(quiet)
        if noise is not None:
            self._next += self.frame_ts
            self.stats.dtx_samples += noise.size
            return noise
        # The frame's own packet is lost (or unusable): FEC from the next one, else conceal.
        self.decision.last_loss = self._next_due
        self._next += self.frame_ts
        later = packets.held.get(self._next)
        if later is not None and self.decoder.has_fec(later.payload):
            try:
                pcm = self.decoder.decode_fec(later.payload, self.frame_samples)
                self.stats.fec_packets_received += 1
                self.stats.fec_recovered_samples += pcm.size
                self._concealed_run = 0
                return pcm
            except OpusError:
                self.stats.decode_errors += 1
        if not packets.held and self._concealed_run >= OUTAGE_FRAMES:
            self._restart()
            self.stats.silent_concealed_samples += self.frame_samples
            self.stats.concealed_samples += self.frame_samples
            return self._silence.copy()
        return self._conceal(insertion=False)

    def _conceal(self, *, insertion: bool) -> Pcm:
        """One frame of Opus concealment: for a lost frame, or to add a frame of delay (an
        insertion, counted as such and not as a loss, as W3C's stats separate them)."""
        try:
            pcm = self.decoder.conceal(self.frame_samples)
        except OpusError:  # pragma: no cover - libopus conceals without failing
            pcm = self._silence.copy()
        if insertion:
            return pcm
        if self._concealed_run == 0:
            self.stats.concealment_events += 1
        self._concealed_run += 1
        self.stats.concealed_samples += pcm.size
        if not np.any(pcm):
            self.stats.silent_concealed_samples += pcm.size
        return pcm
