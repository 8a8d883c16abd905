"""The receiver's delay steps (docs/quality.md, *The receiver's delay steps*): when a frame of
delay is added or shed, and how much of a pause a removal leaves."""

from __future__ import annotations

import numpy as np
import pytest

from bench.speech import missing_tools, speech
from bridge.audio import rms_dbfs, tone
from bridge.audio.delay import RUSH_PATIENCE, DelayDecision
from bridge.audio.opus import OpusDecoder, has_fec
from bridge.audio.receiver import Receiver
from bridge.audio.stretch import BLOCK, KEEP_PAUSE, PlayoutFifo, is_pause, quiet_prefix

from .test_receiver import FRAME, RATE, packets


def decision(slacks: list[float]) -> DelayDecision:
    d = DelayDecision(
        min_delay=0.0, max_delay=0.2, margin=0.004, window=100, quantile=0.02, loss_memory=10
    )
    for s in slacks:
        d.observe(s)
    return d


def steady(low: float, spread: float = 0.002) -> list[float]:
    """100 slacks whose low quantile (the third lowest) is ``low``."""
    return [low] * 3 + list(np.linspace(low, low + spread, 97))


def test_a_frame_is_added_once_the_low_quantile_is_under_half_the_margin() -> None:
    assert decision(steady(0.0039)).direction(0.0, sender_fec=False) == 0  # on time: no grow
    assert decision(steady(0.0025)).direction(0.0, sender_fec=False) == 0
    grow = decision(steady(0.0019))
    assert grow.direction(0.0, sender_fec=False) == 1
    assert not grow.urgent and not grow.step


def after_loss(low: float) -> DelayDecision:
    d = decision(steady(low))
    d.last_loss = 0.0
    return d


def test_after_a_loss_with_fec_the_frame_for_fec_is_added_under_half_its_margin() -> None:
    # The FEC floor is the margin and a frame (24 ms): 1.5 ms under it the next packet of a
    # loss still comes in time for its FEC, and no frame is added; 2.5 ms under, one is.
    assert after_loss(0.0225).direction(1.0, sender_fec=True) == 0
    grow = after_loss(0.0215)
    assert grow.direction(1.0, sender_fec=True) == 1
    # Every packet on time: the frame is for FEC alone, a step that waits for a long pause.
    assert grow.for_fec and grow.step and not grow.urgent
    assert decision(steady(0.0215)).direction(1.0, sender_fec=True) == 0  # no loss: enough
    # Packets late by the margin's measure too: a step for jitter, not for FEC alone.
    late = after_loss(0.0015)
    assert late.direction(1.0, sender_fec=True) == 1
    assert late.step and not late.for_fec


def test_a_missing_frame_waits_for_fec_on_the_same_line_as_the_floor_grows() -> None:
    # The next packet usually here 2.5 ms before the missing frame's turn: it is lost too.
    assert not decision(steady(0.0225)).worth_waiting_for_fec()
    assert decision(steady(0.0215)).worth_waiting_for_fec()


def test_a_frame_is_shed_over_a_tenth_of_the_spread_of_the_slacks() -> None:
    # A steady line: a frame and 2 ms over the margin sheds.
    assert decision(steady(0.0265)).direction(0.0, sender_fec=False) == -1
    # Wide jitter (40 ms from the low quantile to the median): a frame and 4 ms over.
    wide = [0.0265] * 3 + list(np.linspace(0.0265, 0.1065, 97))
    assert decision(wide).direction(0.0, sender_fec=False) == 0
    wider = [0.0285] * 3 + list(np.linspace(0.0285, 0.1085, 97))
    assert decision(wider).direction(0.0, sender_fec=False) == -1


def test_a_removal_in_a_pause_leaves_some_of_the_pause() -> None:
    fifo = PlayoutFifo()
    t = np.arange(1600) / 16_000
    voice = (8000 * np.sin(2 * np.pi * 150 * t)).astype(np.int16)
    gap = 400  # 25 ms of silence between two words
    fifo.feed(np.concatenate((np.zeros(gap, dtype=np.int16), voice)))
    keep = KEEP_PAUSE * 16
    assert fifo.sheddable(10_000, anywhere=False) == gap - BLOCK - keep
    assert fifo.sheddable(300, anywhere=True) == 300
    fifo.clear()
    fifo.feed(np.concatenate((np.zeros(240, dtype=np.int16), voice)))  # 15 ms: none of it
    assert fifo.sheddable(10_000, anywhere=False) <= 0
    assert fifo.accelerate(max(0, fifo.sheddable(240, anywhere=False)), voiced=False) == 0


def test_a_frame_for_fec_alone_goes_in_a_long_pause_never_between_two_words() -> None:
    """A loss in the silence before speech (no FEC to wait for yet) starts the FEC floor once
    the words bring FEC; every packet is on time (10 ms early), so the frame the floor wants is
    insurance: it goes in once the pause between phrases is ``delay.LONG_PAUSE`` old, not in the
    40 ms gap between the first two words, and it leaves the FIFO holding whole frames."""
    t = np.arange(int(0.4 * 16_000)) / 16_000
    word = (8000 * np.sin(2 * np.pi * (220 * t + 10 * np.sin(2 * np.pi * 4 * t)))).astype(np.int16)
    gap, pause = np.zeros(640, dtype=np.int16), np.zeros(8000, dtype=np.int16)
    lead = np.zeros(4800, dtype=np.int16)
    pcm = np.concatenate((lead, word, gap, word, pause, word))
    sent = packets(pcm)
    lost = 3
    assert not has_fec(sent[lost + 1][2])  # silence: nothing to wait for
    rx = Receiver()
    arrivals = [None if i == lost else 0.001 + i * 0.02 for i in range(len(sent))]
    events = sorted((a, i) for i, a in enumerate(arrivals) if a is not None)
    grown: list[int] = []
    out: list[np.ndarray] = []
    tick, j = 0.011, 0
    while j < len(events) or rx.buffered:
        while j < len(events) and events[j][0] <= tick:
            seq, ts, payload = sent[events[j][1]]
            rx.push(seq, ts, payload, events[j][0])
            j += 1
        before = rx.stats.inserted_samples_for_deceleration
        out.append(rx.pop(tick))
        if rx.stats.inserted_samples_for_deceleration > before:
            grown.append(len(out) - 1)
        tick += 0.02
    assert rx.stats.concealment_events == 1  # the lost frame, in the silence
    assert rx.stats.inserted_samples_for_deceleration == FRAME  # one frame, once
    assert rx.stats.removed_samples_for_acceleration == 0
    (at,) = grown
    played = np.concatenate(out)
    heard = np.flatnonzero(np.abs(played) > 1000)
    pause_starts = heard[np.flatnonzero(np.diff(heard) > 4000)[0]] // FRAME + 1
    assert at == pause_starts + 5  # 100 ms into the long pause, the gap passed by
    assert rx.decision.target > 0.02  # the FEC floor held
    assert np.array_equal(played[-word.size // 2 :], rx_reference(sent)[-word.size // 2 :])


def rx_reference(sent: list) -> np.ndarray:
    dec = OpusDecoder(16_000)
    return np.concatenate([dec.decode(p) for _, _, p in sent])


def test_a_pause_is_lengthened_whole_or_not_at_all() -> None:
    """The FEC floor's frame in a long pause is the pause itself made longer (no concealment,
    so the decoder's state is untouched): only where every block just played was a pause."""
    fifo = PlayoutFifo()
    rng = np.random.default_rng(1)
    hush = rng.normal(0, 60, 320).astype(np.int16)  # a pause: room noise under QUIET_RMS
    word = (8000 * np.sin(2 * np.pi * 200 * np.arange(320) / 16_000)).astype(np.int16)
    fifo.feed(np.concatenate((hush, word)))
    fifo.take()  # the pause played
    assert fifo.lengthen_pause(280)
    assert fifo.held == 600 and fifo.inserted == 280
    longer = fifo.take()
    assert np.sqrt(np.mean(longer[:280].astype(np.float64) ** 2)) < 100  # a pause, longer
    assert np.array_equal(longer[280:], word[:40])  # then the word, whole
    # A word's onset in the last block played: nothing inserted.
    fifo.clear()
    fifo.feed(np.concatenate((hush[:-BLOCK], word[:BLOCK], word)))
    fifo.take()
    assert not fifo.lengthen_pause(320) and fifo.held == 320 and fifo.inserted == 280


def _stalled_speech() -> list[tuple[float, np.ndarray, int, float]]:
    """Ten seconds of the bench's speech through the receiver, the sender stalling 400 ms at
    3.6 s (a Wi-Fi hiccup: packets held, then released at once at 4.0 s): each tick's time,
    frame, samples removed and the receiver's delay."""
    sent = packets(speech(10.0))
    arrivals = [(4.0 if 3.6 <= i * 0.02 < 4.0 else i * 0.02) + 0.001 for i in range(len(sent))]
    rx, ticks, j = Receiver(16_000, FRAME), [], 0
    for k in range(len(sent)):
        tick = 0.007 + k * 0.02
        while j < len(sent) and arrivals[j] <= tick:
            rx.push(*sent[j], arrivals[j])
            j += 1
        before = rx.stats.removed_samples_for_acceleration
        frame = rx.pop(tick)
        ticks.append((tick, frame, rx.stats.removed_samples_for_acceleration - before, rx.delay))
    return ticks


@pytest.mark.skipif(bool(missing_tools()), reason="espeak-ng, sox or pesq missing")
def test_a_stall_released_at_once_is_shed_within_two_seconds_of_speech() -> None:
    """A sender stalls 400 ms (a Wi-Fi hiccup: packets held, then released at once): the
    receiver's delay is back within 60 ms of what it was within 2 s of speech (NetEq's fast
    accelerate; the careful rule alone took ~10 s), and no tick of voiced speech loses a whole
    frame (only a pause may)."""
    ticks = _stalled_speech()
    for tick, frame, removed, _ in ticks:
        if not is_pause(frame):
            assert removed < FRAME, f"a frame of voiced speech cut at {tick:.2f} s"
    delays = [delay for *_, delay in ticks]
    steady = float(np.median(delays[100:175]))  # 2.0-3.5 s
    assert max(delays[200:220]) > steady + 0.2  # the stall's excess, played out
    assert all(abs(d - steady) < 0.06 for d in delays[300:]), "not shed within 2 s"


@pytest.mark.skipif(bool(missing_tools()), reason="espeak-ng, sox or pesq missing")
def test_a_rush_sheds_pauses_first_and_whole_frames_of_them() -> None:
    """The same stall: for ``delay.RUSH_PATIENCE`` after the release only pauses lose
    samples (every tick that removes some begins in a pause: no voiced period cut), and a pause
    loses whole frames a tick even where little excess is left. PESQ-WB marks speech played
    fast down and a shorter pause hardly (the browser's ``stall`` profile: 1.89 when speech was
    rushed at once and a pause lost half a frame a tick under 300 ms of excess; 2.36 now)."""
    ticks = _stalled_speech()
    steady = float(np.median([delay for *_, delay in ticks[100:175]]))
    rushed = [
        (tick, frame, removed, delay) for tick, frame, removed, delay in ticks[200:] if removed
    ]
    for tick, frame, _, _ in rushed:
        if tick < 4.0 + RUSH_PATIENCE:  # the release, and the rush, at 4.0 s at the earliest
            assert quiet_prefix(frame[:BLOCK]) == BLOCK, f"speech cut at {tick:.2f} s"
    assert any(removed >= 2 * FRAME for _, _, removed, delay in rushed if delay < steady + 0.15)


def test_a_large_excess_is_rushed_down_to_what_recurring_stalls_need() -> None:
    """A large excess is rushed away down to the floor after a lone delay peak (a packet that
    came 300 ms after the line of the fastest ones: a stall); after a second peak within 10 s
    it is rushed only down to the highest peak's cushion, and the careful rule keeps that
    cushion too, for 10 s after the latest peak. Jitter the window already holds is no peak.
    A small excess never rushes."""
    d = decision(steady(0.35))
    for i in range(50):
        d.arrived(i * 0.02, i * 0.02)
    d.arrived(1.0, 1.3)  # the first packet after a 300 ms stall
    assert d.cushion(1.5) == 0.0  # a lone peak
    assert d.direction(2.0, sender_fec=False) < 0 and d.rush and not d.rush_voiced  # pauses first
    for i in range(51, 200):
        d.arrived(i * 0.02, i * 0.02)  # the sender back on its line
    d.arrived(4.0, 4.2)  # another stall, 200 ms, 3 s later: the pattern
    assert d.cushion(4.5) == pytest.approx(0.3, abs=0.001)
    assert d.direction(4.5, sender_fec=False) < 0 and d.rush  # 50 ms over it
    assert d.rush_voiced  # the rush began at 2.0 s: speech may lose periods too
    kept = decision(steady(0.32))  # the cushion and under a frame over the floor
    kept._peaks = d._peaks
    assert kept.direction(5.0, sender_fec=False) == 0  # the careful rule keeps it too
    assert kept.direction(14.6, sender_fec=False) < 0 and kept.rush  # 10 s after the latest
    jittery = decision([0.0] * 3 + list(np.linspace(0.0, 0.1, 97)))  # 0-100 ms of jitter
    for i in range(50):
        jittery.arrived(i * 0.02, i * 0.02 + (0.1 if i == 30 else 0.0))
    assert not jittery._peaks
    small = decision(steady(0.04))
    assert small.direction(0.0, sender_fec=False) < 0 and not small.rush


def _played(stalls: list[tuple[float, float]], *, skipped: bool) -> tuple[Receiver, list, list]:
    """Twelve seconds of a 440 Hz tone through the receiver, the sender stalling ``stalls``
    ((start, end) seconds: the stall's packets are released at once at its end); ``skipped``:
    the receiver's clock stalls with it (one process: the stall's ticks are never run, the
    clock's resync). The receiver, its frames, and the packets discarded so far after each."""
    sent = packets(tone(440, 12 * RATE, RATE, 0.3).astype(np.int16))

    def arrival(i: int) -> float:
        at = i * 0.02
        return next((end for start, end in stalls if start <= at < end), at) + 0.001

    arrivals = sorted((arrival(i), i) for i in range(len(sent)))
    rx, j, late, out = Receiver(16_000, FRAME), 0, [], []
    for k in range(len(sent)):
        tick = 0.007 + k * 0.02
        if skipped and any(start <= tick < end for start, end in stalls):
            continue
        while j < len(arrivals) and arrivals[j][0] <= tick:
            rx.push(*sent[arrivals[j][1]], arrivals[j][0])
            j += 1
        out.append((tick, rx.pop(tick)))
        late.append((tick, rx.stats.packets_discarded))
    return rx, out, late


def test_stalls_that_recur_keep_their_cushion_no_packet_late_after_the_first() -> None:
    """A sender stalls 300 ms every 2 s, each stall's packets released at once. The first
    stall is a lone peak: its excess is rushed away and the second stall finds no cushion (as
    NetEq's peak detector, it cannot know yet). From the second on, the stalls are a pattern:
    their cushion is kept, and every later stall is played from it: no packet is discarded
    late after the first stall, and the tone is heard at its level in every frame after the
    second (the reverted rush shed to two frames over the floor and lost a packet each
    stall)."""
    stalls = [(1.0 + 2.0 * k, 1.3 + 2.0 * k) for k in range(5)]
    _, out, late = _played(stalls, skipped=False)
    assert all(n == 0 for _, n in late), "a packet discarded late"
    levels = [rms_dbfs(frame) for tick, frame in out if tick > 3.5]
    assert min(levels) > -16, f"a frame concealed after the second stall: {min(levels):.1f} dB"


def test_a_process_that_stalls_again_and_again_does_not_pile_its_backlogs_up() -> None:
    """This very process stalls 300 ms every 2 s, past the media clock's resync: the ticks of
    a stall never run and the sender's packets of it come at once, so each stall leaves 300 ms
    more in the buffer. Kept whole (the careful rule sheds ~50 ms a second), they piled up to
    the buffer's 64 packets and it overflowed (main: 291 packets discarded, 146 frames quiet;
    the stalled-fork test's silence). The rush sheds what is over the stalls' cushion: nothing
    is discarded, nothing concealed, and the delay stays under 0.9 s."""
    stalls = [(1.0 + 2.0 * k, 1.3 + 2.0 * k) for k in range(5)]
    rx, out, late = _played(stalls, skipped=True)
    assert late[-1][1] == 0 and rx.stats.concealed_samples == 0
    levels = [rms_dbfs(frame) for tick, frame in out if tick > 2.0]
    assert min(levels) > -16, f"a quiet frame after the first stall: {min(levels):.1f} dB"
