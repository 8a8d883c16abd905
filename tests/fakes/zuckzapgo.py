"""A fake ZuckZapGo written from its Calls API guide (envelope, REST, media socket), for tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .common import FakeCall, FakeServer, serve_media


class FakeZuckZapGo(FakeServer):
    def __init__(
        self,
        token: str = "ztok",
        tone_hz: float = 700.0,
        port: int | None = None,
        answer_delay: float = 0.2,
    ) -> None:
        super().__init__(port)
        self.token = token
        self.tone_hz = tone_hz
        self.answer_delay = answer_delay
        self.enabled = True
        self.unreachable_peers: set[str] = set()
        self.extra_frames: list[bytes] = []  # sent once on the next media socket
        self.list_answer: bytes | None = None  # when set, /call/status answers it (200)
        self.stream_refusals = 0  # the next media sockets refused (503), as an engine starting
        self._tasks: set[asyncio.Task[Any]] = set()
        self.slow: dict[str, asyncio.Event] = {}
        """A POST to one of these paths is taken (recorded) at once and answered only once its
        event is set: an engine slow to answer it."""

    @staticmethod
    def ok(data: Any) -> web.Response:
        return web.json_response({"code": 200, "data": data, "success": True})

    @staticmethod
    def err(code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "error": message, "success": False}, status=code)

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/call/status", self.status)
        app.router.add_post("/call/dial", self.dial)
        app.router.add_post("/call/answer", self.answer)
        app.router.add_post("/call/hangup", self.hangup)
        app.router.add_get("/call/{id}/stream", self.stream)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = request.headers.get("token") or request.query.get("token")
        if token != self.token:
            return self.err(401, "invalid token")
        if request.method == "POST":
            self.requests.append((request.method, request.path, await request.json()))
            slow = self.slow.get(request.path)
            if slow is not None:
                await slow.wait()
        return await handler(request)

    async def status(self, request: web.Request) -> web.Response:
        if self.list_answer is not None:
            return web.Response(body=self.list_answer, content_type="application/json")
        calls = [
            {
                "callId": c.id,
                "peer": c.peer,
                "state": c.state,
                "direction": c.direction,
                "video": False,
                "recording": False,
                "startedAt": "2026-06-28T12:00:00Z",
            }
            for c in self.calls.values()
            if c.state != "ended"
        ]
        return self.ok({"calls": calls})

    async def dial(self, request: web.Request) -> web.Response:
        if not self.enabled:
            return self.err(409, "calls engine not enabled for this instance")
        phone = (await request.json())["phone"]
        if phone in self.unreachable_peers:
            return self.err(502, "peer unreachable")
        call = FakeCall(self.new_id(), f"{phone}@s.whatsapp.net", "outbound", "calling")
        self.calls[call.id] = call
        task = asyncio.ensure_future(self._answer_later(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return self.ok({"callId": call.id})

    async def _answer_later(self, call: FakeCall) -> None:
        await asyncio.sleep(self.answer_delay / 2)
        if call.state == "calling":
            call.state = "ringing"
        await asyncio.sleep(self.answer_delay / 2)
        if call.state == "ringing":
            call.state = "active"

    def ring_inbound(self, phone: str) -> str:
        call = FakeCall(self.new_id(), f"{phone}@s.whatsapp.net", "inbound", "ringing")
        self.calls[call.id] = call
        return call.id

    def remote_hangup(self, call_id: str) -> None:
        # §4.3: the call just disappears from /call/status; the socket may stay open.
        self.calls[call_id].state = "ended"

    async def answer(self, request: web.Request) -> web.Response:
        call = self.calls.get((await request.json()).get("callId"))
        if call is None or call.state == "ended":
            return self.err(404, "call not found")
        call.state = "active"
        call.answered = True
        return self.ok({"ok": True})

    async def hangup(self, request: web.Request) -> web.Response:
        call = self.calls.get((await request.json()).get("callId"))
        if call is None or call.state == "ended":
            return self.err(404, "call not found")
        call.state = "ended"
        for ws in list(call.sockets):
            await ws.close()
        return self.ok({"ok": True})

    async def open_socket(
        self, request: web.Request
    ) -> tuple[FakeCall, web.WebSocketResponse] | web.Response:
        """The call's media socket, accepted (the frames queued for it sent), or the 404."""
        if self.stream_refusals > 0:
            self.stream_refusals -= 1
            return self.err(503, "engine starting")
        call = self.calls.get(request.match_info["id"])
        if call is None or call.state == "ended":
            return self.err(404, "call not found")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        call.sockets.append(ws)
        call.connects += 1
        for extra in self.extra_frames:
            await ws.send_bytes(extra)
        self.extra_frames.clear()
        return call, ws

    async def stream(self, request: web.Request) -> web.StreamResponse:
        opened = await self.open_socket(request)
        if isinstance(opened, web.Response):
            return opened
        call, ws = opened
        # ZuckZapGo's API documentation (§6, and §4.8/§11: "the call's single inbound sink")
        # neither forbids nor promises a second socket on a call while one is open: a second
        # one is accepted, and takes the call's one inbound sink (the peer's audio goes to
        # the newest socket only). Closing a socket does not end the call (§4.6: hang-up is
        # POST /call/hangup; "also close the WebSocket").
        await serve_media(
            ws,
            call,
            self.tone_hz,
            960,
            lambda pcm: pcm.astype("<i2").tobytes(),
            single_sink=True,
        )
        return ws

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await super().stop()
