"""A fake WADial written from its public API document (calls resource, bearer auth,
Float32LE media socket with
JSON text frames). Where the spec is silent it follows the bridge's documented guesses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from .common import FakeCall, FakeServer, serve_media

PREFIX = "/api/v1/sessions/{session}/calls"


class FakeWadial(FakeServer):
    def __init__(
        self,
        key: str = "wkey",
        session: str = "s1",
        tone_hz: float = 600.0,
        port: int | None = None,
    ) -> None:
        super().__init__(port)
        self.key = key
        self.session = session
        self.tone_hz = tone_hz
        self.list_answer: bytes | None = None  # when set, the call list answers it (200)
        self.lists_asked = 0  # GETs of the call list
        self.ready: dict[str, Any] = {
            "type": "ready",
            "encoding": "f32le",
            "sampleRate": 16000,
            "channels": 1,
            "direction": "both",
        }
        self.text_frames: list[str] = []  # sent after ready on the next socket
        self.tasks: set[asyncio.Task[Any]] = set()

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        base = PREFIX.format(session=self.session)
        app.router.add_post(base, self.dial)
        app.router.add_get(base, self.list)
        app.router.add_post(base + "/{id}/answer", self.answer)
        app.router.add_post(base + "/{id}/hangup", self.hangup)
        app.router.add_get(base + "/{id}/media", self.media)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json() if request.method == "POST" and request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        return await handler(request)

    @staticmethod
    def snap(call: FakeCall) -> dict[str, Any]:
        return {
            "callId": call.id,
            "peerJid": call.peer,
            "direction": call.direction,
            "state": call.state,
            "transport": "websocket",
            "muted": False,
        }

    async def dial(self, request: web.Request) -> web.Response:
        to = (await request.json())["to"]
        call = FakeCall(self.new_id(), to, "outbound", "calling")
        self.calls[call.id] = call
        task = asyncio.ensure_future(self._answer_later(call))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response(self.snap(call), status=201)

    async def _answer_later(self, call: FakeCall) -> None:
        await asyncio.sleep(0.2)
        if call.state == "calling":
            call.state = "active"
            await self.broadcast(call, {"type": "call_state", "state": "active"})

    async def broadcast(self, call: FakeCall, frame: dict[str, Any]) -> None:
        for ws in list(call.sockets):
            await ws.send_str(json.dumps(frame))

    async def list(self, request: web.Request) -> web.Response:
        self.lists_asked += 1
        if self.list_answer is not None:
            return web.Response(body=self.list_answer, content_type="application/json")
        return web.json_response(
            {"calls": [self.snap(c) for c in self.calls.values() if c.state != "ended"]}
        )

    def ring_inbound(self, phone: str) -> str:
        call = FakeCall(self.new_id(), f"{phone}@s.whatsapp.net", "inbound", "ringing")
        self.calls[call.id] = call
        return call.id

    async def answer(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["id"])
        if call is None or call.state == "ended":
            return web.json_response({"error": "not found"}, status=404)
        call.state = "active"
        call.answered = True
        return web.json_response(self.snap(call))

    async def hangup(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["id"])
        if call is None or call.state == "ended":
            return web.json_response({"error": "not found"}, status=404)
        call.state = "ended"
        return web.json_response(self.snap(call))

    async def end_remote(self, call_id: str) -> None:
        """The peer hangs up: an ``ended`` frame on the socket, then the call leaves the list."""
        call = self.calls[call_id]
        call.state = "ended"
        await self.broadcast(call, {"type": "ended", "reason": "remote_hangup"})

    async def media(self, request: web.Request) -> web.StreamResponse:
        call = self.calls.get(request.match_info["id"])
        if call is None or call.state == "ended":
            return web.json_response({"error": "not found"}, status=404)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        call.sockets.append(ws)
        call.connects += 1
        await ws.send_str(json.dumps(self.ready))
        for text in self.text_frames:
            await ws.send_str(text)
        self.text_frames.clear()
        await serve_media(
            ws, call, self.tone_hz, 320, lambda pcm: (pcm / 32768.0).astype("<f4").tobytes()
        )
        return ws

    def heard_f32(self, call_id: str) -> np.ndarray:
        return np.frombuffer(b"".join(self.calls[call_id].received), dtype="<f4")

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await super().stop()
