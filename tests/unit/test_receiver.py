"""The Opus receiver (bridge/audio/receiver.py) on simulated networks: seeded impairments, a
steady 20 ms output clock, assertions on the samples it plays."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bridge.audio.opus import OpusDecoder, OpusEncoder, has_fec
from bridge.audio.receiver import Receiver

from ..support.spectrum import band_energy, tone_breaks

RATE = 16_000
FRAME = 320
TS = 960
OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE = 4024, 3001


def tone(seconds: float, hz: float = 440.0, level: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * level).astype(np.int16)


def warble(seconds: float, hz: float = 440.0, level: float = 8000.0) -> np.ndarray:
    """A tone whose pitch wavers (±40 Hz at 4 Hz), as a voice does: libopus keeps sending FEC
    data for it, where a steady tone soon gets none."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * (hz * t + 10 * np.sin(2 * np.pi * 4 * t))) * level).astype(np.int16)


def packets(pcm: np.ndarray, *, fec: bool = True, seq0: int = 1000, ts0: int = 5000) -> list:
    """(seq, ts, payload) per 20 ms frame, as a browser sends speech (FEC tuned for 10 %
    loss). The tones are coded as speech would be (SILK: only SILK frames carry FEC)."""
    enc = OpusEncoder(RATE, bitrate=32_000, complexity=5, fec=fec, expected_loss=10, dtx=False)
    enc._ctl(OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE)
    out = []
    for i in range(pcm.size // FRAME):
        payload = enc.encode(pcm[i * FRAME : (i + 1) * FRAME])
        out.append(((seq0 + i) & 0xFFFF, (ts0 + i * TS) & 0xFFFFFFFF, payload))
    return out


def play(
    receiver: Receiver,
    sent: list,
    arrivals: list[float | None],
    *,
    phase: float = 0.007,
    extra: float = 0.0,
) -> np.ndarray:
    """Push each packet at its arrival time (``None``: lost) and pop on a steady 20 ms clock
    (ticks at ``phase`` + k * 20 ms), in time order, until every packet was played and then
    ``extra`` seconds more; the played samples."""
    events = sorted((t, i) for i, t in enumerate(arrivals) if t is not None)
    out = []
    tick = phase
    j = 0
    end = float("inf")
    while True:
        if end == float("inf") and j == len(events) and not receiver.buffered:
            end = tick + extra
        if tick >= end:
            break
        while j < len(events) and events[j][0] <= tick:
            seq, ts, payload = sent[events[j][1]]
            receiver.push(seq, ts, payload, events[j][0])
            j += 1
        frame = receiver.pop(tick)
        assert frame.shape == (FRAME,) and frame.dtype == np.int16
        out.append(frame)
        tick += 0.02
    return np.concatenate(out)


def reference(sent: list) -> np.ndarray:
    dec = OpusDecoder(RATE)
    return np.concatenate([dec.decode(p) for _, _, p in sent])


def start_of(played: np.ndarray, ref: np.ndarray) -> int:
    """Where the reference's first frame begins in what was played (played starts with the
    silence before the first packet)."""
    for k in range(0, played.size - FRAME, FRAME):
        if np.array_equal(played[k : k + FRAME], ref[:FRAME]):
            return k
    raise AssertionError("the first frame was never played")


def test_a_clean_network_plays_every_packet_bit_exact_with_less_than_a_frame_of_delay() -> None:
    sent = packets(tone(3.0))
    arrivals = [0.001 + i * 0.02 for i in range(len(sent))]
    rx = Receiver()
    played = play(rx, sent, arrivals)
    ref = reference(sent)
    k = start_of(played, ref)
    assert np.array_equal(played[k : k + ref.size], ref)  # nothing concealed, moved or cut
    assert rx.stats.concealed_samples == 0 and rx.stats.packets_discarded == 0
    assert rx.stats.packets_lost == 0 and rx.stats.packets_received == len(sent)
    delay = rx.stats.jitter_buffer_delay / rx.stats.jitter_buffer_emitted_count
    assert delay < 0.02


def test_reordered_packets_are_played_in_order_not_dropped() -> None:
    sent = packets(tone(3.0))
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    for i in range(20, len(sent) - 1, 10):  # every 10th pair swapped: the later one first
        arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]  # type: ignore[assignment]
        arrivals[i] += 0.005  # type: ignore[operator]
    rx = Receiver(min_delay=0.03)
    played = play(rx, sent, arrivals)
    ref = reference(sent)
    k = start_of(played, ref)
    assert np.array_equal(played[k : k + ref.size], ref)
    assert rx.stats.packets_reordered >= 10 and rx.stats.packets_discarded == 0


def test_a_lost_packet_is_rebuilt_from_the_next_packets_fec() -> None:
    sent = packets(warble(2.0, hz=700))
    lost = 40
    assert has_fec(sent[lost + 1][2])
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    arrivals[lost] = None
    rx = Receiver(min_delay=0.03)  # the next packet is at hand when the lost one is due
    played = play(rx, sent, arrivals)
    # What a decoder that saw the same packets produces for the lost frame: the LBRR copy.
    dec = OpusDecoder(RATE)
    for _, _, p in sent[:lost]:
        dec.decode(p)
    rebuilt = dec.decode_fec(sent[lost + 1][2], FRAME)
    ref = reference(sent)
    k = start_of(played, ref)
    assert np.array_equal(played[k + lost * FRAME : k + (lost + 1) * FRAME], rebuilt)
    assert rx.stats.fec_packets_received == 1 and rx.stats.concealment_events == 0
    assert rx.stats.packets_lost == 1
    # ... and the stream goes on at once with the next packet.
    after = played[k + (lost + 1) * FRAME : k + (lost + 2) * FRAME].astype(np.float64)
    assert np.sqrt(np.mean(after**2)) > 4000


def test_without_fec_a_loss_is_concealed_never_a_hole() -> None:
    sent = packets(tone(2.0, hz=500), fec=False)
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    lost = {30, 31, 60}
    for i in lost:
        arrivals[i] = None
    rx = Receiver()  # no FEC from this sender: no frame of delay added to wait for it
    played = play(rx, sent, arrivals)
    # Exactly what libopus makes of those losses: its concealment in place of each lost frame,
    # on the same timeline (nothing skipped, nothing silent, nothing shifted).
    dec = OpusDecoder(RATE)
    expected = np.concatenate(
        [dec.conceal(FRAME) if i in lost else dec.decode(p) for i, (_, _, p) in enumerate(sent)]
    )
    k = start_of(played, expected)
    assert np.array_equal(played[k : k + expected.size], expected)
    concealed = played[k + 30 * FRAME : k + 31 * FRAME]
    assert band_energy(concealed, RATE, 500) > 0.5  # the tone goes on through the loss
    assert rx.stats.concealment_events == 2 and rx.stats.concealed_samples == 3 * FRAME
    assert rx.stats.fec_packets_received == 0 and rx.stats.packets_lost == 3


@pytest.mark.parametrize("seed", [3, 4])
def test_after_a_loss_the_next_packet_is_kept_at_hand_so_fec_rebuilds_most_losses(
    seed: int,
) -> None:
    rng = random.Random(seed)
    sent = packets(warble(20.0))
    arrivals = [None if rng.random() < 0.05 else 0.001 + i * 0.02 for i in range(len(sent))]
    rx = Receiver()
    play(rx, sent, arrivals)
    s = rx.stats
    assert 30 < s.packets_lost < 80
    # A loss can be rebuilt when the next packet arrived and libopus put FEC data in it.
    recoverable = sum(
        1
        for i in range(len(sent) - 1)
        if arrivals[i] is None and arrivals[i + 1] is not None and has_fec(sent[i + 1][2])
    )
    assert s.fec_packets_received == recoverable
    delay = s.jitter_buffer_delay / s.jitter_buffer_emitted_count
    assert 0.02 < delay < 0.06  # a frame or two more than on a clean network, no more


@pytest.mark.parametrize("seed", [1, 2])
def test_jitter_that_reorders_is_absorbed_by_an_adaptive_delay(seed: int) -> None:
    rng = random.Random(seed)
    sent = packets(tone(12.0))
    arrivals = [0.001 + i * 0.02 + rng.uniform(0, 0.04) for i in range(len(sent))]
    rx = Receiver()
    play(rx, sent, arrivals)
    s = rx.stats
    assert s.packets_reordered > 50  # 0-40 ms jitter on 20 ms packets reorders many
    # Within a second or two the delay covers the jitter: only a few packets come too late.
    assert s.packets_discarded < 0.03 * len(sent)
    delay = s.jitter_buffer_delay / s.jitter_buffer_emitted_count
    assert 0.02 < delay < 0.08


def play_drifting(rx: Receiver, sent: list, ppm: int) -> tuple[np.ndarray, list[int]]:
    """``sent`` from a sender whose clock runs ``ppm`` fast (+) or slow (-), popped on our
    steady clock; the samples played and every change of the stretch counters (samples
    inserted: +, removed: -) as it happened."""
    period = 0.02 / (1 + ppm / 1e6)
    tick, j, out, steps = 0.007, 0, [], []
    before = 0
    while j < len(sent) or rx.buffered:
        while j < len(sent) and 0.001 + j * period <= tick:
            rx.push(*sent[j], 0.001 + j * period)
            j += 1
        out.append(rx.pop(tick))
        s = rx.stats
        now = s.inserted_samples_for_deceleration - s.removed_samples_for_acceleration
        if now != before:
            steps.append(now - before)
        before = now
        tick += 0.02
    return np.concatenate(out), steps


def largest_step(pcm: np.ndarray) -> float:
    return float(np.abs(np.diff(pcm.astype(np.float64))).max())


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_sender_clock_drift_is_followed_a_pitch_period_at_a_time_never_a_frame(ppm: int) -> None:
    """A sender whose clock runs ``ppm`` fast or slow, speech-like: 1.5 s of tone, 0.5 s of
    silence, 30 s. The delay stays bounded and moves by pitch periods (WSOLA), never by a
    whole 20 ms frame; nothing is concealed and the waveform never steps."""
    burst = np.concatenate([tone(1.5, hz=440), np.zeros(int(0.5 * RATE), np.int16)])
    sent = packets(np.tile(burst, 15))
    rx = Receiver()
    played, steps = play_drifting(rx, sent, ppm)
    s = rx.stats
    assert steps and all(0 < abs(step) <= 240 for step in steps)  # at most 15 ms at a time
    if ppm > 0:  # 60 ms more audio than wall time
        assert s.removed_samples_for_acceleration >= FRAME
        assert s.inserted_samples_for_deceleration == 0
    else:
        assert s.inserted_samples_for_deceleration >= 2 * FRAME
        assert s.removed_samples_for_acceleration < FRAME
    assert s.packets_discarded == 0 and s.concealment_events == 0 and s.concealed_samples == 0
    delay = s.jitter_buffer_delay / s.jitter_buffer_emitted_count
    assert delay < 0.045
    # The tone's largest sample-to-sample step is 2π·440/16000·8000 ≈ 1382 (plus the codec's
    # error): a dropped or inserted frame, or a splice out of phase, steps by up to 16000.
    assert largest_step(played) < 2000
    assert largest_step(reference(sent)) > 1300  # the bar is near the tone's own


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_drift_in_speech_without_pauses_is_followed_in_the_voiced_periods(ppm: int) -> None:
    """20 s of a voice-like warble without a single pause: the stretch happens inside the
    voice, where its periods repeat, and the delay still follows the sender's clock."""
    sent = packets(warble(20.0, hz=220))
    rx = Receiver()
    played, steps = play_drifting(rx, sent, ppm)
    s = rx.stats
    moved = s.inserted_samples_for_deceleration - s.removed_samples_for_acceleration
    assert all(0 < abs(step) <= 240 for step in steps)
    # 40 ms of drift over 20 s, less the 22 ms the delay may wander before it is moved.
    assert (moved <= -240) if ppm > 0 else (moved >= 240)
    assert s.concealment_events == 0 and s.packets_discarded == 0
    assert s.jitter_buffer_delay / s.jitter_buffer_emitted_count < 0.045

    # Level never falls inside the voice below the codec's own dips (a cut would).
    def levels(pcm: np.ndarray) -> np.ndarray:
        frames = pcm[: pcm.size // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
        return np.sqrt(np.mean(frames**2, axis=1))

    voiced = levels(played)
    voiced = voiced[int(np.argmax(voiced > 3000)) + 1 : -3]
    assert voiced.min() > 0.6 * levels(reference(sent))[5:-3].min()
    assert largest_step(played) < 1.3 * largest_step(reference(sent))


@pytest.mark.parametrize("ppm", [2000, -2000])
def test_drift_on_a_continuous_tone_never_jumps_in_phase_nor_goes_silent(ppm: int) -> None:
    """45 s of a tone with no pause to hide in, from a sender 2000 ppm fast or slow, with a
    few ms of seeded arrival and clock-tick jitter: the 90 ms of drift are followed by whole
    periods of the tone, so its phase never jumps and no 5 ms of it goes silent (a frame of
    concealment, or a stretch stuck a few samples short of a frame until a packet is late,
    would do both)."""
    rng = random.Random(ppm)
    sent = packets(tone(45.0, hz=440))
    period = 0.02 / (1 + ppm / 1e6)
    arrivals = [0.001 + j * period + abs(rng.gauss(0, 0.002)) for j in range(len(sent))]
    rx = Receiver()
    tick, j, out = 0.007, 0, []
    while j < len(sent) or rx.buffered:
        now = tick + abs(rng.gauss(0, 0.001))
        while j < len(sent) and arrivals[j] <= now:
            rx.push(*sent[j], arrivals[j])
            j += 1
        out.append(rx.pop(now))
        tick += 0.02
    s = rx.stats
    moved = s.inserted_samples_for_deceleration - s.removed_samples_for_acceleration
    assert (moved <= -3 * FRAME) if ppm > 0 else (moved >= 3 * FRAME)  # followed (90 ms)
    jumps, silent = tone_breaks(np.concatenate(out)[: len(sent) * FRAME], RATE, 440, 8000)
    assert jumps == [] and silent == []
    assert s.concealment_events == 0


def test_an_outage_goes_silent_and_the_stream_restarts_when_packets_return() -> None:
    sent = packets(tone(4.0, hz=600))
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    for i in range(50, 150):  # two seconds gone
        arrivals[i] = None
    rx = Receiver()
    played = play(rx, sent, arrivals)
    frames = played.reshape(-1, FRAME).astype(np.float64)
    levels = np.sqrt(np.mean(frames**2, axis=1))
    start = int(np.argmax(levels > 1000))
    gap = levels[start + 62 : start + 140]
    assert gap.max() < 50  # silence, not two seconds of smeared concealment
    assert levels[start + 160 : start + 190].min() > 1000  # the tone is back
    assert rx.stats.silent_concealed_samples > 50 * FRAME


def test_a_backlog_longer_than_the_buffer_is_flushed_and_the_stream_plays_on() -> None:
    """A peer's first 2 s arrive at once (a GStreamer peer sends what it made before DTLS was
    up), more than the buffer's 64 packets: it is flushed, as NetEq flushes its buffer, and the
    stream plays on from the packets after it, every frame the tone. (Dropping only the oldest
    to make room dropped the frame due next, then the next arrival the next one due: the
    stream was concealed to its end, 0.5 s in, every packet after discarded.)"""
    sent = packets(tone(6.0, hz=600))
    burst = 100
    arrivals: list[float | None] = [0.5 + 0.0005 * i for i in range(burst)]
    arrivals += [0.55 + (i - burst + 1) * 0.02 for i in range(burst, len(sent))]
    rx = Receiver()
    played = play(rx, sent, arrivals)
    frames = played.reshape(-1, FRAME).astype(np.float64)
    levels = np.sqrt(np.mean(frames**2, axis=1))
    start = int(np.argmax(levels > 1000))
    assert levels[start:-1].min() > 1000  # the tone in every frame, the last one aside
    assert rx.stats.concealed_samples == 0 and rx.stats.packets_discarded == 64


@pytest.mark.parametrize("came", [0.2, 0.212])  # before its frame is due; just after
def test_an_older_packet_never_flushes_a_full_buffer(came: float) -> None:
    """A reordered or late packet that finds the buffer full is discarded: flushing then
    (as a newer one does) threw away the 64 packets due next and started the stream again
    from the old one, 1.2 s of concealment."""
    sent = packets(tone(4.0, hz=600))
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    arrivals[10] = came
    for i in range(11, 75):
        arrivals[i] = 0.19  # 64 packets at once: the buffer is full when packet 10 comes
    rx = Receiver()
    played = play(rx, sent, arrivals)
    assert rx.stats.packets_discarded == 1  # packet 10
    levels = np.sqrt(np.mean(played.reshape(-1, FRAME).astype(np.float64) ** 2, axis=1))
    start = int(np.argmax(levels > 1000))
    assert (levels[start:-1] < 1000).sum() <= 1  # packet 10's frame at most


def test_redundant_copies_are_held_no_more_than_the_buffer_holds() -> None:
    """RED copies (RFC 2198) at every timestamp of the next second, thousands of them with each
    packet (a broken or hostile sender): the buffer keeps at most its 64 places, copies
    included, and the stream's own packets still play the tone. Before, a copy found a place
    whatever the buffer held."""
    sent = packets(tone(2.0, hz=600))
    arrivals: list[float | None] = [0.001 + i * 0.02 for i in range(len(sent))]
    rx = Receiver()
    held_most, levels = 0, []
    for i, (seq, ts, payload) in enumerate(sent):
        if 20 <= i < 40:  # copies of frames still to come, 7 RTP ticks apart
            for k in range(1, 2000):
                rx.push_redundant((ts + 7 * k) & 0xFFFFFFFF, payload, arrivals[i])
        rx.push(seq, ts, payload, arrivals[i])
        held_most = max(held_most, len(rx._packets.held))
        frame = rx.pop(arrivals[i] + 0.006).astype(np.float64)
        levels.append(np.sqrt(np.mean(frame**2)))
    assert held_most <= 64
    assert 0 < rx.stats.red_recovered_packets <= 64 * 20
    assert min(levels[2:]) > 1000  # the tone in every frame once playing


def test_sequence_numbers_and_timestamps_wrap() -> None:
    sent = packets(tone(2.0), seq0=0xFFFF - 20, ts0=0xFFFFFFFF - 20 * TS)
    arrivals = [0.001 + i * 0.02 for i in range(len(sent))]
    rx = Receiver()
    played = play(rx, sent, arrivals)
    ref = reference(sent)
    k = start_of(played, ref)
    assert np.array_equal(played[k : k + ref.size], ref)
    assert rx.stats.packets_lost == 0 and rx.stats.packets_discarded == 0


def test_garbage_and_duplicates_are_counted_never_raised() -> None:
    sent = packets(tone(1.0))
    rx = Receiver()
    t = 0.0
    for seq, ts, payload in sent[:10]:
        rx.push(seq, ts, payload, t)
        rx.push(seq, ts, payload, t)  # duplicate
        t += 0.02
    rx.push(sent[10][0], sent[10][1], b"\xff" * 7, t)  # not Opus
    rx.push(sent[11][0], sent[11][1], b"", t)  # empty
    out = [rx.pop(0.01 + i * 0.02) for i in range(14)]
    assert all(f.shape == (FRAME,) for f in out)
    assert rx.stats.packets_discarded >= 11
    w3c = rx.stats.as_w3c()
    assert w3c["packetsDiscarded"] == rx.stats.packets_discarded
    assert {"concealedSamples", "jitterBufferDelay", "fecPacketsReceived"} <= set(w3c)


def test_a_first_packet_off_the_senders_20_ms_grid_does_not_derail_the_timeline() -> None:
    """GStreamer's first packet sits 312 ticks before the grid its later packets keep: the
    next packet, less than a frame away, is the next one — nothing is discarded as late."""
    sent = packets(tone(2.0))
    seq, ts, payload = sent[0]
    sent[0] = (seq, ts - 312, payload)
    arrivals = [0.001 + i * 0.02 for i in range(len(sent))]
    rx = Receiver()
    played = play(rx, sent, arrivals)
    assert rx.stats.packets_discarded == 0 and rx.stats.concealed_samples == 0
    assert rx.stats.total_samples_received == len(sent) * FRAME
    frames = played.reshape(-1, FRAME).astype(np.float64)
    assert np.sqrt((frames[-50:] ** 2).mean(axis=1)).min() > 1000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_receiver_that_only_counted_resumes_with_the_jitter_it_learned(seed: int) -> None:
    """An idle leg only counts its packets (``rtc/uplink.py``); when something needs its audio
    again (a recording starts), playing resumes behind the delay the path's jitter needs,
    learned while counting: a receiver that started bare concealed 40–60 ms at the first
    late packet, heard as a dip in the recording's first frames."""
    rng = np.random.default_rng(seed)
    sent = packets(tone(4.0))
    arrivals = [i * 0.02 + 0.001 + rng.uniform(0, 0.008) for i in range(len(sent))]
    rx = Receiver(RATE, FRAME)
    order = sorted(range(len(sent)), key=lambda k: arrivals[k])
    levels, tick, j = [], 0.007, 0
    while tick < 4.0:
        while j < len(order) and arrivals[order[j]] <= tick:
            k = order[j]
            if 0.5 <= arrivals[k] < 2.5:
                rx.count(*sent[k], arrivals[k])  # idle: forwarded, not decoded
            else:
                rx.push(*sent[k], arrivals[k])
            j += 1
        frame = rx.pop(tick)
        levels.append(float(np.sqrt((frame.astype(np.float64) ** 2).mean())))
        tick += 0.02
    concealed = rx.stats.concealed_samples
    resumed = next(i for i, t in enumerate(np.arange(len(levels)) * 0.02) if t >= 2.5)
    played = np.array(levels[resumed:])
    first = int(np.argmax(played > 0))
    assert first <= 2, played[:6]  # a frame or two of waiting at most
    steady = 8000 / np.sqrt(2)
    # (the first frame is the decoder's first since 0.5 s: the leg warms it, this test not)
    assert played[first + 1 :].min() > 0.8 * steady, played[first : first + 12].round()
    assert rx.stats.concealed_samples == concealed  # nothing concealed since the resume


def test_counted_jitter_resumes_as_a_decision_that_observed_every_counted_packet() -> None:
    """``CountedJitter`` keeps the counted packets' slacks and gives them to the decision only
    when playing resumes: the delay it then asks for is the one a decision that observed each
    packet as it was counted gives (a window's worth and more, and a timeline jump)."""
    from bridge.audio.delay import CountedJitter, DelayDecision

    def decision() -> DelayDecision:
        return DelayDecision(
            min_delay=0.0, max_delay=0.2, margin=0.004, window=100, quantile=0.02, loss_memory=10
        )

    rng = np.random.default_rng(7)
    lazy, every = decision(), decision()
    counted, anchor = CountedJitter(lazy), None
    arrivals = [(i * 0.02 + (5.0 if i >= 60 else 0.0), 7 + i * 0.02 + rng.uniform(0, 0.03))
                for i in range(300)]  # fmt: skip
    for rtp_seconds, at in arrivals:  # the counting as it was: every packet observed
        counted.counted(rtp_seconds, at)
        due = None if anchor is None else anchor + rtp_seconds
        if due is None or abs(due - at) > 1.0:
            every.reset()
            anchor, due = at - rtp_seconds, at
        every.observe(due - at)
    assert anchor is not None
    rtp_seconds, at = 300 * 0.02 + 5.0, 7 + 300 * 0.02 + 0.001
    waits = counted.resume(rtp_seconds, at)
    assert waits == every.delay_for(anchor + rtp_seconds - at) and waits > 0.01
    assert lazy.quantiles() == every.quantiles() and not counted.counting
