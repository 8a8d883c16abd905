"""The sim's far end joins the bus as a clocked port (the door of every in-worker leg on
WhatsApp's side) on the worker clock's engine phase: no task or timer of its own, the uplink
frame of a tick heard in that tick, one downlink frame a tick, and a far end that hangs up ends
the pump once."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE, tone
from bridge.config import SimPeer, SimSettings
from bridge.engines import ClockedChannel, EnginePump, MediaClosed
from bridge.engines.sim import SimCall, SimMediaChannel
from bridge.media import CallBus
from bridge.media.clock import Phase, worker_clock
from bridge.media.frames import BusFrame
from tests.support.spectrum import dominant_frequency
from tests.support.waits import until


def sim_channel(peer: SimPeer, **settings: float) -> SimMediaChannel:
    call = SimCall(id="SIM1", peer="1@s.whatsapp.net", direction="outbound", state="active")
    return SimMediaChannel(call, SimSettings(sim_peer=peer, **settings))


async def test_the_sim_echo_hears_and_answers_in_the_tick_the_frame_was_made() -> None:
    bus = CallBus("c1")
    channel = sim_channel(SimPeer.ECHO, sim_echo_delay=0.0)
    assert isinstance(channel, ClockedChannel)
    heard: list[tuple[int, BusFrame]] = []
    bus.add_downlink_tap(lambda frame: heard.append((clock.n, frame)))
    clock = worker_clock()
    sent: dict[int, int] = {}

    def microphone(now: float) -> None:  # a browser's frame, made in the receive phase
        hz = 300 + 100 * (clock.n % 8)
        sent[clock.n] = hz
        bus.push_uplink(tone(hz, FRAME_SAMPLES, SAMPLE_RATE, amplitude=0.3))

    unregister = clock.register(microphone, Phase.RECEIVE)
    pump = EnginePump(bus, channel)
    pump.start()
    try:
        while len(heard) < 20:
            await clock.next_tick()
    finally:
        unregister()
        await pump.close()
    assert not pump._tasks._tasks
    ticks = [n for n, _ in heard]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # one frame every tick
    for n, frame in heard[1:]:
        assert frame.pcm.shape == (FRAME_SAMPLES,)
        assert dominant_frequency(frame.pcm, SAMPLE_RATE) == pytest.approx(sent[n], abs=25)
    assert channel.call.frames_heard == len(sent)
    assert bus.stats.downlink_frames == len(heard)


async def test_a_far_end_that_hangs_up_ends_the_pump_once_and_leaves_the_clock() -> None:
    bus = CallBus("c2")
    channel = sim_channel(SimPeer.TONE, sim_tone_hz=440.0)
    ended: list[BaseException | None] = []
    pump = EnginePump(bus, channel, on_closed=ended.append)
    frames: list[np.ndarray] = []
    bus.add_downlink_tap(lambda frame: frames.append(frame.pcm))
    pump.start()
    clock = worker_clock()
    while len(frames) < 5:
        await clock.next_tick()
    await channel.close()
    for _ in range(3):
        await clock.next_tick()
    assert len(ended) == 1 and isinstance(ended[0], MediaClosed)
    assert len(frames) in (5, 6)  # nothing after the hang-up's tick
    assert dominant_frequency(np.concatenate(frames), SAMPLE_RATE) == pytest.approx(440, abs=10)
    await until(lambda: not clock.running)  # nothing else is registered: the clock idles
    await pump.close()


class _Port:
    """A clocked port by hand: one microphone frame a tick in, what the far end says out."""

    def __init__(self) -> None:
        self.waiting: list[np.ndarray] = []
        self.said: list[np.ndarray] = []

    def take(self, now: float) -> np.ndarray | None:
        return self.waiting.pop(0) if self.waiting else None

    def accept(self, pcm: np.ndarray) -> None:
        self.said.append(pcm)

    def ended(self, why: str) -> None:
        raise AssertionError(why)


async def test_the_sim_echo_answers_in_the_tick_even_when_the_loop_runs_it_late() -> None:
    """The echo line times a frame by the tick it was heard in, not by a clock read: a tick the
    loop runs 100 ms late (a stalled worker) still echoes its own frame, where a stamp of the
    real time would have been after the tick's and left the line a frame behind for good."""
    channel = sim_channel(SimPeer.ECHO, sim_echo_delay=0.0)
    port = _Port()
    channel.door.source.port = port  # plugged by hand: the ticks below are this test's
    start = worker_clock().now - 0.1  # every tick's time 100 ms before the real time
    for i in range(6):
        hz = 300 + 100 * i
        port.waiting.append(tone(hz, FRAME_SAMPLES, SAMPLE_RATE, amplitude=0.3))
        channel._tick(start + 0.02 * i)
        assert dominant_frequency(port.said[-1], SAMPLE_RATE) == pytest.approx(hz, abs=25)


async def test_a_far_end_whose_tick_raised_talks_on_and_one_that_always_raises_is_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A far end's tick that raises (a bug) is dropped by the clock: the far end is back on the
    clock from the next tick and its tone goes on. Before, it was off the clock for good and
    the call silent. One that raises every tick is given up after three in a row, said once."""
    bus = CallBus("c3")
    channel = sim_channel(SimPeer.TONE, sim_tone_hz=440.0)
    pump = EnginePump(bus, channel)
    frames: list[np.ndarray] = []
    bus.add_downlink_tap(lambda frame: frames.append(frame.pcm))
    pump.start()
    clock = worker_clock()
    await until(lambda: len(frames) >= 3)
    real = channel._produce
    raised = 0

    def broken(at: float) -> np.ndarray:
        nonlocal raised
        raised += 1
        raise RuntimeError("a bug")

    def broken_once(at: float) -> np.ndarray:
        channel._produce = real  # type: ignore[method-assign]
        return broken(at)

    # Put back by the tick that raised: a loaded loop may run two ticks between two polls.
    channel._produce = broken_once  # type: ignore[method-assign]
    await until(lambda: raised == 1)
    before = len(frames)
    await until(lambda: len(frames) >= before + 10)  # the tone goes on
    assert dominant_frequency(np.concatenate(frames[before:]), SAMPLE_RATE) == pytest.approx(
        440, abs=10
    )
    channel._produce = broken  # type: ignore[method-assign]
    await until(lambda: raised == 4)  # three in a row, after the first
    for _ in range(5):
        await clock.next_tick()
    assert raised == 4  # given up: not put back on the clock
    said = [r for r in caplog.records if "far end failed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    await pump.close()


class _Broken:
    """A remote engine's channel whose ``recv`` meets a bug (its own: not a closed socket)."""

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    async def send(self, pcm: np.ndarray) -> None:
        self.sent.append(pcm)

    async def recv(self) -> np.ndarray:
        raise RuntimeError("a channel's bug")

    async def close(self) -> None:
        pass


async def test_a_channel_whose_recv_fails_ends_the_media_not_leaves_it_silent(caplog) -> None:
    """An unexpected error in the downlink task: the pump tells its owner (the call ends as
    one whose media was lost) and says it once at WARNING; the task died alone before, the
    call up with WhatsApp's side silent for good."""
    import logging

    from bridge.engines.channels import MediaFatal

    caplog.set_level(logging.WARNING, logger="bridge.engines.pump")
    bus = CallBus("c3")
    ended: list[BaseException | None] = []
    pump = EnginePump(bus, _Broken(), on_closed=ended.append)  # type: ignore[arg-type]
    pump.start()
    await until(lambda: ended, 2, "the pump's end")
    assert len(ended) == 1 and isinstance(ended[0], MediaFatal), ended
    said = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    await pump.close()
