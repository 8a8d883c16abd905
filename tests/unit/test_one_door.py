"""One door into the call (issue 61): every in-worker leg — a browser participant, the WhatsApp
side the pump plugs in — gets the same kind of port from ``Conference.join``, and the conference
routes by its role: the WhatsApp user's frame accepted on the WhatsApp side's port reaches the
agent's source (straight, or through the mixer's tick), the agent's accepted frame reaches the
WhatsApp side's ``take``, with the counters and the leg's end where they were. The frames are
constant levels, so a frame's one value says whose it is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

import bridge.media.conference as conference_module
from bridge.audio import FRAME_SAMPLES
from bridge.engines import EnginePump
from bridge.engines.channels import ClockedChannel, MediaFatal
from bridge.media import BusFrame, CallBus, CallPort, Role
from bridge.media.conference import WHATSAPP as WHATSAPP_ID
from bridge.media.ports import ClockedPort
from bridge.media.stats import LevelMeter

WHATSAPP = 10_000
AGENT = 1_000
LISTEN = 1  # a listener's microphone goes nowhere


def frame(level: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, level, dtype=np.int16)


def level(pcm: np.ndarray | None) -> int:
    assert pcm is not None and pcm.dtype == np.int16 and pcm.shape == (FRAME_SAMPLES,)
    values = np.unique(pcm)
    assert values.size == 1, values
    return int(values[0])


def frames_of(meter: LevelMeter) -> int:
    return meter.samples // FRAME_SAMPLES


class StoppedClock:
    """The worker's media clock, never ticking: the test calls ``mix_once`` itself."""

    def register(self, tick: object, *how: object, **failed: object) -> Callable[[], None]:
        return lambda: None


class Channel:
    """A leg of this worker's own (a ``ClockedChannel``), recording the port it is plugged into."""

    def __init__(self) -> None:
        self.port: ClockedPort | None = None

    def plug(self, port: ClockedPort) -> None:
        self.port = port

    async def close(self) -> None:
        self.port = None


@pytest.fixture
async def bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CallBus]:
    monkeypatch.setattr(conference_module, "worker_clock", StoppedClock)
    bus = CallBus("one-door")
    yield bus
    await bus.aclose()


async def test_the_whatsapp_side_and_a_browser_get_the_same_door(bus: CallBus) -> None:
    ended: list[BaseException | None] = []
    channel = Channel()
    assert isinstance(channel, ClockedChannel)
    pump = EnginePump(bus, channel, on_closed=ended.append)  # type: ignore[arg-type]
    pump.start()
    agent = bus.conference.join("agent", Role.AGENT)
    whatsapp = channel.port
    assert type(whatsapp) is type(agent) is CallPort  # one class, whoever the leg is
    assert isinstance(whatsapp, CallPort) and whatsapp.role is Role.WHATSAPP
    assert bus.conference.whatsapp is whatsapp and list(bus.conference.participants) == ["agent"]
    whatsapp.ended("the WhatsApp-side peer connection is failed")  # the leg's own end
    assert len(ended) == 1 and isinstance(ended[0], MediaFatal)
    await pump.close()
    assert bus.conference.whatsapp is None  # the pump's close: its door left the call


async def test_direct_path_each_way_through_the_doors(bus: CallBus) -> None:
    bus.open_uplink(clocked=True)  # as the pump opens it for a clocked leg
    whatsapp = bus.conference.join(WHATSAPP_ID, Role.WHATSAPP)
    agent = bus.conference.join("agent", Role.AGENT)
    tapped: list[BusFrame] = []
    bus.add_downlink_tap(tapped.append)
    assert not bus.conference.mixing  # one agent: the direct path
    played = []
    for _ in range(2):
        whatsapp.accept(frame(WHATSAPP))
        played.append(agent.take(1.0))
    assert played[0] is not None and played[0][0] == 0  # the first fades in
    assert level(played[1]) == WHATSAPP  # the frame of the tick, untouched
    assert len(tapped) == 2 and frames_of(bus.stats.whatsapp_in) == 2
    agent.accept(frame(AGENT))
    assert level(whatsapp.take(1.0)) == AGENT and whatsapp.take(1.0) is None
    assert frames_of(bus.stats.whatsapp_out) == 1


async def test_mixed_path_each_way_through_the_doors(bus: CallBus) -> None:
    bus.open_uplink(clocked=True)
    whatsapp = bus.conference.join(WHATSAPP_ID, Role.WHATSAPP)
    agent = bus.conference.join("agent", Role.AGENT)
    listen = bus.conference.join("listen", Role.LISTEN)
    assert bus.conference.mixing  # a second participant: the mixed path
    heard: dict[str, list[np.ndarray | None]] = {"agent": [], "listen": [], "whatsapp": []}
    for tick in range(2):
        whatsapp.accept(frame(WHATSAPP))
        agent.accept(frame(AGENT))
        listen.accept(frame(LISTEN))
        assert agent.sink is not None and not agent.sink._tick  # it waits for the mixer
        bus.conference.mix_once(10.0 + tick * 0.02)
        heard["agent"].append(agent.take(10.0))
        heard["listen"].append(listen.take(10.0))
        heard["whatsapp"].append(whatsapp.take(10.0))
    assert level(heard["agent"][1]) == WHATSAPP  # the agent hears the WhatsApp user
    assert level(heard["listen"][1]) == WHATSAPP + AGENT
    assert [level(pcm) for pcm in heard["whatsapp"]] == [AGENT, AGENT]  # never the listener
    assert frames_of(bus.stats.whatsapp_in) == frames_of(bus.stats.whatsapp_out) == 2


async def test_a_replaced_door_leaves_nothing_and_carries_nothing(bus: CallBus) -> None:
    bus.open_uplink(clocked=True)
    old_whatsapp = bus.conference.join(WHATSAPP_ID, Role.WHATSAPP)
    new_whatsapp = bus.conference.join(WHATSAPP_ID, Role.WHATSAPP)  # a new pump, say
    old_agent = bus.conference.join("agent", Role.AGENT)
    new_agent = bus.conference.join("agent", Role.AGENT)  # a browser that reconnected
    old_whatsapp.leave()  # the old pump's late close
    old_agent.leave()  # the old session's late close
    assert bus.conference.whatsapp is new_whatsapp
    assert bus.conference.participants == {"agent": new_agent}
    old_agent.accept(frame(AGENT))  # its last frames go nowhere
    old_whatsapp.accept(frame(WHATSAPP))
    assert bus.stats.uplink_frames == 0 and bus.stats.downlink_frames == 0
    new_agent.accept(frame(AGENT))
    assert old_whatsapp.take(1.0) is None  # not the call's WhatsApp side any more
    assert level(new_whatsapp.take(1.0)) == AGENT
    with pytest.raises(ValueError):
        bus.conference.set_role("agent", Role.WHATSAPP)  # a participant is never that side
