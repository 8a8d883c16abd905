"""A strict fake of Google's Gemini Live API (``BidiGenerateContent`` over a WebSocket),
written from its public reference: the bridge is its client. What the real service refuses
is an error here too, recorded in ``errors`` (a test asserts it stays empty): a first message
other than ``setup``, a second ``setup``, a message with other than exactly one of
``setup``/``clientContent``/``realtimeInput``/``toolResponse``, an unknown field, audio other
than 16-bit PCM with a ``rate=`` in its MIME type, a key neither in ``key`` nor
``x-goog-api-key``; an ``activityStart`` or ``activityEnd`` on a connection whose setup left
automatic activity detection on (the reference: only a client that disabled it marks the
activity), an ``activityStart`` while that connection's activity is open, an ``activityEnd``
with none open (each connection its own: the markers are kept in ``activities``); an
``audioStreamEnd`` other than ``true``, on a connection whose setup disabled automatic
activity detection (the reference: it is for the service's own detection), or with no audio
since the connection opened or since its last one (the stream is reopened by audio: the ends
taken are kept in ``stream_ends``, with the caller's chunks heard by then); a
``clientContent`` whose ``turns`` are not each a ``user`` or ``model`` role with text parts; a
``toolResponse`` other than ``functionResponses`` each with the ``id`` and ``name`` of a
function call of that connection not answered yet (nor cancelled: :meth:`cancel_tool_calls`)
and a ``response`` object.

The test drives the server: :meth:`say` sends 24 kHz audio as ``modelTurn`` parts, then
``turnComplete`` (``done=False``: the turn stays in progress, and a client's ``activityStart``
interrupts it, as the service's default ``START_OF_ACTIVITY_INTERRUPTS`` does, recorded in
``cancelled``); :meth:`interrupt` sends ``interrupted``; :meth:`go_away` sends ``goAway``
and closes, :meth:`drop` closes as a failing server; every connection gets a
``sessionResumptionUpdate`` handle, and a reconnect presenting it is recorded in ``resumed``.
A handle that expired (:meth:`expire_handles`) or was never given is refused: the socket
closed before ``setupComplete``. An audio session set up without ``contextWindowCompression``
ends after :attr:`audio_limit_s` (about 15 minutes for real), as its context fills.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .common import CallerAudioLog

PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP_FIELDS = {
    "model",
    "generationConfig",
    "systemInstruction",
    "tools",
    "realtimeInputConfig",
    "sessionResumption",
    "contextWindowCompression",
    "inputAudioTranscription",
    "outputAudioTranscription",
    "proactivity",
}
CLIENT_MESSAGES = {"setup", "clientContent", "realtimeInput", "toolResponse"}
REALTIME_FIELDS = {"audio", "video", "text", "activityStart", "activityEnd", "audioStreamEnd"}
MARKERS = ("activityStart", "activityEnd")


def _manual(setup: dict[str, Any]) -> bool:
    """The setup disabled automatic activity detection: the client marks the activity."""
    config = setup.get("realtimeInputConfig") or {}
    return (config.get("automaticActivityDetection") or {}).get("disabled") is True


class FakeGeminiLive(CallerAudioLog):
    def __init__(self, api_key: str = "g-test") -> None:
        super().__init__()
        self.api_key = api_key
        self.errors: list[str] = []
        self.setups: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.rates: set[int] = set()
        self.resumed: list[str] = []
        self.handles: set[str] = set()
        """The resumption handles given and still valid (:meth:`expire_handles`)."""
        self.refused: list[str] = []
        """Handles presented after they expired, or never given: refused."""
        self.tool_responses: list[dict[str, Any]] = []
        self.withdrawn: set[str] = set()
        """Function calls it cancelled (``toolCallCancellation``): never to be answered."""
        self._asked: dict[str, str] = {}
        """The current connection's function calls not answered yet: id → name."""
        self.activities: list[tuple[int, str]] = []
        """Each ``activityStart``/``activityEnd`` taken, with its connection's number."""
        self.stream_ends: list[tuple[int, int]] = []
        """Each ``audioStreamEnd`` taken: its connection's number, ``len(chunks)`` then."""
        self.connections = 0
        self.ws: web.WebSocketResponse | None = None
        self.generating = False
        """A model turn is in progress (:meth:`say` with ``done=False``)."""
        self.setup_s = 0.0
        """How long the service takes to answer a ``setup`` (``setupComplete``): real ones take
        a few hundred ms."""
        self.audio_limit_s = 15 * 60.0
        """How long an audio session without ``contextWindowCompression`` lasts: then the
        service ends it (``goAway``, closed) as its context fills."""

    def app(self) -> web.Application:
        app = self.new_app()
        app.router.add_get(PATH, self.handler)
        return app

    async def _send(self, body: dict[str, Any]) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(body))

    async def handler(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("key") or request.headers.get("x-goog-api-key")
        if key != self.api_key:
            raise web.HTTPForbidden(text="API key not valid")
        ws = web.WebSocketResponse(max_msg_size=16 << 20)
        await ws.prepare(request)
        self.served(ws)
        self.connections += 1
        self.ws = ws
        self._asked = {}  # this connection's function calls: a toolResponse answers one of them
        setup_done = False
        connection = self.connections
        manual = False  # its setup disabled automatic activity detection
        active = False  # its activity is open (activityStart, no End yet)
        streaming = False  # audio came since it opened or since its last audioStreamEnd
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                # The real service accepts JSON in binary frames too; the bridge sends text.
                self.errors.append("binary frame")
                continue
            body = json.loads(msg.data)
            self.messages.append(body)
            kinds = set(body) & CLIENT_MESSAGES
            if len(kinds) != 1 or set(body) - CLIENT_MESSAGES:
                self.errors.append(
                    f"a message must hold exactly one of {CLIENT_MESSAGES}: {sorted(body)}"
                )
                await ws.close(code=1007, message=b"invalid message")
                break
            (kind,) = kinds
            if (kind == "setup") == setup_done:
                self.errors.append("setup must come first, once")
                await ws.close(code=1007, message=b"setup first, once")
                break
            if kind == "setup":
                setup_done = await self._setup(body["setup"])
                manual = _manual(body["setup"])
                if not setup_done:
                    await ws.close(code=1007, message=b"invalid setup")
                    break
            elif kind == "realtimeInput":
                self._realtime(body["realtimeInput"])
                marker = next((m for m in MARKERS if m in body["realtimeInput"]), None)
                if marker is not None:
                    if not manual:
                        self.errors.append(f"{marker} with automatic activity detection on")
                    elif (marker == "activityStart") == active:
                        state = "open" if active else "not open"
                        self.errors.append(f"{marker} while the activity is {state}")
                    active = marker == "activityStart"
                    self.activities.append((connection, marker))
                if "audio" in body["realtimeInput"]:
                    streaming = True
                elif "audioStreamEnd" in body["realtimeInput"]:
                    if body["realtimeInput"]["audioStreamEnd"] is not True:
                        self.errors.append("audioStreamEnd must be true")
                    elif manual:
                        self.errors.append("audioStreamEnd with automatic activity detection off")
                    elif not streaming:
                        self.errors.append("audioStreamEnd with no audio since the stream opened")
                    streaming = False
                    self.stream_ends.append((connection, len(self.chunks)))
                if "activityStart" in body["realtimeInput"] and self.generating:
                    # activityHandling START_OF_ACTIVITY_INTERRUPTS (the default): the
                    # caller's activity start ends the model's turn, as a cancel would.
                    self.cancelled.append(time.monotonic())
                    await self.interrupt()
            elif kind == "toolResponse":
                self.tool_responses.append(body["toolResponse"])
                self._tool_response(body["toolResponse"])
            elif kind == "clientContent":
                self._content(body["clientContent"])
        return ws

    async def _setup(self, setup: dict[str, Any]) -> bool:
        unknown = set(setup) - SETUP_FIELDS
        if unknown or not str(setup.get("model", "")).startswith("models/"):
            self.errors.append(f"bad setup: unknown {sorted(unknown)}, model {setup.get('model')}")
            return False
        if setup.get("generationConfig", {}).get("responseModalities") != ["AUDIO"]:
            self.errors.append("responseModalities must be [AUDIO] for a voice session")
            return False
        handle = (setup.get("sessionResumption") or {}).get("handle")
        if handle and handle not in self.handles:
            # Expired or never given: refused (the close code is not public; 1008 here).
            self.refused.append(handle)
            if self.ws is not None:
                await self.ws.close(code=1008, message=b"invalid session resumption handle")
            return False
        if handle:
            self.resumed.append(handle)
        compression = setup.get("contextWindowCompression")
        if compression is not None and not isinstance(compression, dict):
            self.errors.append(f"contextWindowCompression {compression!r} is not an object")
            return False
        if compression is None and self.ws is not None:
            ws = self.ws
            asyncio.get_running_loop().call_later(
                self.audio_limit_s, lambda: asyncio.ensure_future(self._full(ws))
            )
        self.setups.append(setup)
        if self.setup_s:
            await asyncio.sleep(self.setup_s)
        await self._send({"setupComplete": {}})
        if "sessionResumption" in setup:
            self.handles.add(f"h{self.connections}")
            await self._send(
                {
                    "sessionResumptionUpdate": {
                        "newHandle": f"h{self.connections}",
                        "resumable": True,
                    }
                }
            )
        return True

    def _realtime(self, body: dict[str, Any]) -> None:
        if set(body) - REALTIME_FIELDS or len(body) != 1:
            self.errors.append(f"bad realtimeInput fields {sorted(body)}")
            return
        audio = body.get("audio")
        if audio is None:
            return
        mime = str(audio.get("mimeType", ""))
        if set(audio) - {"data", "mimeType"} or not mime.startswith("audio/pcm;rate="):
            self.errors.append(f"bad audio blob {sorted(audio)} {mime!r}")
            return
        try:
            raw = base64.b64decode(audio.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            self.errors.append("audio data is not base64")
            return
        if len(raw) % 2:
            self.errors.append("audio must be whole 16-bit samples")
            return
        self.rates.add(int(mime.split("rate=")[1]))
        self.keep_caller_audio(raw)

    # -- the server's side, driven by the test
    async def say(
        self, pcm24: np.ndarray, chunk_ms: int = 100, done: bool = True, transcript: str = ""
    ) -> None:
        """``pcm24`` as one model turn, its ``transcript`` (when given, with
        ``outputAudioTranscription`` on) in ``outputTranscription`` fragments, a word with each
        chunk as the service streams them; ``done=False`` leaves the turn in progress (the
        model still generating: a caller's ``activityStart`` then interrupts it)."""
        self.generating = True
        step = 24 * chunk_ms
        words = transcript.split(" ") if transcript else []
        chunks = range(0, pcm24.size, step)
        for n, i in enumerate(chunks):
            data = base64.b64encode(pcm24[i : i + step].astype("<i2").tobytes()).decode()
            part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
            await self._send({"serverContent": {"modelTurn": {"parts": [part]}}})
            for w in range(n, len(words) if n == len(chunks) - 1 else min(n + 1, len(words))):
                text = words[w] if w == 0 else " " + words[w]  # a word a chunk, the rest last
                await self._send({"serverContent": {"outputTranscription": {"text": text}}})
        if not done:
            return
        self.generating = False
        await self._send({"serverContent": {"generationComplete": True}})
        await self._send({"serverContent": {"turnComplete": True}})

    async def interrupt(self) -> None:
        self.generating = False
        await self._send({"serverContent": {"interrupted": True}})

    async def drop(self) -> None:
        """Close the current connection as a failing server would."""
        if self.ws is not None:
            await self.ws.close(code=1011, message=b"server error")

    def _content(self, content: Any) -> None:
        turns = content.get("turns") if isinstance(content, dict) else None
        if (
            not isinstance(turns, list)
            or set(content) - {"turns", "turnComplete"}
            or not isinstance(content.get("turnComplete", False), bool)
        ):
            self.errors.append(f"clientContent {content!r}: turns and turnComplete")
            return
        for turn in turns:
            parts = turn.get("parts") if isinstance(turn, dict) else None
            if (
                turn.get("role") not in ("user", "model")
                or not isinstance(parts, list)
                or not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts)
            ):
                self.errors.append(f"clientContent turn {turn!r}: a role and text parts")

    def _tool_response(self, response: Any) -> None:
        answers = response.get("functionResponses") if isinstance(response, dict) else None
        if not isinstance(answers, list) or set(response) != {"functionResponses"}:
            self.errors.append(f"toolResponse {response!r}: functionResponses only")
            return
        for answer in answers:
            if (
                not isinstance(answer, dict)
                or set(answer) - {"id", "name", "response", "willContinue", "scheduling"}
                or not isinstance(answer.get("response"), dict)
            ):
                self.errors.append(f"functionResponse {answer!r}: id, name, response object")
            elif answer.get("id") in self.withdrawn:
                self.errors.append(f"functionResponse for a call it cancelled: {answer}")
            elif self._asked.pop(str(answer.get("id")), None) != answer.get("name"):
                self.errors.append(f"functionResponse for no call of this connection: {answer}")

    async def tool_call(self, name: str, args: dict[str, Any], call_id: str) -> None:
        self._asked[call_id] = name
        await self._send(
            {"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}}
        )

    async def cancel_tool_calls(self, ids: list[str]) -> None:
        """``toolCallCancellation``: the model abandoned these calls (the caller spoke over
        it); a ``toolResponse`` for one of them is an error."""
        for call_id in ids:
            self._asked.pop(call_id, None)
            self.withdrawn.add(call_id)
        await self._send({"toolCallCancellation": {"ids": ids}})

    def expire_handles(self) -> None:
        """Every handle given so far expires (as users see resumptions fail)."""
        self.handles.clear()

    async def _full(self, ws: web.WebSocketResponse) -> None:
        """The context of a session without compression is full: it ends."""
        if ws is self.ws and not ws.closed:
            await self._send({"goAway": {"timeLeft": "0s"}})
            await ws.close(code=1000, message=b"context full")

    async def go_away(self) -> None:
        """``goAway``, then the connection closes (as at the end of a session's lifetime)."""
        await self._send({"goAway": {"timeLeft": "0s"}})
        if self.ws is not None:
            await self.ws.close(code=1000, message=b"session over")
