"""The receive path of every RTP leg: its receiver on the worker's media clock.

A leg's RTP session (``rtc/rtp_session.py``) hands each Opus packet, as it arrives, to the
leg's :class:`Playout`, which puts it into the leg's
:class:`~bridge.audio.receiver.Receiver` (reorder, FEC, concealment, adaptive delay: see
there); the worker's one media clock (:class:`~bridge.media.clock.WorkerClock`, its receive
phase) takes one 16 kHz frame from the receiver per tick and hands it on (to the call's
conference for a browser, to the bus's downlink for the Cloud API peer): a continuous stream
while the sender sends, decoded straight to 16 kHz by libopus in the event loop. (aiortc's
own receive path would decode to 48 kHz stereo in a thread, behind a jitter buffer that
stalls after a loss and uses neither FEC nor concealment: it never starts, ``rtc/dtls_srtp.py``.)
Once the sender has stopped (the receiver's outage: 200 ms of concealment with nothing coming)
nothing more is handed on until it sends again, as a browser that stops sending is heard as
nothing, not as an endless stream of silence frames.

**An idle leg decodes nothing.** While a leg's packets are forwarded untouched to another leg
(``rtc/passthrough.py``: the offer says the target's sender carried the packet) and nothing
else needs them decoded (``calls/forwarding.py`` decides:
no mix, recording, fork, socket, agent or speech detector on that direction), :class:`Playout`
only takes their numbers and octets (the session counted them: the reports' loss, jitter and
bit rate stay) and keeps the last :data:`WARM_PACKETS`; the reports' level is a sample: one
packet in :data:`LEVEL_STRIDE` read from its bytes where the leg speaks G.711 (its energy by
table, ``audio/g711.py``), else a run of packets decoded once a second (in a row, at the run's
last packet: the decoder warm after the first). An idle leg is off the
worker clock (it has no frame to hand on). The moment something asks for the audio, the next
packet is decoded after those, so the decoder carries on from the sender's state with no seam,
and the leg is back on the clock.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from ..audio import FRAME_SAMPLES, SAMPLE_RATE
from ..audio.opus import WARM_PACKETS, OpusError
from ..audio.pcm import Pcm
from ..audio.receiver import FrameDecoder, Receiver, ReceiverStats
from ..audio.reception import RtpReception
from ..media import BusStats, LevelMeter, frame_energy
from ..media.clock import TICK_FAILURES, Phase, worker_clock
from ..tasks import TaskSet

log = logging.getLogger(__name__)

MIRROR_EVERY = 25
"""Frames (500 ms) between copies of the receiver's counters into the bus's."""
LEVEL_EVERY = 50
"""An idle leg's packets (a second) from one level sample to the next."""
LEVEL_RUN = 10
"""Packets decoded in a row for an idle leg's level sample (a fifth of decoding them all)."""
LEVEL_METERED = 5
"""The last packets of a sample that are metered: after five, the decoder's state is the
sender's again and its level true (``tests/unit/test_uplink.py``)."""
LEVEL_STRIDE = 5
"""An idle G.711 leg's packets from one metered from its bytes to the next: ten a second give
the level a second to a few tenths of a dB, at a fifth of metering every packet (a numpy
lookup and sum, ~2.5 µs: the idle forwarded leg's largest cost after counting)."""


def _ignore(pcm: Pcm) -> None:
    pass


class Playout:
    """One leg's receiver, and its tick on the worker's media clock that takes frames out.

    The tick is registered at the first packet decoded (unless the leg's ``tasks`` are closed)
    and unregistered while the leg is idle (module doc: nothing to hand on) and by :meth:`stop`.
    """

    def __init__(
        self,
        on_frame: Callable[[Pcm], None],
        stats: BusStats,
        tasks: TaskSet,
        decoder: Callable[[], FrameDecoder] | None = None,
        reception: RtpReception | None = None,
    ) -> None:
        """``decoder`` makes the receiver's decoder (Opus when ``None``; a phone's codec:
        ``audio/phone_codecs.py``). ``reception``: where the leg's RTP session counts each
        packet before handing it here (``rtc/rtcp.py``), which every receiver of the leg reads;
        ``None``: the receiver counts the packets handed to it (a playout fed by hand)."""
        self.on_frame = on_frame
        self.bus_stats = stats
        self._decoder = decoder
        self.reception = reception
        self.receiver = self._new_receiver()
        self._tasks = tasks
        self._unregister: Callable[[], None] | None = None
        self._stopped = False
        self._tick_failures = 0
        self.frames = 0
        self._mirrored = (0, 0, 0, 0, 0, 0, 0, 0)
        self._conceal_mark = (0, 0)
        self.last_packet: float | None = None
        """When the latest packet arrived (monotonic): the leg's media watchdog reads it."""
        self.forward: Callable[[int, int, bytes, float], bool] | None = None
        """Also hands each packet, untouched, to another leg (``rtc/passthrough.py``), with
        its arrival time; it says whether the other leg's sender carried it (sent it as it is:
        that sender then needs no audio of it)."""
        self.needs_pcm: Callable[[float], bool] | None = None
        """Asked per carried packet, with its arrival time: whether anything else needs it
        decoded (a tap on the bus; ``None``: always). While nothing does, the leg is idle:
        packets are counted, not decoded (module doc)."""
        self.idle_meters: tuple[LevelMeter, ...] = ()
        """Where an idle leg's level samples go (module doc): the meters its decoded frames
        would have reached, on this side and on the side its packets are forwarded to."""
        self._idle = False
        self._idle_packets = 0
        self.not_decoded = 0
        """Packets counted and forwarded, not decoded: nothing needed them (an idle leg)."""
        self._skipped: deque[bytes] = deque(maxlen=max(WARM_PACKETS, LEVEL_RUN))
        """The latest packets not decoded: the decoder's warm-up when decoding resumes, and an
        Opus level sample's run (:meth:`_level_sample`)."""
        self.held = False
        """An idle connected leg (``rtc/connected.py``): packets are dropped, no clock."""

    def _new_receiver(self) -> Receiver:
        decoder = self._decoder() if self._decoder is not None else None
        receiver = Receiver(SAMPLE_RATE, FRAME_SAMPLES, decoder=decoder, reception=self.reception)
        # Whether an idle leg's level comes from its packets' bytes (G.711) or only decoded.
        self._level_from_bytes = receiver.decoder.energy(b"") is not None
        return receiver

    @property
    def stats(self) -> ReceiverStats:
        return self.receiver.stats

    @property
    def clocked(self) -> bool:
        """Whether its tick is on the worker clock now (an idle leg's is not)."""
        return self._unregister is not None

    def packet(self, seq: int, timestamp: int, payload: bytes, at: float) -> None:
        """An RTP packet of this leg, as it arrives (on the event loop), ``at`` that time
        (``time.monotonic()`` base: the socket's stamp, ``rtc/udp_poll.py``)."""
        if self._stopped or self.held:
            return
        self.last_packet = now = at
        forward = self.forward
        # Carried: the target sent it as it is (or its run covers it), so the leg need not
        # decode it unless something else reads its audio.
        if forward is not None and forward(seq, timestamp, payload, at):
            needs_pcm = self.needs_pcm
            if needs_pcm is not None and not needs_pcm(at):
                self._idle_packet(seq, timestamp, payload, now)
                return
        if self._idle:  # something needs the audio again: from the next frame on
            self._idle = False
            self.receiver.decoder.warm(self._skipped)
            self._skipped.clear()
        self.receiver.push(seq, timestamp, payload, now)
        if self._unregister is None and not self._tasks.closed:
            self._unregister = worker_clock().register(self._tick, Phase.RECEIVE, self._tick_failed)

    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Also hand each packet, untouched, to ``offer(seq, timestamp, payload, at)`` (``at``
        its arrival; ``None`` stops), which says whether it was carried (sent as it is); while
        the packets are carried and ``needs_pcm(at)`` says no, the leg is idle (module doc), its
        level sampled into ``meters``."""
        self.forward = offer
        self.needs_pcm = needs_pcm if offer is not None else None
        self.idle_meters = meters if offer is not None else ()

    def _idle_packet(self, seq: int, timestamp: int, payload: bytes, now: float) -> None:
        """A packet nobody needs decoded: counted, kept for the warm-up, and its level
        sampled: from its bytes for one packet in :data:`LEVEL_STRIDE` where the codec allows
        (G.711), else decoded in the level's sample only (the first :data:`LEVEL_RUN` of every
        :data:`LEVEL_EVERY`, the last :data:`LEVEL_METERED` of them metered, the decoder warm
        by then)."""
        receiver = self.receiver
        receiver.count(seq, timestamp, payload, now)
        self._skipped.append(payload)
        if not self._idle:
            # Off the clock while idle: its tick would hand nothing on (a packet decoded
            # again puts it back on, :meth:`packet`).
            self._idle = True
            self._leave_clock()
        n = self._idle_packets
        self._idle_packets = n + 1
        meters = self.idle_meters
        if self._level_from_bytes:
            self.not_decoded += 1
            if meters and not n % LEVEL_STRIDE:
                energy = receiver.decoder.energy(payload)
                if energy is not None:
                    for meter in meters:
                        meter.add_energy(energy, FRAME_SAMPLES)
            return
        phase = n % LEVEL_EVERY
        if phase >= LEVEL_RUN or not meters:
            self.not_decoded += 1
        elif phase == LEVEL_RUN - 1:
            self._level_sample(phase + 1, meters)

    def _level_sample(self, run: int, meters: tuple[LevelMeter, ...]) -> None:
        """An idle Opus leg's level sample, decoded at the run's last packet: the run's
        packets (the latest ``run`` skipped, those since the leg went idle if fewer) decoded
        in a row, its last :data:`LEVEL_METERED` metered. The same decodes in the same order
        as one a packet, so the same energies, each a few tens of ms later; in a row, the
        decoder's code and tables (and numpy's) are warm from the second one on: decoded one
        a packet, each found them cold after 20 ms asleep (docs/performance.md)."""
        skipped = self._skipped
        packets = list(skipped)[-run:] if len(skipped) > run else list(skipped)
        decoder = self.receiver.decoder
        first_metered = len(packets) - LEVEL_METERED
        for i, payload in enumerate(packets):
            try:
                pcm = decoder.decode(payload)
            except OpusError:
                continue
            if i >= first_metered and pcm.size:
                energy = frame_energy(pcm)  # once for the meters of both sides
                for meter in meters:
                    meter.add_energy(energy, pcm.size)

    def numbered(self, seq: int) -> None:
        """A packet of this leg that is not audio (an RFC 4733 event) took number ``seq``."""
        if not self._stopped:
            self.receiver.numbered(seq)

    def redundant(self, timestamp: int, payload: bytes, at: float) -> None:
        """A redundant copy of an earlier frame from a RED packet (``rtc/red.py``) that
        arrived at ``at``."""
        if not self._stopped and not self.held and not self._idle:
            self.receiver.push_redundant(timestamp, payload, at)

    def _tick(self, now: float) -> None:
        """The worker clock's receive phase: one frame out of the receiver, handed on."""
        if self._stopped or self._idle:
            return
        receiver = self.receiver
        frame = receiver.pop(now)
        self.frames += 1
        self.bus_stats.receive.delay.observe(receiver.delay)
        if self.frames % MIRROR_EVERY == 0:
            self._mirror()
        self._tick_failures = 0  # through: a failure to come starts the count again
        if not receiver.playing:
            return  # the sender went quiet: the bus clocks its sources alone (CallBus)
        try:
            self.on_frame(frame)
        except Exception:  # a bus problem must not stop the leg's audio for good
            log.exception("uplink frame handling failed")

    def _tick_failed(self) -> None:
        """The clock dropped this leg's tick: it raised (a bug, logged there with its
        traceback), its receiver's state suspect. A fresh receiver takes the next packet and
        puts the leg back on the clock: a fault of one moment costs a gap, not the leg's audio
        for the rest of the call. One that comes back every time leaves the leg's audio off
        after :data:`TICK_FAILURES` of them in a row, said once."""
        self._unregister = None
        self._tick_failures += 1
        if self._tick_failures >= TICK_FAILURES:
            log.warning(
                "a leg's receiver failed %d times in a row: "
                "its audio is off for the rest of the call",
                self._tick_failures,
            )
            self.stop()
            return
        self._mirror()
        self.receiver = self._new_receiver()
        self._mirrored = (0, 0, 0, 0, 0, 0, 0, 0)
        self._conceal_mark = (0, 0)

    def concealed_since_last(self) -> float | None:
        """The share of audio played since the previous call that was concealment: what the
        listener actually misses (a loss that FEC rebuilt is not missed); ``None`` if nothing
        was played here (an idle leg: its listener's own receiver conceals)."""
        rx = self.receiver.stats
        concealed, emitted = rx.concealed_samples, rx.jitter_buffer_emitted_count
        c0, e0 = self._conceal_mark
        self._conceal_mark = (concealed, emitted)
        return (concealed - c0) / (emitted - e0) if emitted > e0 else None

    def _mirror(self) -> None:
        """Add what the receiver counted since the last call to the bus's counters (several
        legs may feed one bus: a conference), which the metrics read."""
        rx, bus = self.receiver.stats, self.bus_stats
        now = (
            rx.packets_discarded,
            rx.decode_errors,
            rx.concealed_samples,
            rx.fec_recovered_samples,
            rx.inserted_samples_for_deceleration,
            rx.removed_samples_for_acceleration,
            rx.jitter_buffer_emitted_count,
            rx.dtx_samples,
        )
        d = [a - b for a, b in zip(now, self._mirrored, strict=True)]
        self._mirrored = now
        bus.uplink_rtp_late += d[0]
        bus.uplink_decode_errors += d[1]
        r = bus.receive
        r.concealed_samples += d[2]
        r.fec_recovered_samples += d[3]
        r.inserted_samples += d[4]
        r.removed_samples += d[5]
        r.emitted_samples += d[6]
        r.dtx_samples += d[7]

    def hold(self) -> None:
        """Idle (a connected leg between calls): leave the clock, drop what arrives."""
        if not self._stopped and not self.held:
            self._let_go()
            self.held = True

    def resume(self, on_frame: Callable[[Pcm], None], stats: BusStats) -> None:
        """Back from :meth:`hold` for a call: a fresh receiver (the call's own counters, no
        state from the last talkspurt), frames to ``on_frame``, counted in ``stats``."""
        if self._stopped:
            return
        self.receiver = self._new_receiver()
        self._mirrored = (0, 0, 0, 0, 0, 0, 0, 0)
        self._conceal_mark = (0, 0)
        self.bus_stats = stats
        self.on_frame = on_frame
        self.held = False

    def stop(self) -> None:
        """Leave the clock (the leg is closing); later packets are ignored. The callbacks
        (bound to the leg) are dropped, so no reference cycle outlives the leg."""
        if not self._stopped:
            self._let_go()
        self._stopped = True

    def _let_go(self) -> None:
        """The call's figures end here (the reports count on); off the clock, the callbacks
        dropped."""
        self._mirror()
        self.receiver.stats.freeze()
        self.on_frame = _ignore
        self._forget_forwarding()
        self._leave_clock()

    def _leave_clock(self) -> None:
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            unregister()

    def _forget_forwarding(self) -> None:
        self.forward = self.needs_pcm = None
        self.idle_meters = ()
        self._idle = False
        self._skipped.clear()
