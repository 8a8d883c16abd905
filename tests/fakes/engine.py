"""An engine at the protocol seam, in process: no sockets, strict about the protocol.

``FakeEngine`` satisfies ``bridge.engines.Engine`` (hang-ups of unknown calls and double
answers fail); ``FakeChannel`` loops what the bridge sends back as the peer's audio;
``FakeAttachment`` is a bus user that records its close. :func:`calls_for_tests` builds the
calls' state machine with its two policies (inbound, recovery) around such an engine.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.calls import CallManager, InboundCalls, Recovery
from bridge.config import settings_for_tests
from bridge.engines import EngineEvent, EngineHealth, EngineStats, MediaClosed, RemoteCall
from bridge.metrics import Metrics
from bridge.rtc import SessionFactory
from bridge.rtc.turn import NoTurn


class FakeChannel:
    """Loops what the bridge sends back as the peer's audio; records its close."""

    def __init__(self, log: list[str]) -> None:
        self.sent: list[np.ndarray] = []
        self._back: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._log = log
        self.closed = False

    async def send(self, pcm: np.ndarray) -> None:
        self.sent.append(pcm)
        await self._back.put(pcm)

    async def recv(self) -> np.ndarray:
        item = await self._back.get()
        if item is None:
            raise MediaClosed("fake channel closed")
        return item

    def drop(self) -> None:
        """The engine's media went away by itself."""
        self._back.put_nowait(None)

    async def close(self) -> None:
        self.closed = True
        self._log.append("engine-media")


class FakeEngine:
    """Strict about the protocol: hang-ups of unknown calls and double answers raise."""

    name = "fake"
    media_before_answer = False

    def __init__(self) -> None:
        self.events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.stats = EngineStats()
        self.calls: dict[str, str] = {}
        self.hung_up: list[str] = []
        self.channels: list[FakeChannel] = []
        self.closing: list[str] = []
        self.later: list[str] = []
        self.listed_at_start: list[RemoteCall] = []
        self._n = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def health(self) -> EngineHealth:
        return EngineHealth(up=True)

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        self._n += 1
        engine_id = f"e{self._n}"
        self.calls[engine_id] = "calling"
        return engine_id

    async def answer(self, engine_call_id: str) -> None:
        assert self.calls[engine_call_id] == "ringing"
        self.calls[engine_call_id] = "active"

    async def hangup(self, engine_call_id: str) -> None:
        self.calls.pop(engine_call_id)
        self.hung_up.append(engine_call_id)

    async def open_media(self, engine_call_id: str) -> FakeChannel:
        channel = FakeChannel(self.closing)
        self.channels.append(channel)
        return channel

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        self.later.append(engine_call_id)

    async def startup_calls(self) -> list[RemoteCall]:
        return list(self.listed_at_start)


class MovableEngine(FakeEngine):
    """A PCM engine's capability: its calls can be carried on by another worker."""

    def can_move(self, engine_call_id: str) -> bool:
        return True


class FakeAttachment:
    def __init__(self, name: str, log: list[str], *, kind: str = "playback", media: bool = True):
        self.id = name
        self.kind = kind
        self.wants_media = media
        self.states: list[str] = []
        self._log = log

    def call_state(self, state: str, end_reason: str | None) -> None:
        self.states.append(state)

    async def close(self) -> None:
        self._log.append(self.id)


@dataclass
class Calls:
    """The calls of one process as the app builds them: the state machine and its policies."""

    manager: CallManager
    inbound: InboundCalls
    recovery: Recovery

    async def start(self) -> None:
        await self.manager.start()
        await self.recovery.start()

    async def close(self) -> None:
        await self.recovery.close()
        await self.manager.close()


def calls_for_tests(engine: Any, **settings: Any) -> Calls:
    """A manager, inbound policy and recovery on ``engine`` with test settings (overridable);
    not started."""
    s = settings_for_tests(**settings)
    manager = CallManager(s.calls, engine, Metrics(), SessionFactory(s.media, s.ice, NoTurn()))
    return Calls(manager, InboundCalls(manager), Recovery(manager))
