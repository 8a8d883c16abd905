"""``OpusReceiver``: RTP Opus packets in, a continuous 20 ms PCM stream out.

One receiver serves every Opus leg (the browser session and the Cloud API's WhatsApp-side peer).
Packets go in as they arrive (:meth:`OpusReceiver.push`); a steady 20 ms clock takes exactly one
frame out (:meth:`OpusReceiver.pop`), whatever the network did, so the engine leg and the bus see
a continuous stream: never a hole, never a splice. What a frame is made of, in order of
preference (the way libwebrtc's NetEq, FreeSWITCH and Asterisk decode):

1. its own packet, decoded — packets that arrive out of order are put back in order (the buffer
   is keyed by RTP timestamp), only a packet whose frame was already played is discarded;
2. the in-band FEC (LBRR) copy the *next* packet carries, when the frame's own packet is lost
   (RFC 6716 §2.1.7; ``opus_decode(..., decode_fec=1)``);
3. Opus packet-loss concealment (``opus_decode(NULL)``), which fades to silence; after
   :data:`OUTAGE_FRAMES` concealed frames with nothing buffered the stream is silent until
   packets return, and then starts afresh.

**How long to hold packets.** Every packet's *slack* is measured at arrival: how long before
the clock will need it (negative: too late). The receiver keeps a window of recent slacks and
steers a low quantile of them to a small margin — enough that all but ~2 % of packets are on
time — by adding or removing one frame of delay at a time. On a clean network that is less
than one frame; with jitter it follows the jitter (bounded by ``max_delay``). When a frame is
missing and so is the next packet (whose FEC could rebuild it), and the sender does send FEC,
the receiver plays one frame of concealment and waits a frame for it (NetEq's "expand"); for
``loss_memory`` seconds after a loss it keeps that extra frame, so the next packet of a later
loss is usually there in time.

**Sender clock drift** (a sender's 48 kHz clock a few hundred ppm off ours) moves the slacks
slowly and is absorbed without ever adding or dropping a whole frame: decoded samples wait in a
:class:`~bridge.audio.stretch.PlayoutFifo`, which removes or repeats one pitch period at a time
(NetEq's "accelerate" and "preemptive expand", by WSOLA) in a pause or in voiced speech, until
the next packet is needed one tick earlier or later. Only a packet that is late *now* (a jitter
spike) or a loss whose FEC is worth waiting for plays a frame of concealment instead. The counts
use the W3C ``RTCInboundRtpStreamStats`` names (``insertedSamplesForDeceleration``,
``removedSamplesForAcceleration``).

**Delay accounting.** A packet is needed at the tick at which the FIFO holds less than a frame:
``now + 20 ms × (1 + held // frame)``. Every change of how the RTP timeline maps onto our clock
(a concealed frame, a stretch that moves the next decode by a tick, a sender's timeline nudge)
shifts that mapping — its *anchor* — and every stored slack with it.

Pure and synchronous (numpy and libopus only): the caller owns the clock and the socket.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from .opus import OpusDecoder, OpusError, has_fec
from .pcm import Pcm
from .stretch import PlayoutFifo, licence

RTP_CLOCK = 48_000
"""Opus always uses a 48 kHz RTP clock, whatever the audio bandwidth (RFC 7587 §4.1)."""
FRAME_SECONDS = 0.02
OUTAGE_FRAMES = 10
"""Concealed frames in a row, with nothing buffered, after which the stream goes silent and
restarts from the next packet (200 ms: libopus' concealment has faded out by then)."""


@dataclass
class ReceiverStats:
    """Counters of one receiver, named after W3C ``RTCInboundRtpStreamStats`` where it has a
    name (:meth:`as_w3c`); seconds and samples at the output rate."""

    packets_received: int = 0
    packets_lost: int = 0
    """Expected minus received, from the sequence numbers (RFC 3550 A.3)."""
    packets_discarded: int = 0
    """Arrived too late to be played, or duplicates."""
    packets_reordered: int = 0
    """Arrived after a later packet and were still played."""
    fec_packets_received: int = 0
    """Frames rebuilt from the next packet's in-band FEC data."""
    fec_recovered_samples: int = 0
    red_recovered_packets: int = 0
    """Lost packets replaced by the redundant copy a later RED packet carried (RFC 2198)."""
    concealed_samples: int = 0
    silent_concealed_samples: int = 0
    concealment_events: int = 0
    inserted_samples_for_deceleration: int = 0
    removed_samples_for_acceleration: int = 0
    decode_errors: int = 0
    jitter: float = 0.0
    """Interarrival jitter estimate, seconds (RFC 3550 §6.4.1)."""
    jitter_buffer_delay: float = 0.0
    """Seconds each emitted sample spent in the buffer, summed over samples."""
    jitter_buffer_target_delay: float = 0.0
    """The delay the receiver aimed for, summed over emitted samples like the above."""
    jitter_buffer_emitted_count: int = 0
    total_samples_received: int = 0

    def as_w3c(self) -> dict[str, float | int]:
        """camelCase names, as ``getStats()`` reports them in a browser."""
        out: dict[str, float | int] = {}
        for f in fields(self):
            head, *rest = f.name.split("_")
            value = getattr(self, f.name)
            out[head + "".join(w.capitalize() for w in rest)] = (
                round(value, 6) if isinstance(value, float) else value
            )
        return out


class _Packet:
    __slots__ = ("arrival", "payload")

    def __init__(self, payload: bytes, arrival: float) -> None:
        self.payload = payload
        self.arrival = arrival


def _unwrap(value: int, reference: int, bits: int) -> int:
    """``value`` (``bits`` wide, wrapping) extended to the integer closest to ``reference``."""
    span = 1 << bits
    delta = (value - reference) % span
    if delta >= span // 2:
        delta -= span
    return reference + delta


class OpusReceiver:
    """Reorder buffer, FEC, concealment and adaptive delay for one Opus RTP stream (see the
    module docstring)."""

    def __init__(
        self,
        rate: int = 16_000,
        frame_samples: int = 320,
        *,
        min_delay: float = 0.0,
        max_delay: float = 0.2,
        margin: float = 0.004,
        window: int = 100,
        quantile: float = 0.02,
        capacity: int = 64,
        loss_memory: float = 10.0,
    ) -> None:
        if not 0 <= min_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        self.rate = rate
        self.frame_samples = frame_samples
        self.frame_ts = RTP_CLOCK * frame_samples // rate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.margin = margin
        self.quantile = quantile
        self.capacity = capacity
        self.loss_memory = loss_memory
        self.stats = ReceiverStats()
        self._decoder = OpusDecoder(rate)
        self._silence = np.zeros(frame_samples, dtype=np.int16)
        self._packets: dict[int, _Packet] = {}
        self._fifo = PlayoutFifo(rate, frame_samples)
        """Decoded samples not played yet, stretched to follow the sender's clock."""
        self._playing = False
        self._next = 0
        """Extended RTP timestamp of the next frame to play (while playing)."""
        self._next_due = 0.0
        """Clock time at which that frame will be taken."""
        self._ts_ref: int | None = None
        self._seq_ref: int | None = None
        self._seq_base = 0
        self._seq_max = 0
        self._slack: deque[float] = deque(maxlen=window)
        self._slack_offset = 0.0
        """Added to every stored slack: the delay added (+) or removed (-) since it was stored."""
        self._ticks = 0
        self._anchor: float | None = None
        """When (in ticks from the start) RTP time 0 would be needed (see the module docstring)."""
        self._first_arrival = 0.0
        self._last_transit: float | None = None
        self._concealed_run = 0
        self._last_loss = -1e9
        self._want_since: float | None = None
        self._urgent = False
        self._step = False
        self._spare_since: float | None = None
        self._settle = 0
        self._target = 0.0
        self._delay_sample = 0.0
        self._waited_for = -1
        self._sender_fec = False
        """The sender puts FEC data in its packets (worth waiting a frame for after a loss)."""
        self._latest = b""
        """The latest packet's payload: looked at for FEC only when a frame is missing (no
        libopus call per packet)."""

    # -- packets in
    @property
    def started(self) -> bool:
        """A first packet has arrived."""
        return self._seq_ref is not None

    @property
    def playing(self) -> bool:
        """Packets are flowing: false before the first one, and after an outage (the sender
        stopped, or the network did) until the next one arrives."""
        return self._playing

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float) -> None:
        """One RTP packet: 16-bit sequence number, 32-bit RTP timestamp, its Opus payload and
        its arrival time (seconds, the clock :meth:`pop` is given). Never raises: a packet that
        cannot be used is counted."""
        stats = self.stats
        if self._seq_ref is None:
            self._seq_ref = self._seq_base = self._seq_max = seq
            self._ts_ref = timestamp
            self._first_arrival = arrival
        ext_seq = _unwrap(seq, self._seq_ref, 16)
        self._seq_ref = ext_seq
        assert self._ts_ref is not None
        ts = _unwrap(timestamp, self._ts_ref, 32)
        if ext_seq > self._seq_max:
            self._seq_max = ext_seq
            self._ts_ref = ts
        elif ext_seq < self._seq_max:
            stats.packets_reordered += 1  # undone below if it turns out unusable
        self._update_jitter(ts, arrival)
        stats.packets_received += 1
        stats.packets_lost = max(0, self._seq_max - self._seq_base + 1 - stats.packets_received)
        if self._playing:
            if abs(ts - self._next) > RTP_CLOCK * 2:
                self._restart()  # the sender's timeline jumped (a restarted stream)
            else:
                due = self._next_due + (ts - self._next) / RTP_CLOCK
                self._slack.append(due - arrival - self._slack_offset)
                if ts <= self._next - self.frame_ts:
                    self._discard(ext_seq)
                    return
        self._latest = payload
        if not self._sender_fec and (stats.packets_received <= 50 or not ext_seq & 7):
            # Every packet of the first second, then every 8th: a sender that sends FEC puts
            # some in most packets, and one that never does costs no libopus call per packet.
            self._sender_fec = has_fec(payload)
        if ts in self._packets or not payload:
            self._discard(ext_seq)
            return
        if len(self._packets) >= self.capacity:
            oldest = min(self._packets)
            if ts < oldest:
                self._discard(ext_seq)
                return
            del self._packets[oldest]
            stats.packets_discarded += 1
        self._packets[ts] = _Packet(payload, arrival)

    def push_redundant(self, timestamp: int, payload: bytes, arrival: float) -> None:
        """A redundant copy of an earlier frame (RFC 2198 RED): used only if that frame's own
        packet has not arrived and its turn has not passed; never counted as a packet."""
        if self._ts_ref is None or not payload:
            return
        ts = _unwrap(timestamp, self._ts_ref, 32)
        if ts in self._packets or (self._playing and ts < self._next):
            return
        if self._playing and ts > self._next + RTP_CLOCK:
            return
        self._packets[ts] = _Packet(payload, arrival)
        self.stats.red_recovered_packets += 1

    def _discard(self, ext_seq: int) -> None:
        self.stats.packets_discarded += 1
        if ext_seq < self._seq_max:
            self.stats.packets_reordered -= 1

    def _update_jitter(self, ts: int, arrival: float) -> None:
        # RFC 3550 §6.4.1: J += (|D(i-1, i)| - J) / 16, D from the relative transit times.
        transit = arrival - ts / RTP_CLOCK
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < 1.0:  # not across a restart
                self.stats.jitter += (d - self.stats.jitter) / 16
        self._last_transit = transit

    @property
    def delay(self) -> float:
        """Seconds the latest played packet waited in the receiver."""
        return max(0.0, self._delay_sample)

    @property
    def buffered(self) -> int:
        """Packets held, plus the whole frames of decoded samples waiting to be played."""
        return len(self._packets) + self._fifo.held // self.frame_samples

    # -- frames out
    def pop(self, now: float) -> Pcm:
        """The next 20 ms frame (``frame_samples`` int16), for the clock tick at ``now``."""
        if not self._playing and not self._start(now):
            if self._seq_ref is not None:  # started once: silence while the sender is silent
                self.stats.concealed_samples += self.frame_samples
                self.stats.silent_concealed_samples += self.frame_samples
            return self._silence
        self._next_due = now
        direction = self._direction(now)
        if self._urgent:
            # Packets are late right now (a jitter spike, not drift): a frame of concealment
            # buys a frame of delay at once, as NetEq's expand does.
            frame = self._conceal_frame(insertion=True)
        elif direction > 0 and self._step and self._fifo.paused():
            # A step up in the delay wanted (after a loss, or more jitter), not a drift: a
            # frame of concealment in a pause, before whatever comes next, as NetEq's expand.
            frame = self._conceal_frame(insertion=True)
        elif self._wait_for_fec(now):
            # The frame is missing and so is the one after, whose FEC could rebuild it: play
            # one frame of concealment and wait a frame for it (NetEq's "expand"), which also
            # gives every later loss its next packet in time.
            frame = self._conceal_frame(insertion=False)
        else:
            frame = self._play(direction, now)
        self._account(frame)
        self._ticks += 1
        self._follow_anchor()
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
        waited = now - self._want_since if self._want_since is not None else 0.0
        voiced, force = licence(waited, grow=direction > 0)
        if direction > 0 and (force or not self._step):  # a step waits for a pause (pop)
            short = n - fifo.held % n  # what moves the next decode a tick later
            self.stats.inserted_samples_for_deceleration += fifo.expand(
                short, voiced=voiced, force=force
            )
        elif direction < 0:
            if fifo.held < n + 2 * fifo.max_lag + fifo.window and self._next_at_hand():
                fifo.feed(self._decode_next())  # a period may come out of the next packet
            self.stats.removed_samples_for_acceleration += fifo.accelerate(
                fifo.held - n, voiced=voiced, force=force
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
                self.stats.removed_samples_for_acceleration += fifo.accelerate(spare, voiced=voiced)
        return fifo.take()

    def _next_at_hand(self) -> bool:
        return any(abs(t - self._next) < self.frame_ts for t in self._packets)

    def _conceal_frame(self, *, insertion: bool) -> Pcm:
        """One frame of concealment played after what the FIFO holds (in stream order)."""
        self._fifo.feed(self._conceal(insertion=insertion))
        self.stats.inserted_samples_for_deceleration += self.frame_samples
        return self._fifo.take()

    def _follow_anchor(self) -> None:
        """Move every stored slack by how much the RTP timeline's mapping onto our clock moved
        in this tick; a move of a frame (the next decode a tick earlier or later) is a change of
        delay that the slacks must show before the delay is judged again."""
        anchor = (
            self._ticks + self._fifo.held // self.frame_samples
        ) * FRAME_SECONDS - self._next / RTP_CLOCK
        if self._anchor is not None:
            shift = anchor - self._anchor
            self._slack_offset += shift
            if abs(shift) >= FRAME_SECONDS / 2:
                self._settle = 5
                self._want_since = None
        self._anchor = anchor

    def _wait_for_fec(self, now: float) -> bool:
        if (
            self._fifo.held >= self.frame_samples
            or self._next in self._packets
            or any(abs(t - self._next) <= self.frame_ts for t in self._packets)
            or self._waited_for == self._next
            or self._concealed_run > 0  # already concealing: an outage, not a single loss
            or not self._sends_fec()  # last: a libopus call, only when a frame is missing
        ):
            return False
        if len(self._slack) >= 10:
            low, median = self._slack_quantiles()
            if low >= self.margin + FRAME_SECONDS:
                return False  # the next packet is usually here by now: it is lost too
            if median + FRAME_SECONDS > self.max_delay:
                return False
        self._waited_for = self._next
        self._last_loss = now
        return True

    def _sends_fec(self) -> bool:
        if not self._sender_fec:
            held = [p.payload for p in self._packets.values()]
            self._sender_fec = any(has_fec(p) for p in (self._latest, *held) if p)
        return self._sender_fec

    def _slack_quantiles(self) -> tuple[float, float]:
        """The low quantile and the median of recent slacks, at the current delay."""
        ordered = sorted(self._slack)
        low = ordered[int(self.quantile * len(ordered))] + self._slack_offset
        return low, ordered[len(ordered) // 2] + self._slack_offset

    def _start(self, now: float) -> bool:
        if not self._packets or now - self._first_arrival < self.min_delay:
            return False
        self._playing = True
        self._next = min(self._packets)
        self._fifo.clear()
        self._concealed_run = 0
        self._slack.clear()
        self._slack_offset = 0.0
        self._ticks = 0
        self._anchor = None
        self._settle = 0
        return True

    def _restart(self) -> None:
        """Forget the timeline: the next packet starts the stream again."""
        self._playing = False
        self._packets.clear()
        self._fifo.clear()
        self._first_arrival = -1e9  # no priming delay on a restart

    def _decode_next(self) -> Pcm:
        packet = self._packets.pop(self._next, None)
        if packet is None and self._packets:
            # Not every sender's packets sit on one 20 ms grid from its first packet (a
            # first packet of another length, a timestamp nudged by the sender's clock): a
            # packet less than a frame from where we are is the next one, and the timeline
            # follows it.
            near = [t for t in self._packets if abs(t - self._next) < self.frame_ts]
            if near:
                self._next = min(near)
                packet = self._packets.pop(self._next)
        if packet is not None:
            try:
                pcm = self._decoder.decode(packet.payload)
            except OpusError:
                self.stats.decode_errors += 1
                pcm = np.zeros(0, dtype=np.int16)
            if pcm.size:
                self._next += pcm.size * RTP_CLOCK // self.rate
                self._concealed_run = 0
                self.stats.total_samples_received += pcm.size
                self._delay_sample = self._next_due - packet.arrival
                return pcm
        # The frame's own packet is lost (or unusable): FEC from the next one, else conceal.
        self._last_loss = self._next_due
        self._next += self.frame_ts
        later = self._packets.get(self._next)
        if later is not None and has_fec(later.payload):
            try:
                pcm = self._decoder.decode_fec(later.payload, self.frame_samples)
                self.stats.fec_packets_received += 1
                self.stats.fec_recovered_samples += pcm.size
                self._concealed_run = 0
                return pcm
            except OpusError:
                self.stats.decode_errors += 1
        if not self._packets and self._concealed_run >= OUTAGE_FRAMES:
            self._restart()
            self.stats.silent_concealed_samples += self.frame_samples
            self.stats.concealed_samples += self.frame_samples
            return self._silence.copy()
        return self._conceal(insertion=False)

    def _conceal(self, *, insertion: bool) -> Pcm:
        """One frame of Opus concealment: for a lost frame, or to add a frame of delay (an
        insertion, counted as such and not as a loss, as W3C's stats separate them)."""
        try:
            pcm = self._decoder.conceal(self.frame_samples)
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

    def _account(self, frame: Pcm) -> None:
        stats = self.stats
        n = frame.size
        stats.jitter_buffer_delay += max(0.0, self._delay_sample) * n
        stats.jitter_buffer_target_delay += self._target * n
        stats.jitter_buffer_emitted_count += n

    # -- delay control
    def _direction(self, now: float) -> int:
        """+1 if the delay should grow, -1 if it should shrink, 0 if it is right; sets
        ``_urgent`` when packets are being lost to lateness right now."""
        self._urgent = self._step = False
        if len(self._slack) < 3:
            return 0
        low, median = self._slack_quantiles()
        floor = self.margin
        if self._sender_fec and now - self._last_loss < self.loss_memory:
            floor += FRAME_SECONDS  # keep the next packet at hand for its FEC
        self._target = max(0.0, median - low + floor)
        held = median  # how long a typical packet waits now
        want = 0
        if low < floor and held + FRAME_SECONDS <= self.max_delay:
            want = 1
        elif low > floor + FRAME_SECONDS + 0.002 and held - FRAME_SECONDS >= self.min_delay:
            want = -1
        if want < 0 and self._settle > 0:
            want = 0  # a removal waits until the last change shows in the slacks
        if self._settle > 0:
            self._settle -= 1
        if want == 0:
            self._want_since = None
            return 0
        if self._want_since is None:
            self._want_since = now
        if want > 0 and low < 0:
            self._urgent = True  # the stretch would come too late
        # A drift moves the slacks by microseconds a tick; a loss or more jitter by much more.
        self._step = want > 0 and floor - low >= FRAME_SECONDS / 2
        return want
