"""A leg that lives in the worker (the Cloud API's WhatsApp side) is a clocked port: the pump
joins it to the call as the WhatsApp side, plugs its door in and starts no task; the frame its
receiver hands on in a tick's receive phase is the frame a listener's sender takes in that
tick's send phase, and the uplink frame made in a tick is the frame the leg's sender takes in
that tick — no queue, no prefill, no cushion. The leg's end reaches the pump once."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE, tone
from bridge.engines import EnginePump, EngineStats
from bridge.engines.channels import ClockedChannel, LegPort, MediaFatal
from bridge.engines.cloudapi.channel import PeerChannel
from bridge.media import CallBus, Role
from bridge.media.clock import Phase, worker_clock
from bridge.media.frames import BusFrame, DownlinkSink, downlink_jitter
from bridge.media.stats import BusStats
from bridge.media_metrics import MediaCollector, MediaTotals
from tests.support.spectrum import dominant_frequency


class Leg:
    """The part of a leg to Meta the channel needs (``ChannelPeer``), with a sender that takes
    its frame from the plugged bus in the clock's send phase, as ``OpusBusTrack`` does."""

    name = "leg-test"
    dead = False

    def __init__(self) -> None:
        self.port = LegPort()
        self.sent: list[tuple[int, np.ndarray | None]] = []

    def send_dtmf(self, *args: object) -> None:
        raise AssertionError("no key presses here")

    def send_phase(self, now: float) -> None:
        self.sent.append((worker_clock().n, self.port.source.take(now)))


def _hz(n: int) -> int:
    return 300 + 100 * (n % 8)


async def test_a_frame_crosses_the_bridge_in_the_tick_it_came_both_ways() -> None:
    clock = worker_clock()
    bus = CallBus("c1")
    agent = bus.conference.join("agent", Role.AGENT)
    sink = agent.sink
    assert sink is not None
    leg = Leg()
    channel = PeerChannel(leg)  # type: ignore[arg-type]
    assert isinstance(channel, ClockedChannel)
    pump = EnginePump(bus, channel)
    pump.start()
    assert not pump._tasks._tasks and sink.clocked
    assert bus.conference.whatsapp is leg.port.source.port  # the pump's door, plugged in
    played: list[tuple[int, np.ndarray | None]] = []

    def receive(now: float) -> None:  # both legs' receivers hand on this tick's frame
        n = clock.n
        leg.port.received(tone(_hz(n), FRAME_SAMPLES, SAMPLE_RATE, amplitude=0.3))
        agent.accept(tone(_hz(n + 4), FRAME_SAMPLES, SAMPLE_RATE, amplitude=0.3))

    def send(now: float) -> None:  # both legs' senders take theirs
        leg.send_phase(now)
        played.append((clock.n, agent.take(now)))

    off = [clock.register(receive, Phase.RECEIVE), clock.register(send, Phase.SEND)]
    try:
        while len(played) < 20:
            await clock.next_tick()
    finally:
        for unregister in off:
            unregister()
        await pump.close()
    for n, pcm in played[1:]:  # the first fades in
        assert pcm is not None and pcm.shape == (FRAME_SAMPLES,)
        assert dominant_frequency(pcm, SAMPLE_RATE) == pytest.approx(_hz(n), abs=25)
    for n, pcm in leg.sent:
        assert pcm is not None
        assert dominant_frequency(pcm, SAMPLE_RATE) == pytest.approx(_hz(n + 4), abs=25)
    assert len(leg.sent) == len(played) and sink.concealed == 0
    assert bus.stats.listener_frames_dropped == 0
    assert bus.stats.uplink_dropped_overflow == 0
    assert leg.port.frames == len(played) and leg.port.source.empty == 0
    assert leg.port.source.port is None  # unplugged by the pump's close
    assert bus.conference.whatsapp is None  # and its door left the call


async def test_the_legs_end_reaches_the_pump_once() -> None:
    bus = CallBus("c2")
    leg = Leg()
    ended: list[BaseException | None] = []
    pump = EnginePump(bus, PeerChannel(leg), on_closed=ended.append)  # type: ignore[arg-type]
    pump.start()
    leg.port.end("leg-test: the WhatsApp-side peer connection is failed (ice: lost)")
    leg.port.end("leg-test: the WhatsApp-side peer connection is closed")
    assert len(ended) == 1 and isinstance(ended[0], MediaFatal)
    assert "failed (ice: lost)" in str(ended[0])
    await pump.close()
    late = EnginePump(bus, PeerChannel(leg), on_closed=ended.append)  # type: ignore[arg-type]
    late.start()  # a leg over already tells a new pump at once
    assert len(ended) == 2 and isinstance(ended[1], MediaFatal)
    await late.close()


def test_a_clocked_sink_plays_each_frame_in_its_tick_conceals_a_missing_one_once() -> None:
    """A frame each tick played in it, a missing one concealed once; a sender late by four
    ticks loses the oldest, counted in the call's stats and ``/metrics`` (the sink's own
    count was read by nothing)."""
    stats = BusStats()
    sink = DownlinkSink(stats, "p", downlink_jitter())
    sink.set_clocked(True)
    frames = [
        tone(440, FRAME_SAMPLES, SAMPLE_RATE, 0.3, start=i * FRAME_SAMPLES + 10) for i in range(6)
    ]
    sink.push(BusFrame(frames[0], 0.0))
    first = sink.take(0.0)
    assert abs(int(frames[0][0])) > 5000
    assert first is not None and first[0] == 0  # faded in after the silence
    sink.push(BusFrame(frames[1], 0.0))
    assert np.array_equal(sink.take(0.0), frames[1])  # no cushion: the frame of the tick
    gap = sink.take(0.0)  # none came this tick: the last one's fading continuation
    assert gap is not None and sink.concealed == 1
    assert abs(int(gap[0])) > 5000 and abs(int(gap[-1])) < 100  # no step, then faded out
    assert sink.take(0.0) is None  # then silence
    for frame in frames[2:6]:  # a sender late by four ticks: the three newest wait
        sink.push(BusFrame(frame, 0.0))
    assert stats.as_json()["listenerFramesDropped"] == 1
    totals = MediaTotals()
    totals.add_bus(stats)
    registry = CollectorRegistry()
    registry.register(MediaCollector(lambda: totals, lambda: ("sim", EngineStats(), True)))
    labels = {"direction": "downlink", "reason": "listener_behind"}
    assert registry.get_sample_value("bridge_bus_frames_dropped_total", labels) == 1
    resumed = [sink.take(0.0) for _ in range(3)]
    assert np.array_equal(resumed[1], frames[4]) and np.array_equal(resumed[2], frames[5])
    assert sink.take(0.0) is not None and sink.take(0.0) is None
