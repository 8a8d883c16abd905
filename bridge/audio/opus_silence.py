"""Digital silence through libopus without coding it: a run of all-zero frames settles the
encoder, and a run of silent packets the decoder, into a short cycle, so once learned the cycle
is replayed instead of calling the codec (``audio/opus.py`` owns one of each per codec state).

Both rest on what libopus does in digital silence (``tests/unit/test_opus_silence.py`` checks
both): its packets for zero frames repeat with a period of :data:`SILENCE_PERIOD` frames
(SILK's quantisation seed is its frame counter mod 4, RFC 6716 §4.2.7.7), and a decoder fed
such packets repeats its state and output with the same period. The encoder's slow trackers
may still move underneath (:class:`SilenceCycle`); the decoder's state repeats exactly.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .pcm import Pcm, peak

SILENT_PEAK = 2
"""A frame whose every sample lies within ±2 (about -84 dBFS, the level of 16-bit dither) is
digital silence to the encoder: it is encoded as all zeros."""
SILENCE_PERIOD = 4
"""libopus' packets for a run of all-zero frames settle into a cycle of 4: SILK's quantisation
seed is its frame counter mod 4 (RFC 6716 §4.2.7.7, coded in each packet); nothing else in
the encoder moves while its input is zero."""
SILENCE_CHECK_EVERY = 50
"""Frames (1 s) between real encodes that check a learned cycle still holds."""


class SilenceCycle:
    """The packets libopus sends for digital silence, learned, so a run of it costs no encode.

    After ``2 * SILENCE_PERIOD`` zero frames encoded for real whose packets repeat with the
    period, the next zero frames take the cycle's packets — byte for byte what the encoder
    would have sent, as the far end's decoder sees it — and the encoder is called only once a
    second to check the cycle still holds (any difference: forgotten, relearned). A frame with
    sound, or any change of the encoder's settings, forgets it. The sound after a skipped run
    is coded from the state the encoder had when it last coded a zero frame (its slow
    trackers, such as SILK's noise-level estimate, kept moving in silence without changing a
    packet), so its packets differ from an encoder that coded every frame while decoding to
    the same level and pitch (``tests/unit/test_opus_silence.py``); PESQ-WB on speech, with
    and without loss, moves by -0.005 on average, as any change of bits does
    (``python -m bench.silence_cycle``, docs/performance.md). Not with DTX, whose packets in
    silence follow a longer rhythm.
    """

    def __init__(self) -> None:
        self._seen: list[bytes] = []
        self.cycle: list[bytes] | None = None
        self._virtual = 0
        self._real = 0
        self.skipped = 0
        """Zero frames sent from the cycle without an encode."""

    def forget(self) -> None:
        if self._seen or self.cycle is not None:
            self._seen.clear()
            self.cycle = None

    def next(self) -> bytes | None:
        """The packet for the next zero frame, or ``None``: encode it, then :meth:`encoded`."""
        cycle = self.cycle
        if cycle is None:
            return None
        self._virtual += 1
        if self._virtual % SILENCE_CHECK_EVERY == 0:
            return None
        self.skipped += 1
        return cycle[self._virtual % SILENCE_PERIOD]

    def encoded(self, packet: bytes) -> bytes:
        """The real packet of a zero frame; returns the one to send (the cycle's, in step with
        the frames sent, while the check finds it unchanged)."""
        cycle, p = self.cycle, SILENCE_PERIOD
        if cycle is not None:
            self._real += 1
            if packet == cycle[self._real % p]:
                return cycle[self._virtual % p]
            self.cycle = None  # it moved: learn it again
            self._seen.clear()
        seen = self._seen
        seen.append(packet)
        if len(seen) < 2 * p:
            return packet
        del seen[: len(seen) - 2 * p]
        if seen[:p] == seen[p:]:
            k = len(seen)  # indexed so that frame i of the run is cycle[i % p]
            self.cycle = [seen[p + (i - k) % p] for i in range(p)]
            self._virtual = self._real = k - 1
            seen.clear()
        return packet


class DecodedSilence:
    """What libopus decodes a run of silent packets to, learned, so the run costs no decode.

    A sender's digital silence (a muted microphone, an engine with nobody speaking) arrives
    as packets repeating with :data:`SILENCE_PERIOD`. Once ``2 * SILENCE_PERIOD`` decodes of
    such repeats gave outputs that repeat too, all quiet (within :data:`SILENT_PEAK`), the
    next packets of the cycle take the learned outputs and the decoder is left where it was.
    Before the decoder is used again (the next packet of sound, a concealment, a check every
    :data:`SILENCE_CHECK_EVERY` frames) it is caught up on the skipped packets: the state
    repeats with the period, so decoding the last ``skipped % SILENCE_PERIOD`` of them puts it
    exactly where decoding all of them would have. Sample for sample what a decoder fed every
    packet plays, before, during and after the run (``tests/unit/test_opus_silence.py``).
    While packets differ from the ones a period before (speech), it costs a bytes comparison.
    """

    def __init__(self) -> None:
        p = SILENCE_PERIOD
        self._packets: deque[bytes] = deque(maxlen=p)
        """The last packets decoded for real (to see a repeat)."""
        self._repeats: deque[tuple[bytes, Pcm]] = deque(maxlen=2 * p)
        """The latest run of repeating packets with their outputs."""
        self.cycle: list[tuple[bytes, Pcm]] | None = None
        """Phase → (packet, output), learned."""
        self._phase = 0
        """The cycle's phase of the latest frame played."""
        self._behind = 0
        """Packets played from the cycle since the decoder last decoded one."""
        self._frames = 0
        self.skipped = 0
        """Packets played from the cycle without a decode."""

    def lookup(self, packet: bytes) -> Pcm | None:
        """The output of ``packet`` if it continues the cycle and needs no check, else
        ``None``: then :meth:`catch_up`, decode it, and tell :meth:`decoded`."""
        cycle = self.cycle
        if cycle is None:
            return None
        phase = (self._phase + 1) % SILENCE_PERIOD
        expected, pcm = cycle[phase]
        if packet != expected:
            return None
        self._frames += 1
        if self._frames % SILENCE_CHECK_EVERY == 0:
            return None
        self._phase = phase
        self._behind += 1
        self.skipped += 1
        return pcm.copy()

    def catch_up(self) -> list[bytes]:
        """The skipped packets to decode now (at most a period less one, in order), so the
        decoder's state is the one that decoding every packet would have left."""
        cycle, behind = self.cycle, self._behind % SILENCE_PERIOD
        self._behind = 0
        if cycle is None or not behind:
            return []
        first = self._phase - behind + 1
        return [cycle[(first + i) % SILENCE_PERIOD][0] for i in range(behind)]

    def decoded(self, packet: bytes, pcm: Pcm) -> None:
        """``packet`` was decoded for real (after :meth:`catch_up`) to ``pcm``."""
        p = SILENCE_PERIOD
        cycle = self.cycle
        if cycle is not None:
            phase = (self._phase + 1) % p
            expected, out = cycle[phase]
            if packet == expected and np.array_equal(pcm, out):
                self._phase = phase  # the check held
                return
            self.forget()
        packets, repeats = self._packets, self._repeats
        repeat = len(packets) == p and packets[0] == packet
        packets.append(packet)
        if not repeat:
            if repeats:
                repeats.clear()
            return
        repeats.append((packet, pcm.copy()))
        if len(repeats) < 2 * p:
            return
        run = list(repeats)
        if all(np.array_equal(run[i][1], run[i + p][1]) for i in range(p)) and all(
            peak(out) <= SILENT_PEAK for _, out in run[p:]
        ):
            self.cycle, self._phase, self._behind = run[p:], p - 1, 0
            repeats.clear()

    def forget(self) -> None:
        """The run is over (call after :meth:`catch_up`): learn it again from scratch."""
        self.cycle = None
        self._behind = 0
        self._packets.clear()
        self._repeats.clear()
