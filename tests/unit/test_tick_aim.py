"""A PCM engine's 60 ms frames aimed at the engine's tick (``bridge/engines/tick_aim.py``,
``socket.py`` ``PcmStreamMedia``), on a simulated clock: the engine's phase learnt from its
frames, the boundary moved only in quiet frames, and speech never dropped nor repeated."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from bridge.engines import socket as engine_socket
from bridge.engines.base import EngineStats
from bridge.engines.socket import PcmStreamMedia
from bridge.engines.tick_aim import AHEAD, TickAim

PERIOD = 0.06


class FakeWs:
    """What the socket sends, and when (the simulated clock's time)."""

    closed = False

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append((self.clock[0], data))


def run_call(
    phase: float, frames: list[np.ndarray], *, jitter: float = 0.0005, seed: int = 3
) -> tuple[PcmStreamMedia, FakeWs]:
    """Our 20 ms frames sent on ticks at 0, 20, 40 ms ... while an engine whose tick is at
    ``phase`` (mod 60 ms) sends a frame each tick (arriving up to ``jitter`` later)."""
    clock = [0.0]
    ws = FakeWs(clock)
    media = PcmStreamMedia(
        ws,  # type: ignore[arg-type]
        "c1",
        EngineStats(),
        batch_samples=960,
        aim=TickAim(PERIOD),
    )
    rng = random.Random(seed)
    engine_tick = phase

    async def drive() -> None:
        nonlocal engine_tick
        for i, frame in enumerate(frames):
            tick = i * 0.02
            while engine_tick <= tick:
                clock[0] = engine_tick + rng.uniform(0, jitter)
                media.decode(bytes(1920))
                engine_tick += PERIOD
            clock[0] = tick + 0.0003  # the pump's hand-off, just after the tick
            await media.send(frame)

    real = engine_socket.time.monotonic
    engine_socket.time.monotonic = lambda: clock[0]  # type: ignore[assignment]
    try:
        asyncio.run(drive())
    finally:
        engine_socket.time.monotonic = real  # type: ignore[assignment]
    return media, ws


def waits(ws: FakeWs, phase: float) -> list[float]:
    """Each batch's wait for the first engine tick at least AHEAD after it was sent."""
    out = []
    for t, _ in ws.sent:
        k = np.ceil((t + AHEAD - phase) / PERIOD)
        out.append(phase + k * PERIOD - t)
    return out


SILENCE = [np.zeros(320, np.int16)] * 100  # 2 s


def speech(n: int) -> list[np.ndarray]:
    t = np.arange(n * 320) / 16_000
    voice = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    return [voice[i * 320 : (i + 1) * 320] for i in range(n)]


@pytest.mark.parametrize("phase", [0.001, 0.0135, 0.029, 0.047, 0.0595])
def test_batches_settle_on_the_engine_tick_while_quiet(phase: float) -> None:
    """Whatever the engine's phase, after a quiet second every batch reaches the engine
    AHEAD before its tick with less than one of our ticks to spare (the whole round trip's
    phase term at its least), moved by at most two quiet frames."""
    media, ws = run_call(phase, SILENCE + speech(150))
    settled = waits(ws, phase)[len(ws.sent) // 3 :]
    assert all(AHEAD <= w < AHEAD + 0.02 + 0.001 for w in settled)
    assert media.aim is not None and media.aim.shifts <= 2


def test_speech_is_never_dropped_nor_repeated() -> None:
    """A call that speaks from its first frame: the boundary stays where it is (nothing quiet
    to move it by), and the engine gets every sample in order."""
    voice = speech(300)
    media, ws = run_call(0.047, voice)
    assert media.aim is not None and media.aim.shifts == 0
    got = np.frombuffer(b"".join(d for _, d in ws.sent), dtype="<i2")
    assert np.array_equal(got, np.concatenate(voice)[: got.size]) and got.size >= 299 * 320


def test_speech_after_the_shift_reaches_the_engine_whole() -> None:
    """The boundary moves in the quiet lead-in; the speech after it arrives sample for sample,
    its 220 Hz intact."""
    voice = speech(150)
    _, ws = run_call(0.029, SILENCE + voice)
    got = np.frombuffer(b"".join(d for _, d in ws.sent), dtype="<i2")
    start = int(np.argmax(np.abs(got) > 0)) - 1  # the voice's first sample is a zero
    tail = got[start:]
    assert np.array_equal(tail, np.concatenate(voice)[: tail.size]) and tail.size >= 147 * 320


def test_an_unknown_clock_moves_nothing() -> None:
    """Before two engine frames a period apart, or for frames in a burst, no shift."""
    aim = TickAim(PERIOD)
    assert aim.shift(1.0) == 0
    aim.heard(1.0)
    aim.heard(1.001)  # a burst after a stall teaches nothing
    assert aim.due is None and aim.shift(1.01) == 0
    aim.heard(1.061)
    assert aim.due == pytest.approx(1.121)


def test_half_the_opening_is_kept_ahead() -> None:
    """A socket whose opening took 10 ms (two round trips) aims its batches 11 ms ahead of
    the engine's tick: half of that, and AHEAD's 6 ms; never sooner, and not within the
    guard just past that aim (the estimate's jitter)."""
    aim = TickAim(PERIOD, opening=0.010)
    assert aim.ahead == pytest.approx(0.011)
    aim.heard(0.0)
    aim.heard(0.06)  # the engine's frames come at 0, 60, 120 ms ...
    assert aim.shift(0.100) == 0  # 9 ms before 120 - 11: the wait is under a tick
    assert aim.shift(0.080) == -1  # 29 ms: held one tick more, it still makes it
    assert aim.shift(0.121) == -1  # 12 ms past 109, beyond the guard: it missed; a tick later
    assert aim.shift(0.112) == 0  # 3 ms past it, within the guard: it may just make it


@pytest.mark.parametrize("rtt", [0.0005, 0.012, 0.03, 0.045])
def test_an_engine_that_follows_our_frames_loses_two_quiet_frames_at_most(rtt: float) -> None:
    """An engine with no clock sends each frame back ``rtt`` after it gets it: a drop only
    moves its frames with ours, so after at most two (its frames a tick later each time, the
    probe) the aim stops, instead of dropping a quiet frame every 60 ms for the call."""
    aim = TickAim(PERIOD)
    done = 0.0  # when our batch completes
    for _ in range(200):
        done += PERIOD
        if aim.shift(done) < 0:
            aim.dropped()
            done += 0.02  # the batch completes a tick later
        aim.heard(done + rtt)
    assert aim.shifts <= 2


def test_a_clocked_engine_keeps_its_aim_after_a_drop() -> None:
    """A clocked engine's frames stay on its clock after a drop: the aim goes on."""
    aim = TickAim(PERIOD)
    aim.heard(0.0)
    aim.heard(0.06)
    assert aim.shift(0.085) == -1  # 24 ms to spare before 120 - 6
    aim.dropped()
    aim.heard(0.12)
    assert not aim.follows
    assert aim.shift(0.16) == 0 and aim.shift(0.14) == -1  # 14 / 34 ms before 180 - 6


def queue_waits(ws: FakeWs, phase: float) -> list[float]:
    """Each batch's wait in an engine that takes one queued frame on each of its ticks (at
    ``phase`` mod 60 ms) and drops nothing: a frame that missed its tick leaves the later
    ones queued behind it."""
    out, free = [], -1.0  # the tick at which the engine last took a frame
    for t, _ in ws.sent:
        k = max(np.ceil((t - phase) / PERIOD), np.round((free - phase) / PERIOD) + 1)
        free = phase + k * PERIOD
        out.append(free - t)
    return out


def test_a_frame_left_standing_by_a_late_batch_is_shed_in_silence() -> None:
    """One batch sent late past the engine's tick (a busy host) leaves a frame standing in a
    queueing engine: every later batch would wait a tick (60 ms) more. The count of what we
    sent against the engine's ticks sees it, and the next batch of silence is not sent: the
    waits are back to the aim's, speech untouched."""
    phase = 0.047
    voice = speech(50)
    frames = SILENCE + voice + SILENCE + voice
    clock = [0.0]
    ws = FakeWs(clock)
    media = PcmStreamMedia(
        ws,  # type: ignore[arg-type]
        "c1",
        EngineStats(),
        batch_samples=960,
        aim=TickAim(PERIOD),
    )
    late = 100 + 22  # a frame in the speech that completes a batch, held 15 ms by a busy host

    async def drive() -> None:
        engine_tick = phase
        for i, frame in enumerate(frames):
            tick = i * 0.02
            while engine_tick <= tick:
                clock[0] = engine_tick
                media.decode(bytes(1920))
                engine_tick += PERIOD
            clock[0] = tick + (0.015 if i == late else 0.0003)
            await media.send(frame)

    real = engine_socket.time.monotonic
    engine_socket.time.monotonic = lambda: clock[0]  # type: ignore[assignment]
    try:
        asyncio.run(drive())
    finally:
        engine_socket.time.monotonic = real  # type: ignore[assignment]
    waits_ = queue_waits(ws, phase)
    sent = [t for t, _ in ws.sent]
    during = [w for t, w in zip(sent, waits_, strict=True) if 2.5 < t < 3.0]  # speech after it
    assert min(during) > PERIOD  # a frame stood queued: a tick more for each
    assert media.aim is not None and media.aim.shed == 1
    assert all(w < AHEAD + 0.02 + 0.001 for w in waits_[-20:])  # shed in the silence after it
    got = np.frombuffer(b"".join(d for _, d in ws.sent), dtype="<i2")
    loud = got[np.abs(got) > 0]
    assert loud.size == np.count_nonzero(np.concatenate(voice + voice))  # speech all sent


@pytest.mark.parametrize("rtt", [0.0003, 0.0008, 0.006])
def test_an_engine_with_no_clock_loses_two_batches_of_silence_at_most(rtt: float) -> None:
    """An engine that sends back each batch ``rtt`` after it: its "ticks" are our batches, a
    round trip later, where the count of what it holds is least sure. Whatever it concludes,
    a batch shed is a probe (nothing comes back a period later) and the aim stops."""
    clock = [0.0]
    ws = FakeWs(clock)
    media = PcmStreamMedia(
        ws,  # type: ignore[arg-type]
        "c1",
        EngineStats(),
        batch_samples=960,
        aim=TickAim(PERIOD, opening=2 * rtt),
    )
    rng = random.Random(5)

    async def drive() -> None:
        echoes: list[float] = []
        for i, frame in enumerate(SILENCE * 5):
            tick = i * 0.02
            while echoes and echoes[0] <= tick:
                clock[0] = echoes.pop(0)
                media.decode(bytes(1920))
            clock[0] = tick + rng.uniform(0.0001, 0.001)
            before = len(ws.sent)
            await media.send(frame)
            if len(ws.sent) > before:
                echoes.append(clock[0] + rtt)

    real = engine_socket.time.monotonic
    engine_socket.time.monotonic = lambda: clock[0]  # type: ignore[assignment]
    try:
        asyncio.run(drive())
    finally:
        engine_socket.time.monotonic = real  # type: ignore[assignment]
    aim = media.aim
    assert aim is not None and aim.shed <= 2 and aim.shifts <= 2


def test_a_clocked_engine_made_late_by_a_busy_host_is_not_taken_for_one_that_follows() -> None:
    """Two drops each answered a tick late (a busy host), but each late frame followed by one
    on the engine's old phase: it keeps its own clock, and the aim goes on (a drifting engine
    was once taken for one with no clock, and never aimed again)."""
    aim = TickAim(PERIOD)
    aim.heard(0.0)
    aim.heard(0.06)
    t = 0.06
    for _ in range(2):
        assert aim.shift(t + 0.025) == -1  # 24 ms to spare before the next tick - 6
        aim.dropped()
        aim.heard(t + 0.06 + 0.02)  # its answer a tick late: as if it followed our drop
        aim.heard(t + 0.12)  # then its old phase again
        t += 0.12
    assert not aim.follows
    assert aim.shift(t + 0.025) == -1
