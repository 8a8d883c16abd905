"""The remote PCM engine of ``bench.run``'s ``zuckzapgo`` target: ``tests/fakes/zuckzapgo.py``'s
ZuckZapGo (its REST calls, envelope and media socket) whose WhatsApp user echoes each call.

Like a real engine, it keeps its own clock: what the bridge sends (960-sample, 60 ms s16le
frames) waits in a per-call queue, and every 60 ms of the engine's clock (``time.monotonic()``
from a random phase after the socket's opening, not the bridge's ticks) it sends the oldest 960
samples back, or 60 ms of silence when none has come whole. The random phase stands for a
worker whose clock already runs for other calls: without it, the bench's first call opened
the socket just before the worker clock started, and every round drew the same phase.
The queue holds at most :data:`ECHO_DEPTH` frame, the older dropped: a frame that came just
after a tick cannot leave 60 ms more delay for the rest of the call (a real engine's playout
would rather skip it). Prints ``READY`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from aiohttp import WSMsgType, web

from tests.fakes.common import FakeCall
from tests.fakes.zuckzapgo import FakeZuckZapGo

FRAME_BYTES = 1920
"""ZuckZapGo's media frame: 960 s16le samples, 60 ms at 16 kHz."""
FRAME_SECONDS = 0.06
ECHO_DEPTH = 1
"""Received frames waiting to be sent back (60 ms)."""


class EchoingZuckZapGo(FakeZuckZapGo):
    async def stream(self, request: web.Request) -> web.StreamResponse:
        opened = await self.open_socket(request)
        if isinstance(opened, web.Response):
            return opened
        call, ws = opened
        call.sink = ws  # one inbound sink per call, the newest socket's (as the fake's)
        queued = bytearray()
        sender = asyncio.ensure_future(self._echo(ws, call, queued))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    queued += msg.data
                    if len(queued) > ECHO_DEPTH * FRAME_BYTES:
                        del queued[: len(queued) - ECHO_DEPTH * FRAME_BYTES]
        finally:
            sender.cancel()
            call.sockets.remove(ws)
            if call.sink is ws:
                call.sink = None
        return ws

    @staticmethod
    async def _echo(ws: web.WebSocketResponse, call: FakeCall, queued: bytearray) -> None:
        start = time.monotonic() + random.uniform(0.0, FRAME_SECONDS)  # module docstring
        n = 0
        while not ws.closed:
            wait = start + n * FRAME_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            n += 1
            if call.state != "active" or call.sink is not ws:
                continue
            if len(queued) >= FRAME_BYTES:
                frame = bytes(queued[:FRAME_BYTES])
                del queued[:FRAME_BYTES]
            else:
                frame = bytes(FRAME_BYTES)
            try:
                await ws.send_bytes(frame)
            except ConnectionError:
                return


async def serve(port: int, token: str) -> None:
    engine = EchoingZuckZapGo(token=token, port=port, answer_delay=0.05)
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
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.token))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
