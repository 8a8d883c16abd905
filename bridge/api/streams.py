"""``GET /call/{callID}/stream``: the call's PCM over a WebSocket (ZuckZapGo-compatible by
default), and the media-fork routes ``/call/{callID}/streams``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from ..audio import FRAME_MS, SAMPLE_RATE, f32_to_s16, s16_to_f32
from ..audio.pcm import Pcm
from ..bus import BusFrame, CallBus
from ..calls import Call, CallManager
from ..errors import BadRequest, CallStateError
from ..streams import QueuedSource
from ..tasks import TaskSet
from .errors import read_json
from .keys import FORKS, MANAGER

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_MESSAGE = 1 << 20
"""Largest WebSocket message accepted from a client (1 MiB ≈ 32 s of s16 audio)."""
OUTGOING_FRAMES = 100
"""Peer audio queued for a slow socket client before the oldest is dropped (2 s)."""
OUTGOING_CONTROL = 1000
"""Control messages queued for a client that does not read; beyond it the socket is closed."""


class PcmSocket:
    """One client on a call's PCM WebSocket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        manager: CallManager,
        call: Call,
        bus: CallBus,
        *,
        encoding: str,
        frame_ms: int,
        listen_only: bool,
    ) -> None:
        self.ws = ws
        self.manager = manager
        self.call = call
        self.bus = bus
        self.encoding = encoding
        self.batch = frame_ms // FRAME_MS
        self.listen_only = listen_only
        self.name = f"ws:{id(self)}"
        self._out: deque[bytes | str] = deque()
        self._audio_out = 0
        self._pending: list[Pcm] = []
        self._wake = asyncio.Event()
        self._tasks = TaskSet(f"ws[{call.id}]")
        self.dropped = 0
        self.overflow = False
        self.source = QueuedSource(on_mark=self._marked, on_buffer=self._buffer)

    # -- outgoing (never awaited from the media path: queued for the sender task)
    def _send_json(self, body: dict[str, Any]) -> None:
        if len(self._out) - self._audio_out >= OUTGOING_CONTROL:
            self.overflow = True  # the receive loop closes the socket (1008)
            return
        self._out.append(json.dumps(body))
        self._wake.set()

    def _marked(self, name: str, status: str) -> None:
        self._send_json({"type": "mark", "name": name, "status": status})

    def _buffer(self, ms: int) -> None:
        self._send_json(
            {
                "type": "buffer",
                "bufferedMs": ms,
                "lowWatermarkMs": self.source.low_ms,
                "highWatermarkMs": self.source.high_ms,
            }
        )

    def _peer_frame(self, frame: BusFrame) -> None:
        self._pending.append(frame.pcm)
        if len(self._pending) < self.batch:
            return
        pcm = np.concatenate(self._pending) if self.batch > 1 else self._pending[0]
        self._pending = []
        payload = (
            s16_to_f32(pcm).astype("<f4").tobytes()
            if self.encoding == "f32le"
            else pcm.astype("<i2", copy=False).tobytes()
        )
        if self._audio_out * self.batch >= OUTGOING_FRAMES:
            # A slow client: drop its oldest audio, never the control messages.
            for i, item in enumerate(self._out):
                if isinstance(item, bytes):
                    del self._out[i]
                    self._audio_out -= 1
                    self.dropped += 1
                    break
        self._out.append(payload)
        self._audio_out += 1
        self._wake.set()

    async def _sender(self) -> None:
        while not self.ws.closed:
            await self._wake.wait()
            self._wake.clear()
            while self._out and not self.ws.closed:
                item = self._out.popleft()
                if isinstance(item, bytes):
                    self._audio_out -= 1
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)

    async def _call_events(self) -> None:
        async with self.manager.events.subscribe() as sub:
            if not self.call.live:  # it ended before we subscribed
                self._send_json({"type": "ended", "reason": str(self.call.end_reason)})
                sub.close()
            while True:
                try:
                    event = await sub.get(30)
                except TimeoutError:
                    continue
                if event is None:
                    break
                if event.call["callID"] != self.call.id:
                    continue
                if event.type in ("call.ringing", "call.active", "call.ended"):
                    self._send_json({"type": "call_state", "state": event.call["state"]})
                if event.type == "call.ended":
                    self._send_json({"type": "ended", "reason": event.call["endReason"]})
                    break
        # Let the sender flush the last messages, then close.
        for _ in range(50):
            if not self._out:
                break
            await asyncio.sleep(0.01)
        await self.ws.close()

    # -- incoming
    def _error(self, code: str, message: str) -> None:
        self._send_json({"type": "error", "code": code, "message": message})

    def _audio_in(self, data: bytes) -> None:
        if self.listen_only:
            self._error("listen_only", "this socket is receive-only (role=listen)")
            return
        width = 4 if self.encoding == "f32le" else 2
        if len(data) % width:
            self._error(
                "bad_frame",
                f"a {self.encoding} frame must be a multiple of {width} "
                f"bytes; got {len(data)}; dropped",
            )
            return
        pcm = (
            f32_to_s16(np.frombuffer(data, dtype="<f4"))
            if width == 4
            else np.frombuffer(data, dtype="<i2").astype(np.int16)
        )
        self.source.push(pcm)

    def _control(self, text: str) -> None:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError:
            self._error("bad_json", "text frames must be JSON objects")
            return
        kind = msg.get("type")
        if kind == "clear":
            dropped = self.source.clear()
            self._send_json({"type": "cleared", "droppedMs": dropped * FRAME_MS})
        elif kind == "mark":
            name = msg.get("name")
            if not isinstance(name, str) or not name or len(name) > 200:
                self._error("bad_mark", "mark needs a 'name' string (1-200 characters)")
            elif not self.source.mark(name):
                self._error("too_many_marks", "too many marks waiting; send fewer")
        else:
            self._error("unknown_type", f"unknown message type {str(kind)[:40]!r}")

    async def run(self) -> None:
        self._send_json(
            {
                "type": "ready",
                "callID": self.call.id,
                "encoding": self.encoding,
                "sampleRate": SAMPLE_RATE,
                "channels": 1,
                "frameMs": self.batch * FRAME_MS,
                "frameBytes": self.batch
                * FRAME_MS
                * SAMPLE_RATE
                // 1000
                * (4 if self.encoding == "f32le" else 2),
                "role": "listen" if self.listen_only else "talk",
                "state": str(self.call.state),
            }
        )
        self._tasks.spawn(self._sender(), "sender")
        self._tasks.spawn(self._call_events(), "events")
        self.bus.add_downlink_tap(self._peer_frame)
        if self.listen_only:
            self.bus.add_user(self.name)
        else:
            self.bus.add_source(self.source)
        self.manager.attach_socket(self.call.id, +1)
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.BINARY:
                    self._audio_in(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    self._control(msg.data)
                if self.overflow:
                    await self.ws.close(code=1008, message=b"client does not read its messages")
                    break
        finally:
            self.bus.remove_downlink_tap(self._peer_frame)
            self.bus.remove_source(self.source)
            self.bus.remove_user(self.name)
            self.manager.attach_socket(self.call.id, -1)
            await self._tasks.close()


@routes.get("/call/{callID}/stream")
async def call_stream(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER]
    call = manager.get(request.match_info["callID"])
    if not call.live:
        raise CallStateError(f"call {call.id} has ended")
    encoding = request.query.get("format", "s16le")
    if encoding not in ("s16le", "f32le"):
        raise BadRequest("format must be s16le or f32le")
    try:
        frame_ms = int(request.query.get("frame_ms", "20"))
    except ValueError:
        frame_ms = 0
    if frame_ms not in (20, 60):
        raise BadRequest("frame_ms must be 20 or 60")
    role = request.query.get("role", "talk")
    if role not in ("talk", "listen"):
        raise BadRequest("role must be talk or listen")
    media = manager.media(call.id)
    if media is None:
        raise CallStateError(f"call {call.id} has ended")
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=20)
    await ws.prepare(request)
    await PcmSocket(
        ws,
        manager,
        call,
        media.bus,
        encoding=encoding,
        frame_ms=frame_ms,
        listen_only=role == "listen",
    ).run()
    return ws


@routes.post("/call/{callID}/streams")
async def start_fork(request: web.Request) -> web.Response:
    call = request.app[MANAGER].get(request.match_info["callID"])
    body = await read_json(request)
    fork = await request.app[FORKS].start(call.id, body)
    return web.json_response({"streamId": fork.id, "callID": call.id}, status=201)


@routes.delete("/call/{callID}/streams/{streamId}")
async def stop_fork(request: web.Request) -> web.Response:
    call = request.app[MANAGER].get(request.match_info["callID"])
    await request.app[FORKS].stop(call.id, request.match_info["streamId"])
    return web.json_response({"streamId": request.match_info["streamId"], "stopped": True})
