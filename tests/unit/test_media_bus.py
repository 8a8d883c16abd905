"""The call bus on its own: taps, sources and the mix (no sockets)."""

from __future__ import annotations

import logging

import numpy as np

from bridge.attachments.queued_source import QueuedSource
from bridge.audio import FRAME_SAMPLES
from bridge.audio.pcm import mix_over
from bridge.media import CallBus

from ..support.calls import agent_sink

SILENT = np.zeros(FRAME_SAMPLES, dtype=np.int16)


async def test_a_failing_tap_is_removed_and_audio_goes_on() -> None:
    bus = CallBus("t")
    seen = []

    def broken(frame) -> None:
        raise OSError("disk full")

    bus.add_uplink_tap(broken)
    bus.add_uplink_tap(lambda f: seen.append(f))
    bus.open_uplink()
    for _ in range(3):
        bus.push_uplink(np.ones(FRAME_SAMPLES, dtype=np.int16))
    assert len(seen) == 3 and bus.stats.uplink_frames == 3
    assert broken not in bus._uplink_taps
    await bus.aclose()


async def test_sources_wait_for_the_leg() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.ones(FRAME_SAMPLES * 3, dtype=np.int16))
    bus.add_source(src)
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))  # no leg yet: nothing consumed
    assert src.buffered_ms == 60
    bus.open_uplink()
    bus.push_uplink(np.zeros(FRAME_SAMPLES, dtype=np.int16))
    assert src.buffered_ms == 40
    await bus.aclose()


async def test_a_clocked_readers_first_frame_is_the_newest_then_one_per_tick(caplog) -> None:
    """Frames made before the WhatsApp leg's sender took its first (the microphone starts
    first) are not owed: they would stay queued, a frame of delay each, for the whole call —
    dropped and counted, not said. A sender that falls behind later loses its oldest frames
    past the bound: counted, and said once a call at WARNING (it was counted only); so is a
    remote engine's pump that does not read its queue."""
    caplog.set_level(logging.INFO, logger="bridge")
    bus = CallBus("t")
    bus.open_uplink(clocked=True)
    for level in (1, 2, 3, 4):
        bus.push_uplink(np.full(FRAME_SAMPLES, level, dtype=np.int16))
    first = bus.take_uplink()
    assert first is not None and first.pcm[0] == 4 and bus.take_uplink() is None
    assert bus.stats.uplink_dropped_overflow == 3 and not caplog.records
    for level in (5, 6):  # later, a sender that missed a tick takes both, in order
        bus.push_uplink(np.full(FRAME_SAMPLES, level, dtype=np.int16))
    taken = [bus.take_uplink(), bus.take_uplink()]
    assert [f.pcm[0] for f in taken if f is not None] == [5, 6]
    assert bus.stats.uplink_dropped_overflow == 3 and not caplog.records
    for _ in range(2):  # one that missed four ticks, twice: the oldest of each five dropped
        for level in (7, 8, 9, 10, 11):
            bus.push_uplink(np.full(FRAME_SAMPLES, level, dtype=np.int16))
        taken = [bus.take_uplink() for _ in range(4)]
        assert [f.pcm[0] for f in taken if f is not None] == [9, 10, 11]
    assert bus.stats.uplink_dropped_overflow == 7
    (said,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "fell behind" in said.getMessage() and "overflow" in said.getMessage()
    await bus.aclose()
    caplog.clear()
    bus = CallBus("q", uplink_capacity=2)
    bus.open_uplink()  # a remote engine's pump, reading its queue no more
    for level in (1, 2, 3, 4):
        bus.push_uplink(np.full(FRAME_SAMPLES, level, dtype=np.int16))
    assert [(await bus.read_uplink()).pcm[0] for _ in range(2)] == [3, 4]
    assert bus.stats.uplink_dropped_overflow == 2
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    await bus.aclose()


async def test_mixing_clips_at_full_scale_never_wraps() -> None:
    bus = CallBus("t")
    src = QueuedSource()
    src.push(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    bus.add_source(src)
    bus.open_uplink()
    out = []
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    bus.push_uplink(np.full(FRAME_SAMPLES, 30_000, dtype=np.int16))
    assert out[0].dtype == np.int16 and (out[0] == 32767).all()  # 60 000 clipped, not wrapped
    src.push(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    bus.push_uplink(np.full(FRAME_SAMPLES, -30_000, dtype=np.int16))
    assert (out[1] == -32768).all()
    await bus.aclose()


def test_the_mix_is_the_sum_clipped_once_and_a_silent_source_leaves_the_frame_as_it_is() -> None:
    """The samples ``np.clip`` of the int32 sum gave, on loud noise; a source waiting (its
    frame all zeros) costs no arithmetic: the frame goes on as it came, and it is never
    changed in place."""
    rng = np.random.default_rng(9)
    for _ in range(50):
        mic, a, b = (rng.integers(-32768, 32768, FRAME_SAMPLES).astype(np.int16) for _ in "mab")
        kept = mic.copy()
        reference = np.clip(mic.astype(np.int32) + a + b, -32768, 32767).astype(np.int16)
        assert np.array_equal(mix_over(mic, [a, SILENT, b]), reference)
        assert np.array_equal(mic, kept)
        assert mix_over(mic, [SILENT, SILENT]) is mic
        wide = mic.astype(np.int32) * 2  # the conference's int32 sum: clipped all the same
        assert np.array_equal(mix_over(wide, [SILENT]), np.clip(wide, -32768, 32767))


def test_an_underrun_fades_out_and_the_audio_fades_back_in() -> None:
    """A downlink underrun is not a hard cut: the first missing frame is the last one played,
    time-reversed (continuing from its last sample with no step) and faded to zero; the rest
    is silence; the audio that resumes ramps up over 5 ms instead of starting with a step."""
    from bridge.audio import tone

    bus = CallBus("c1")
    sink = agent_sink(bus)
    frames = [tone(440, FRAME_SAMPLES, start=i * FRAME_SAMPLES) for i in range(6)]
    for frame in frames[:3]:
        bus.push_downlink(frame)
    played = [sink.pop() for _ in range(3)]
    assert played[0] is not None and abs(int(played[0][0])) <= 1  # a call's first frame fades in
    assert played[2] is not None and np.array_equal(played[2], frames[2])
    concealed = sink.pop()  # the engine's next frame is late
    assert concealed is not None and sink.concealed == 1
    # No step at the seam: it starts where the last frame ended, and decays to nothing.
    assert abs(int(concealed[0]) - int(frames[2][-1])) <= 1
    assert abs(int(concealed[-1])) <= 1
    first, last = concealed[:80].astype(float), concealed[-80:].astype(float)
    assert np.sqrt(np.mean(last**2)) < 0.2 * np.sqrt(np.mean(first**2))
    assert sink.pop() is None and sink.pop() is None  # then silence while it refills
    for frame in frames[3:]:
        bus.push_downlink(frame)
    resumed = sink.pop()
    assert resumed is not None and abs(int(resumed[0])) <= 1  # no step into the audio
    assert np.array_equal(resumed[80:], frames[3][80:])
    steps = np.abs(np.diff(resumed[:80].astype(int)))
    assert steps.max() <= np.abs(np.diff(frames[3].astype(int))).max()
    again = sink.pop()
    assert again is not None and np.array_equal(again, frames[4])  # untouched once playing


def test_an_underrun_after_a_stretch_plays_what_is_held_then_fades() -> None:
    """Samples a stretch left in the sink's FIFO are played before the concealment, which
    continues from the last of them without a step and decays to zero within the frame."""
    from bridge.audio import tone
    from bridge.audio.stretch import PATIENCE

    bus = CallBus("c1")
    sink = agent_sink(bus)
    frames = [tone(250, FRAME_SAMPLES, start=i * FRAME_SAMPLES) for i in range(3)]
    for frame in frames:
        bus.push_downlink(frame)
    assert sink.pop() is not None
    sink.drift.debt = 40  # delay owed, as when the engine's clock runs slow
    sink.drift.debt_since = -int(PATIENCE / 2 / 0.02)  # owed long enough for voiced sounds
    assert sink.pop() is not None
    assert sink.inserted_samples == 64  # one period of the 250 Hz tone (≥ the 40 owed)
    assert sink.pop() is not None and len(sink.jitter) == 0
    assert sink.fifo.held == 64  # what the stretch added is still to be played (too little
    # to stretch a frame out of: see the next test)
    before = sink.jitter.stats.underruns
    concealed = sink.pop()  # nothing left: what is held, then its fading continuation
    assert concealed is not None and concealed.shape == (FRAME_SAMPLES,)
    assert sink.concealed == 1 and sink.jitter.stats.underruns == before + 1
    steps = np.abs(np.diff(concealed.astype(int)))
    assert steps.max() <= 1.2 * np.abs(np.diff(frames[0].astype(int))).max()
    assert abs(int(concealed[-1])) <= 2


def test_a_frame_late_by_a_tick_is_bridged_by_a_stretch_not_concealed() -> None:
    """Half a frame held and nothing queued (the engine's next frame slipped past its tick):
    what is held is stretched to a frame by whole periods of the tone (no concealment, no
    refill, no step), and the late frame plays right after it."""
    from bridge.audio import tone

    bus = CallBus("c1")
    sink = agent_sink(bus)
    n = FRAME_SAMPLES
    src = tone(250, 6 * n)
    for i in range(2):
        bus.push_downlink(src[i * n : (i + 1) * n])
    out = [sink.pop(), sink.pop()]
    sink.fifo.feed(src[2 * n : 2 * n + 160])  # as a stretch leaves samples beyond frames
    bridged = sink.pop()  # 160 held, nothing queued
    assert bridged is not None and bridged.shape == (n,)
    assert sink.bridged == 1 and sink.concealed == 0 and sink.jitter.stats.underruns == 0
    assert sink.inserted_samples % 64 == 0 and sink.inserted_samples >= 160  # whole periods
    out.append(bridged)
    for start in (2 * n + 160, 3 * n + 160):  # the late frame, and the next
        bus.push_downlink(src[start : start + n])
    out += [sink.pop(), sink.pop()]
    assert all(o is not None for o in out)
    played = np.concatenate(out).astype(int)
    assert np.abs(np.diff(played)).max() <= 1.1 * np.abs(np.diff(src.astype(int))).max()


async def test_sources_play_alone_on_the_ticks_without_a_microphone_frame() -> None:
    """A playing source is pulled once per tick of the worker's clock: into the microphone's
    frame when one came in that tick, alone over silence when none did — never both."""
    from bridge.audio import tone

    from ..support.waits import until

    bus = CallBus("t")
    src = QueuedSource()
    beep = tone(1000, FRAME_SAMPLES * 200, amplitude=0.3)
    src.push(beep)
    out: list[np.ndarray] = []
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    bus.open_uplink()
    bus.add_source(src)
    await until(lambda: len(out) >= 3)  # no microphone: the clock plays the source alone
    assert all(
        np.array_equal(o, beep[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        for i, o in enumerate(out[:3])
    )
    ticks = bus._clock  # registered while the source plays
    assert ticks is not None
    before, pulled = len(out), src.buffered_ms
    bus._tick(0.0)  # a tick in which ...
    assert len(out) == before + 1 and src.buffered_ms == pulled - 20  # ... no mic: alone
    bus.push_uplink(np.full(FRAME_SAMPLES, 100, dtype=np.int16))  # the mic's frame, mixed
    bus._tick(0.0)  # the same tick: nothing more pulled
    assert len(out) == before + 2 and src.buffered_ms == pulled - 40
    i = len(out) - 1
    k = FRAME_SAMPLES
    assert np.array_equal(out[-1], beep[i * k : (i + 1) * k] + 100)
    bus.remove_source(src)
    assert bus._clock is None  # nothing to clock: off the worker's clock
    await bus.aclose()


async def test_a_source_tick_that_raised_is_registered_again_by_the_next_source() -> None:
    """The worker's clock drops a tick that raised (here: the uplink's emit, made to fail
    once); the bus then registers again for the next source it is given, so a later playback
    still plays while no microphone frame comes."""
    from ..support.waits import until

    bus = CallBus("t")
    out: list[np.ndarray] = []
    bus.open_uplink()
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    emit = bus._emit_uplink

    def fail_once(*args: object) -> None:
        bus._emit_uplink = emit  # type: ignore[method-assign]
        raise RuntimeError("a bug in the tick")

    bus._emit_uplink = fail_once  # type: ignore[method-assign]
    first = QueuedSource()
    first.push(np.full(FRAME_SAMPLES * 50, 3, dtype=np.int16))
    bus.add_source(first)
    await until(lambda: bus._clock is None, 2, "the failed tick dropped")
    bus.remove_source(first)
    fresh = QueuedSource()
    fresh.push(np.full(FRAME_SAMPLES * 50, 7, dtype=np.int16))
    bus.add_source(fresh)
    await until(lambda: len(out) >= 3, 2, "the next source played on the clock")
    assert all(int(o[0]) == 7 for o in out[:3])
    bus.remove_source(fresh)
    await bus.aclose()


async def test_a_source_giving_a_wrong_size_frame_is_removed_and_the_rest_plays(caplog) -> None:
    """A source's frame that is not 20 ms of int16 cannot be mixed: that source is removed
    (WARNING, with what it gave); the microphone and the other sources go on."""

    class Wrong:
        to_downlink = False
        ended = False

        def next_frame(self) -> np.ndarray:
            return np.zeros(7, dtype=np.int16)

        def finished(self) -> None:
            self.ended = True

    bus = CallBus("t")
    out: list[np.ndarray] = []
    bus.open_uplink()
    bus.add_uplink_tap(lambda f: out.append(f.pcm))
    wrong, good = Wrong(), QueuedSource()
    good.push(np.full(FRAME_SAMPLES * 5, 100, dtype=np.int16))
    bus.add_source(wrong)  # type: ignore[arg-type]
    bus.add_source(good)
    with caplog.at_level("WARNING", logger="bridge.media.bus"):
        for _ in range(3):
            bus.push_uplink(np.full(FRAME_SAMPLES, 20, dtype=np.int16))
    assert [int(o[0]) for o in out] == [120, 120, 120]  # microphone + the good source
    assert all(o.shape == (FRAME_SAMPLES,) for o in out)
    assert wrong.ended and wrong not in bus._sources and good in bus._sources
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "(7,) int16" in warnings[0], warnings
    bus.remove_source(good)
    await bus.aclose()
