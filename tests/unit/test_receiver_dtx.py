"""The Opus receiver (bridge/audio/receiver.py) fed by a sender in DTX, as a browser sends once
the bridge's answer says ``usedtx=1``: libopus' DTX, and WebRTC's rule of sending only the first
packet of no audio of each silence (the rest are dropped, their numbers never used)."""

from __future__ import annotations

import random

import numpy as np

from bridge.audio.opus import OpusEncoder
from bridge.audio.receiver import Receiver

from ..support.spectrum import band_energy, tone_breaks

RATE = 16_000
FRAME = 320
TS = 960
HZ, LEVEL = 440.0, 8000.0


def talk(pattern: list[tuple[float, bool]], noise: float = 0.0) -> np.ndarray:
    """Spurts of a continuous 440 Hz tone (its phase runs on through the pauses) and pauses,
    ``(seconds, speaking)``, over a background of white noise of ``noise`` (RMS)."""
    total = int(sum(s for s, _ in pattern) * RATE)
    t = np.arange(total) / RATE
    out = np.random.default_rng(7).normal(0.0, noise, total) if noise else np.zeros(total)
    at = 0
    for seconds, speaking in pattern:
        n = int(seconds * RATE)
        if speaking:
            out[at : at + n] += LEVEL * np.sin(2 * np.pi * HZ * t[at : at + n])
        at += n
    return np.clip(out, -32768, 32767).astype(np.int16)


def dtx_packets(pcm: np.ndarray) -> tuple[list[tuple[int, int, bytes]], list[int]]:
    """What a WebRTC sender with ``usedtx=1`` sends: ``(seq, ts, payload)`` per packet and the
    frame each one is, numbered without gaps over the packets sent."""
    enc = OpusEncoder(RATE, bitrate=32_000, complexity=5, fec=True, expected_loss=5, dtx=True)
    sent, frames, in_dtx = [], [], False
    for i in range(pcm.size // FRAME):
        payload = enc.encode(pcm[i * FRAME : (i + 1) * FRAME])
        if len(payload) <= 2:
            if in_dtx:
                continue  # WebRTC sends the first packet of no audio of a silence only
            in_dtx = True
        else:
            in_dtx = False
        sent.append(((4000 + len(sent)) & 0xFFFF, (9000 + i * TS) & 0xFFFFFFFF, payload))
        frames.append(i)
    return sent, frames


def run(
    rx: Receiver, sent: list, arrivals: list[float], *, until: float
) -> tuple[np.ndarray, list[bool]]:
    """Push packets at their arrival times and pop on a steady 20 ms clock until ``until``;
    the samples played, and whether the receiver was playing after each tick."""
    events = sorted((t, i) for i, t in enumerate(arrivals))
    out, playing, tick, j = [], [], 0.007, 0
    while tick < until:
        while j < len(events) and events[j][0] <= tick:
            seq, ts, payload = sent[events[j][1]]
            rx.push(seq, ts, payload, events[j][0])
            j += 1
        frame = rx.pop(tick)
        assert frame.shape == (FRAME,) and frame.dtype == np.int16
        out.append(frame)
        playing.append(rx.playing)
        tick += 0.02
    return np.concatenate(out), playing


def onsets(played: np.ndarray) -> list[int]:
    """Sample positions where the tone starts: a 5 ms block above half its level after 100 ms
    below a quarter of it (or the start)."""
    blocks = np.abs(played[: played.size // 80 * 80].astype(float)).reshape(-1, 80).max(axis=1)
    out, quiet = [], 20
    for k, peak in enumerate(blocks):
        if peak > LEVEL / 2 and quiet >= 20:
            out.append(k * 80)
        quiet = quiet + 1 if peak < LEVEL / 4 else 0
    return out


def test_a_silence_in_dtx_is_no_loss_and_the_next_spurt_plays_on_the_same_timeline() -> None:
    pattern = [(1.0, True), (2.0, False), (1.0, True), (1.5, False), (1.0, True), (0.5, False)]
    sent, frames = dtx_packets(talk(pattern))
    assert len(sent) < 0.7 * (7.0 / 0.02)  # the pauses are (almost) not sent
    arrivals = [0.001 + f * 0.02 for f in frames]
    rx = Receiver()
    played, playing = run(rx, sent, arrivals, until=7.0)
    starts = onsets(played)
    assert len(starts) == 3
    # Each spurt starts where the sender put it: 3.0 and 5.5 s after the first, to the sample.
    assert [s - starts[0] for s in starts[1:]] == [3 * RATE, int(5.5 * RATE)]
    rx_stats = rx.stats
    assert rx_stats.concealment_events == 0 and rx_stats.concealed_samples == 0
    assert rx_stats.packets_lost == 0
    # The pauses (less the frames of them that were sent) are the sender's DTX.
    assert 3.0 * RATE <= rx_stats.dtx_samples <= 4.0 * RATE
    assert all(playing[5:340])  # never an outage, never a restart
    # A muted microphone's comfort noise is silence: the pauses play as zeros, but for the
    # sender's updates every 400 ms, which decode to a least significant bit.
    for s, e in ((1.3, 2.9), (4.3, 5.4)):
        pause = played[starts[0] + int(s * RATE) : starts[0] + int(e * RATE)]
        assert np.abs(pause).max() <= 2 and np.count_nonzero(pause) < 0.05 * pause.size


def test_after_a_pause_in_dtx_jitter_finds_the_delay_the_last_spurt_had() -> None:
    """The delay learnt in the first spurt carries over the pause: the second spurt, as jittery
    as the first, plays with no break. Treated as an outage (the receiver before DTX was
    known) the stream restarted with no delay and the jitter broke the second spurt's tone."""
    pattern = [(3.0, True), (1.0, False), (3.0, True), (0.5, False)]
    sent, frames = dtx_packets(talk(pattern))
    rng = random.Random(5)
    arrivals = [0.001 + f * 0.02 + rng.uniform(0.0, 0.045) for f in frames]
    rx = Receiver()
    played, _ = run(rx, sent, arrivals, until=7.5)
    starts = onsets(played)
    second = played[starts[-1] + int(0.1 * RATE) : starts[-1] + int(2.9 * RATE)]
    jumps, silent = tone_breaks(second, RATE, HZ, LEVEL, skip=0.0)
    assert jumps == [] and silent == []
    assert rx.stats.concealment_events == 0


def test_comfort_noise_keeps_the_level_of_the_background() -> None:
    """Where the microphone hears a room, the pauses play the decoder's comfort noise (NetEq's
    codec-internal CNG), near the room's level, not a dead silence."""
    pattern = [(1.0, True), (2.0, False), (1.0, True), (0.3, False)]
    pcm = talk(pattern, noise=30.0)
    sent, frames = dtx_packets(pcm)
    assert len(sent) < 0.8 * (4.3 / 0.02)
    rx = Receiver()
    played, _ = run(rx, sent, [0.001 + f * 0.02 for f in frames], until=4.5)
    k = onsets(played)[0]
    pause = played[k + int(1.5 * RATE) : k + int(2.8 * RATE)].astype(float)
    room = pcm[int(1.5 * RATE) : int(2.8 * RATE)].astype(float)
    ratio_db = 10 * np.log10(np.mean(pause**2) / np.mean(room**2))
    assert -12.0 < ratio_db < 3.0
    assert band_energy(pause, RATE, HZ) < 0.01 * band_energy(played[k : k + RATE], RATE, HZ)
    assert rx.stats.dtx_samples > 1.5 * RATE and rx.stats.concealment_events == 0


def test_a_sender_in_dtx_that_sends_nothing_more_has_stopped() -> None:
    """No update for longer than libopus' 400 ms: the sender is gone, and the stream goes
    through an outage as a sender that stopped mid-word does."""
    sent, frames = dtx_packets(talk([(1.0, True), (0.5, False)]))
    rx = Receiver()
    _, playing = run(rx, sent, [0.001 + f * 0.02 for f in frames], until=4.0)
    assert playing[60] and not playing[-1]
    assert rx.stats.concealment_events == 1


def test_a_talk_spurts_lost_first_packet_is_a_loss_not_comfort_noise() -> None:
    """DTX numbers only the packets sent: when the next packet held shows a number missing, the
    frame due was sent and lost (a spurt's first, after the silence), so the next packet's FEC
    rebuilds it. Taken for DTX, it played as comfort noise: the spurt's onset was silent."""
    pattern = [(1.0, True), (1.0, False), (1.0, True), (0.3, False)]
    sent, frames = dtx_packets(talk(pattern))
    # The second spurt's first packet: the first with audio after the silence's DTX (libopus
    # leaves DTX a frame early, its look-ahead hearing the tone).
    onset = next(i for i in range(1, len(sent)) if frames[i] > 90 and len(sent[i - 1][2]) <= 2)
    assert len(sent[onset][2]) > 2 and 95 <= frames[onset] <= 100, frames[onset]
    del sent[onset], frames[onset]
    rx = Receiver(min_delay=0.04)  # the next packet is at hand when the lost one is due
    played, playing = run(rx, sent, [0.001 + f * 0.02 for f in frames], until=3.3)
    stats = rx.stats
    assert stats.fec_recovered_samples == FRAME and stats.fec_packets_received == 1
    assert stats.concealment_events == 0 and all(playing[5:])
    # The onset is heard from its first frame: two spurts, 2.0 s apart to the sample.
    starts = onsets(played)
    assert [s - starts[0] for s in starts] == [0, 2 * RATE], starts


def test_a_late_packet_of_no_audio_still_says_the_sender_is_silent() -> None:
    """The silence's packet of no audio comes after its frame was concealed: the missing frames
    after it are still the sender's DTX. Ignored as late, the silence was an outage (ten
    frames concealed, the stream restarted with no delay)."""
    sent, frames = dtx_packets(talk([(1.0, True), (1.5, False), (1.0, True), (0.3, False)]))
    # A packet of no audio that the sender follows with nothing for 400 ms (its DTX proper).
    late = next(
        i for i, (_, _, p) in enumerate(sent) if len(p) <= 2 and frames[i + 1] > frames[i] + 10
    )
    arrivals = [0.001 + f * 0.02 for f in frames]
    arrivals[late] += 0.1  # five frames late
    rx = Receiver()
    played, playing = run(rx, sent, arrivals, until=3.8)
    assert all(playing[5:]), playing.index(False)  # no outage, no restart
    assert rx.stats.concealment_events == 1
    assert rx.stats.concealed_samples <= 6 * FRAME
    assert rx.stats.dtx_samples > 1.0 * RATE
    # The late packet showed a jitter spike: the delay grew by a frame (an insertion) at most.
    starts = onsets(played)
    assert len(starts) == 2 and 0 <= starts[1] - starts[0] - int(2.5 * RATE) <= FRAME, starts


def test_a_red_copy_held_first_does_not_hide_the_lost_numbers() -> None:
    """A spurt's first two packets lost, the third bringing a RED copy of the second: the copy
    has no number, so the gap is read from the numbered packet behind it, and the first frame
    is still a loss (rebuilt from the copy's FEC), not comfort noise."""
    sent, frames = dtx_packets(talk([(1.0, True), (1.0, False), (1.0, True), (0.3, False)]))
    onset = next(i for i in range(1, len(sent)) if frames[i] > 90 and len(sent[i - 1][2]) <= 2)
    copy = sent[onset + 1]
    del sent[onset : onset + 2], frames[onset : onset + 2]
    rx = Receiver(min_delay=0.06)
    tick, j, arrivals = 0.007, 0, [0.001 + f * 0.02 for f in frames]
    while tick < 3.3:
        while j < len(sent) and arrivals[j] <= tick:
            seq, ts, payload = sent[j]
            if j == onset:  # the third packet, RED around the second's copy
                rx.push_redundant(copy[1], copy[2], arrivals[j])
            rx.push(seq, ts, payload, arrivals[j])
            j += 1
        rx.pop(tick)
        tick += 0.02
    assert rx.stats.red_recovered_packets == 1
    assert rx.stats.fec_recovered_samples == FRAME and rx.stats.concealment_events == 0


def test_telephone_events_numbered_in_a_silence_are_no_gap() -> None:
    """A key pressed while the microphone is in DTX: the RFC 4733 packets take numbers of the
    audio's sequence (the receiver is told, ``numbered``), so the spurt after them is no loss.
    Read as a gap, the frames before the spurt were concealed as four lost packets."""
    sent, frames = dtx_packets(talk([(1.0, True), (1.0, False), (1.0, True), (0.3, False)]))
    onset = next(i for i in range(1, len(sent)) if frames[i] > 90 and len(sent[i - 1][2]) <= 2)
    events = [(sent[onset][0] + k) & 0xFFFF for k in range(4)]  # sent at 1.7 s, in the pause
    sent = [*sent[:onset], *(((s + 4) & 0xFFFF, t, p) for s, t, p in sent[onset:])]
    rx = Receiver(min_delay=0.06)
    tick, j, arrivals = 0.007, 0, [0.001 + f * 0.02 for f in frames]
    while tick < 3.3:
        if events and tick >= 1.7:
            rx.numbered(events.pop(0))
        while j < len(sent) and arrivals[j] <= tick:
            rx.push(*sent[j], arrivals[j])
            j += 1
        rx.pop(tick)
        tick += 0.02
    assert rx.stats.concealment_events == 0 and rx.stats.concealed_samples <= 3 * FRAME
    assert rx.stats.dtx_samples > 0.5 * RATE
