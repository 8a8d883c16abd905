"""``Conference.mix_once``, one 20 ms tick of the mixer, on its own (no sockets, no clock):
who hears whom per role, hold, mute and clipping, read off the sample values of the frames it
hands to each participant's sink and to the WhatsApp side (the bus's uplink).

Every speaker sends a constant frame of its own level, so a mixed frame's value says exactly
which speakers are in it (1 000 + 10 = agent and barge, say)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import bridge.media.bus as bus_module
import bridge.media.conference as conference_module
from bridge.audio import FRAME_SAMPLES
from bridge.media import BusFrame, CallBus, CallPort, Role

WHATSAPP = 10_000
AGENT = 1_000
WHISPER = 100
BARGE = 10
LISTEN = 1  # a listener's microphone goes nowhere: this level must never be heard


def frame(level: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, level, dtype=np.int16)


class StoppedClock:
    """The worker's media clock, never ticking: only the test calls ``mix_once``."""

    def register(self, tick: object, *how: object, **failed: object) -> Callable[[], None]:
        return lambda: None


@dataclass
class Room:
    """A bus whose conference mixes only when told, and what everyone was handed."""

    bus: CallBus
    ports: dict[str, CallPort] = field(default_factory=dict)
    heard: dict[str, list[BusFrame]] = field(default_factory=dict)
    to_whatsapp: list[BusFrame] = field(default_factory=list)

    def join(self, pid: str, role: Role) -> None:
        port = self.bus.conference.join(pid, role)
        self.ports[pid] = port
        self.heard[pid] = []
        assert port.sink is not None  # what the participant's jitter buffer would get:
        port.sink.push = self.heard[pid].append  # type: ignore[method-assign]

    def speak(self, pid: str, level: int) -> None:
        self.ports[pid].accept(frame(level))

    def tick(self, whatsapp: int | None = WHATSAPP, t: float = 5.0) -> None:
        if whatsapp is not None:
            assert self.bus.conference.mixing  # the mixer takes the WhatsApp frame
            self.bus.conference.from_whatsapp(BusFrame(frame(whatsapp), t))
        self.bus.conference.mix_once(t + 0.001)

    def last(self, pid: str) -> int:
        """The one value of the last frame ``pid`` was handed (every sample the same)."""
        return _level(self.heard[pid][-1])

    def whatsapp_hears(self) -> int:
        return _level(self.to_whatsapp[-1])


def _level(f: BusFrame) -> int:
    assert f.pcm.dtype == np.int16 and f.pcm.shape == (FRAME_SAMPLES,)
    values = np.unique(f.pcm)
    assert values.size == 1, values
    return int(values[0])


@pytest.fixture
async def room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    monkeypatch.setattr(conference_module, "worker_clock", StoppedClock)
    bus = CallBus("conference-test")
    r = Room(bus)
    bus.add_uplink_tap(r.to_whatsapp.append)
    bus.open_uplink(clocked=True)  # a clocked WhatsApp side: its frame of a tick mixed in it
    yield r
    await bus.aclose()


async def test_each_role_hears_its_table_and_nobody_hears_themselves(room: Room) -> None:
    speakers = [
        ("agent", Role.AGENT, AGENT),
        ("whisper", Role.WHISPER, WHISPER),
        ("barge", Role.BARGE, BARGE),
        ("listen", Role.LISTEN, LISTEN),
    ]
    for pid, role, _level in speakers:
        room.join(pid, role)
    assert room.bus.conference.mixing  # more than one participant: the mixed path
    for pid, _role, level in speakers:
        room.speak(pid, level)
    room.tick()
    assert room.whatsapp_hears() == AGENT + BARGE  # never the whisper, never the listener
    assert room.last("agent") == WHATSAPP + WHISPER + BARGE
    assert room.last("whisper") == WHATSAPP + AGENT + BARGE
    assert room.last("barge") == WHATSAPP + AGENT
    assert room.last("listen") == WHATSAPP + AGENT + BARGE
    # Each output is built once per tick, stamped with the WhatsApp frame's arrival time.
    assert all(len(frames) == 1 for frames in room.heard.values())
    assert {f.t for frames in room.heard.values() for f in frames} == {5.0}


async def test_two_whisperers_reach_the_agent_but_not_each_other(room: Room) -> None:
    room.join("agent", Role.AGENT)
    room.join("coach1", Role.WHISPER)
    room.join("coach2", Role.WHISPER)
    room.speak("agent", AGENT)
    room.speak("coach1", 100)
    room.speak("coach2", 200)
    room.tick()
    assert room.last("agent") == WHATSAPP + 300
    assert room.last("coach1") == WHATSAPP + AGENT  # not coach2's 200
    assert room.last("coach2") == WHATSAPP + AGENT
    assert room.whatsapp_hears() == AGENT


async def test_a_silent_input_is_silence_and_the_tick_is_stamped_now(room: Room) -> None:
    room.join("agent", Role.AGENT)
    room.join("barge", Role.BARGE)
    room.speak("barge", BARGE)  # the agent's microphone sent nothing this tick
    room.tick(whatsapp=None, t=7.0)  # nor did WhatsApp
    assert room.last("agent") == BARGE
    assert room.last("barge") == 0
    assert room.whatsapp_hears() == BARGE
    assert room.heard["agent"][-1].t == pytest.approx(7.001)  # no WhatsApp frame: now


async def test_hold_cuts_whatsapp_off_both_ways_and_the_room_still_talks(room: Room) -> None:
    room.join("agent", Role.AGENT)
    room.join("whisper", Role.WHISPER)
    room.bus.conference.set_held(True)
    room.speak("agent", AGENT)
    room.speak("whisper", WHISPER)
    room.tick()
    assert room.whatsapp_hears() == 0  # the held peer hears nobody (only hold music, if any)
    assert room.last("agent") == WHISPER  # not the held peer
    assert room.last("whisper") == AGENT
    room.bus.conference.set_held(False)
    room.speak("agent", AGENT)
    room.speak("whisper", WHISPER)
    room.tick()
    assert room.whatsapp_hears() == AGENT
    assert room.last("agent") == WHATSAPP + WHISPER


class Music:
    """A source playing a constant level, as ``/call/hold`` starts its music: to the WhatsApp
    side alone (playback ``target: peer``)."""

    to_downlink = False

    def next_frame(self) -> np.ndarray:
        return frame(MUSIC)

    def finished(self) -> None:
        pass


MUSIC = 20_000


async def test_held_with_music_only_whatsapp_hears_it(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The browser hold test's agent once read as hearing the music on a loaded machine (it was
    # the supervisor's tone, broken by stalls): the mix hands the music to WhatsApp alone.
    monkeypatch.setattr(bus_module, "worker_clock", StoppedClock)
    room.join("agent", Role.AGENT)
    room.join("barge", Role.BARGE)
    music = Music()
    room.bus.add_source(music)
    room.bus.conference.set_held(True)
    for _ in range(3):
        room.speak("agent", AGENT)
        room.speak("barge", BARGE)
        room.tick()
        assert room.whatsapp_hears() == MUSIC
        assert room.last("agent") == BARGE
        assert room.last("barge") == AGENT
    room.bus.remove_source(music)


async def test_mute_silences_only_what_whatsapp_hears(room: Room) -> None:
    room.join("agent", Role.AGENT)
    room.join("listen", Role.LISTEN)
    room.bus.muted = True
    room.speak("agent", AGENT)
    room.tick()
    assert room.whatsapp_hears() == 0
    assert room.last("listen") == WHATSAPP + AGENT


@pytest.mark.parametrize(("level", "clipped"), [(30_000, 32_767), (-30_000, -32_768)])
async def test_sums_clip_at_full_scale_and_never_wrap(room: Room, level: int, clipped: int) -> None:
    room.join("agent", Role.AGENT)
    room.join("barge", Role.BARGE)
    room.join("whisper", Role.WHISPER)
    room.speak("agent", level)
    room.speak("barge", level)
    room.speak("whisper", level)
    room.tick(whatsapp=level)
    assert room.whatsapp_hears() == clipped  # agent + barge: 60 000 in magnitude
    assert room.last("agent") == clipped  # WhatsApp + whisper + barge: 90 000
    assert room.last("barge") == clipped


async def test_one_clip_after_the_whole_sum(room: Room) -> None:
    # Two whisperers and two barges: each group alone is beyond 16 bits (+-60 000); what the
    # agent hears, WhatsApp + whispers + barges, is 30 000 once summed in 32 bits.
    room.join("agent", Role.AGENT)
    for pid, role, level in [
        ("whisper1", Role.WHISPER, 30_000),
        ("whisper2", Role.WHISPER, 30_000),
        ("barge1", Role.BARGE, -30_000),
        ("barge2", Role.BARGE, -30_000),
    ]:
        room.join(pid, role)
        room.speak(pid, level)
    room.tick(whatsapp=30_000)
    assert room.last("agent") == 30_000
    assert room.whatsapp_hears() == -32_768  # the barges: -60 000, clipped once


async def test_a_mixing_tick_that_raised_mixes_on_and_one_that_keeps_raising_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the real worker clock: a mixing tick that raises (a bug) is dropped by the clock and
    the mixer is back on it for the next tick, every participant heard again. Before, the
    conference kept believing it mixed and the call was silent to everyone for good. A mixer
    that fails every time stops after three failures in a row, said once."""
    import asyncio

    from tests.support.waits import until

    bus = CallBus("mixer-failure")
    r = Room(bus)
    bus.add_uplink_tap(r.to_whatsapp.append)
    # A clocked WhatsApp side, as the room's: a remote engine's would hand the agent's sink,
    # which the room listens to, to the mix's input as the mixing starts.
    bus.open_uplink(clocked=True)
    r.join("agent", Role.AGENT)
    r.join("barge", Role.BARGE)  # two participants: the call needs the mix
    conference = bus.conference
    assert conference.mixing
    real = conference.mix_once
    failures = 0

    def broken(now: float) -> None:
        nonlocal failures
        failures += 1
        raise RuntimeError("a bug")

    def broken_once(now: float) -> None:
        conference.mix_once = real  # type: ignore[method-assign]
        broken(now)

    # Put back by the tick that raised: a loaded loop may run two ticks between two polls.
    conference.mix_once = broken_once  # type: ignore[method-assign]
    await until(lambda: failures == 1)
    heard = len(r.heard["agent"])
    r.speak("barge", BARGE)
    await until(lambda: len(r.heard["agent"]) > heard + 2)
    assert conference.mixing and BARGE in {_level(f) for f in r.heard["agent"][heard:]}
    conference.mix_once = broken  # type: ignore[method-assign]
    await until(lambda: not conference.mixing)
    await asyncio.sleep(0.1)
    assert failures == 4 and not conference.mixing  # three in a row after the first: given up
    said = [r for r in caplog.records if "mixed audio stops" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    await bus.aclose()


def _remote_engine_heard(mixed: bool, jitter: float) -> tuple[int, int, float]:
    """A remote engine (its own clock: ZuckZapGo's 60 ms messages, three bus frames at once,
    each message up to ``jitter`` s late, seeded) on a call whose agent is alone (the direct
    path) or, if ``mixed``, joined by a listener after 6 s (the call mixes from then on): the
    ticks at which the agent's sink held no frame of the engine's (holes), the engine's frames
    never heard (skipped), and how many ticks late the agent heard each frame on average.
    Frame ``n`` is the constant ``1000 + n``, so what is heard says which frame it is."""
    import random

    bus = CallBus("remote-engine-mix")
    bus.open_uplink()  # a remote engine: its pump's tasks push the downlink as it comes
    agent = bus.conference.join("agent", Role.AGENT)
    rng = random.Random(7)
    start = 100.0
    arrivals = [(start + 0.06 * k + rng.uniform(0, jitter), 0, k) for k in range(200)]
    ticks = [(start + 0.02 * i + 0.001, 1, i) for i in range(600)]
    holes, lags, heard = 0, [], set()
    for t, kind, k in sorted(arrivals + ticks):
        if kind == 0:
            for n in range(3 * k, 3 * k + 3):
                bus.push_downlink(frame(1000 + n), t)
            continue
        if mixed and k == 300:
            bus.conference.join("listen", Role.LISTEN)
            assert bus.conference.mixing
        if bus.conference.mixing:
            bus.conference.mix_once(t)
        out = agent.take(t)  # the agent's leg takes its frame (its sink's, swapped or not)
        if k < 25:  # the first half second: the buffers filling
            continue
        level = 0 if out is None else int(np.median(out))
        if level < 1000:
            holes += 1
        else:
            lags.append(k - (level - 1000))
            heard.add(level - 1000)
    bus.close()
    return holes, max(heard) - min(heard) + 1 - len(heard), float(np.mean(lags))


async def test_a_remote_engines_jittery_chunks_are_mixed_as_the_direct_path_plays_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote engine's messages, up to 50 ms late, on a call that starts to mix: the agent
    hears every frame, as on the direct path, where its sink de-jitters them, and no later,
    the switch included. Before, the mixer took them from a queue of four, one a tick: a tick
    that found it empty mixed nothing of WhatsApp (a 20 ms hole, cut hard) and a burst past
    four dropped the oldest, uncounted (about one frame in twenty a hole); each participant's
    sink held the mix behind a jitter buffer of its own (a frame more of delay than the
    direct path, on a steady engine); and at the switch the frames the agent's sink held
    were dropped."""
    monkeypatch.setattr(conference_module, "worker_clock", StoppedClock)
    for jitter in (0.05, 0.0):
        direct_holes, direct_skipped, direct_lag = _remote_engine_heard(False, jitter)
        holes, skipped, lag = _remote_engine_heard(True, jitter)
        assert holes <= max(1, direct_holes), (jitter, holes)
        assert skipped <= direct_skipped, (jitter, skipped, direct_skipped)
        assert lag <= direct_lag + 0.1, (jitter, lag, direct_lag)


async def test_frames_dropped_ahead_of_the_mixer_are_counted_by_what_they_are(room: Room) -> None:
    """Six frames of a microphone and six of the clocked WhatsApp side before one tick: the
    two oldest of each go (four may wait), counted as microphone and WhatsApp frames, not as
    a socket's or a fork's audio (``sourceFramesDropped``)."""
    room.join("agent", Role.AGENT)
    room.join("barge", Role.BARGE)
    for n in range(1, 7):
        room.speak("agent", n * 100)
        room.bus.conference.from_whatsapp(BusFrame(frame(n * 1000), 5.0))
    room.tick(whatsapp=None)
    assert room.whatsapp_hears() == 300  # the oldest microphone frame kept
    assert room.last("agent") == 3000  # the oldest WhatsApp frame kept
    stats = room.bus.stats.as_json()
    assert stats["microphoneFramesDropped"] == 2
    assert stats["whatsappInFramesDropped"] == 2
    assert stats["sourceFramesDropped"] == 0


async def test_each_reason_the_mixer_drops_frames_for_is_said_once_a_call(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames a microphone or the WhatsApp side sent ahead of the mixer, and frames a
    listener's sender did not take in time, were counted in ``/metrics`` only: audio lost with
    nothing in the log. Each reason is said once a call at WARNING, with what it means; the
    counters go on counting."""
    caplog.set_level(logging.INFO, logger="bridge")
    room.join("agent", Role.AGENT)
    room.bus.conference.join("listener", Role.LISTEN)  # its sender never takes its frames
    for _ in range(2):
        for n in range(1, 7):
            room.speak("agent", n * 100)
            room.bus.conference.from_whatsapp(BusFrame(frame(n * 1000), 5.0))
        for _ in range(5):
            room.tick(whatsapp=None)
    stats = room.bus.stats.as_json()
    assert stats["microphoneFramesDropped"] == 4
    assert stats["whatsappInFramesDropped"] == 4
    assert stats["listenerFramesDropped"] == 7  # ten mixes, three may wait
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 3, said
    for reason, why in (
        ("microphone_overflow", "a microphone's frames came faster than the call's mixer"),
        ("whatsapp_overflow", "the WhatsApp side's frames came faster than the call's mixer"),
        ("listener_behind", "a listener's sender fell behind the worker clock"),
    ):
        [line] = [m for m in said if f"reason {reason};" in m]
        assert line.startswith("call conference-test: ") and why in line, line
    assert "(agent)" in said[0] and "(listener)" in said[2], said  # whose frames they were
