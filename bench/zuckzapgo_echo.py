"""The remote PCM engine of ``bench.run``'s ``zuckzapgo`` target and of its engine-delay part:
``tests/fakes/zuckzapgo.py``'s ZuckZapGo (its REST calls, envelope and media socket) whose
WhatsApp user echoes each call, in one of the ways a real engine keeps time (:class:`EchoKind`).
None is kind to the bridge: none drops a frame to keep its own delay short.

- ``as-received``: each 960-sample (60 ms) frame is sent back the moment it arrives, as an
  engine that relays the peer's audio with no clock of its own does;
- ``clocked``: every 60 ms of its own clock (``time.monotonic()`` from ``phase`` seconds after
  the socket opened; ``random`` draws it) it sends the oldest 960 samples received, or 60 ms of
  silence when none has come whole; nothing is dropped (a frame that came just after a tick
  waits for the next one), as a media loop that reads and writes each tick does;
- ``drift``: ``clocked`` on a clock ``ppm`` parts per million fast (+) or slow (−) against the
  bridge's, as a sound card's crystal is.

The queue holds at most :data:`QUEUE_FRAMES` (2 s); beyond that the oldest is dropped and
counted (a drifting engine's queue grows by a sample every ~3 000, so no run reaches it).
Prints ``READY`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum

from aiohttp import WSMsgType, web

from tests.fakes.common import FakeCall
from tests.fakes.zuckzapgo import FakeZuckZapGo

FRAME_BYTES = 1920
"""ZuckZapGo's media frame: 960 s16le samples, 60 ms at 16 kHz."""
FRAME_SECONDS = 0.06
QUEUE_FRAMES = 33
"""Received frames waiting to be sent back (2 s), the oldest dropped (counted) beyond."""


class EchoKind(Enum):
    """How the echoing engine keeps time (module docstring)."""

    AS_RECEIVED = "as-received"
    CLOCKED = "clocked"
    DRIFT = "drift"


@dataclass(frozen=True)
class EchoTiming:
    """An echoing engine's time keeping: its kind, the phase of its clock after the socket
    opened (s; ``None``: drawn at random), and its clock's error (ppm, ``drift`` only)."""

    kind: EchoKind = EchoKind.CLOCKED
    phase: float | None = None
    ppm: float = 0.0

    @property
    def period(self) -> float:
        """Seconds of the bridge's clock between two of the engine's ticks."""
        ppm = self.ppm if self.kind is EchoKind.DRIFT else 0.0
        return FRAME_SECONDS / (1 + ppm / 1e6)  # a fast clock (+) ticks sooner


class EchoingZuckZapGo(FakeZuckZapGo):
    """The fake ZuckZapGo whose peer echoes each call's audio, timed by ``timing``."""

    def __init__(self, timing: EchoTiming = EchoTiming(), **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.timing = timing
        self.dropped = 0
        """Frames dropped because the queue was full."""

    async def stream(self, request: web.Request) -> web.StreamResponse:
        opened = await self.open_socket(request)
        if isinstance(opened, web.Response):
            return opened
        call, ws = opened
        call.sink = ws  # one inbound sink per call, the newest socket's (as the fake's)
        queued: deque[bytes] = deque()
        pending = bytearray()
        relay = self.timing.kind is EchoKind.AS_RECEIVED
        sender = None if relay else asyncio.ensure_future(self._echo(ws, call, queued))
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.BINARY:
                    continue
                if relay:
                    if call.state == "active" and call.sink is ws:
                        await ws.send_bytes(msg.data)
                    continue
                pending += msg.data
                while len(pending) >= FRAME_BYTES:
                    if len(queued) == QUEUE_FRAMES:
                        queued.popleft()
                        self.dropped += 1
                    queued.append(bytes(pending[:FRAME_BYTES]))
                    del pending[:FRAME_BYTES]
        finally:
            if sender is not None:
                sender.cancel()
            call.sockets.remove(ws)
            if call.sink is ws:
                call.sink = None
        return ws

    async def _echo(self, ws: web.WebSocketResponse, call: FakeCall, queued: deque[bytes]) -> None:
        phase = self.timing.phase
        if phase is None:
            phase = random.uniform(0.0, FRAME_SECONDS)
        period = self.timing.period
        start = time.monotonic() + phase
        n = 0
        while not ws.closed:
            wait = start + n * period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            n += 1
            if call.state != "active" or call.sink is not ws:
                continue
            frame = queued.popleft() if queued else bytes(FRAME_BYTES)
            try:
                await ws.send_bytes(frame)
            except ConnectionError:
                return


def timing_of(kind: str, phase: str = "random", ppm: float = 0.0) -> EchoTiming:
    """The command line's ``--kind``, ``--phase`` (seconds or ``random``) and ``--ppm``."""
    return EchoTiming(EchoKind(kind), None if phase == "random" else float(phase), ppm)


async def serve(port: int, token: str, timing: EchoTiming) -> None:
    engine = EchoingZuckZapGo(timing, token=token, port=port, answer_delay=0.05)
    await engine.start()
    print("READY", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--kind", default="clocked", choices=[k.value for k in EchoKind])
    parser.add_argument("--phase", default="random", help="seconds after the socket opened")
    parser.add_argument("--ppm", type=float, default=0.0, help="drift: the clock's error")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.token, timing_of(args.kind, args.phase, args.ppm)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
