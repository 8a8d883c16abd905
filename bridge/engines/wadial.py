"""WADial engine: ``POST /api/v1/sessions/{sessionId}/calls {to}`` with bearer auth, and the
media WebSocket ``…/calls/{callId}/media`` carrying Float32LE 16 kHz mono with JSON text
frames ``ready``, ``buffer``, ``call_state``, ``error``, ``ended``.
Source: WADial's public API document (the calls resource and its media socket).

The WADial document names only the ``calls`` collection and the media socket. Everything it
is silent about — answer, hang-up, listing calls, and the field names inside the JSON text
frames — is a guess, collected in :data:`ROUTES` and :class:`WadialMedia` so it can be fixed
in one place when the real shape is known (see the README).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np

from ..audio import SAMPLE_RATE, f32_to_s16, s16_to_f32
from ..audio.pcm import Pcm
from ..config import EngineSettings
from ..errors import BadRequest, EngineError, json_object
from .base import ACTIVE_STATES, EngineEvent, EngineEventKind, RemoteCall, emit
from .channels import MediaFatal
from .polling import PollingEngine
from .socket import ReconnectingChannel, WebSocketMedia

log = logging.getLogger(__name__)

ROUTES = {
    # documented
    "dial": ("POST", "/api/v1/sessions/{session}/calls"),
    "media": ("GET", "/api/v1/sessions/{session}/calls/{call}/media"),
    # guessed: the most plausible REST shape next to the documented ``calls`` resource
    "list": ("GET", "/api/v1/sessions/{session}/calls"),
    "answer": ("POST", "/api/v1/sessions/{session}/calls/{call}/answer"),
    "hangup": ("POST", "/api/v1/sessions/{session}/calls/{call}/hangup"),
}

ENCODINGS = frozenset({"f32le", "float32le", "pcm_f32le", "float32"})


def _unwrapped(body: Any) -> Any:
    """An answer without the ``{"data": …}`` envelope it may come in (a guess, as the routes:
    each of WADial's answers is read with or without it)."""
    if isinstance(body, dict) and isinstance(body.get("data"), (dict, list)):
        return body["data"]
    return body


def _snapshot(body: Any) -> dict[str, Any]:
    body = _unwrapped(body)
    if isinstance(body, dict) and isinstance(body.get("call"), dict):
        body = body["call"]
    return body if isinstance(body, dict) else {}


class WadialMedia(WebSocketMedia):
    """One WADial media socket: s16 bus frames ⇄ Float32LE, with its JSON control frames.

    Backpressure: ``buffer`` frames report the engine's queued outbound audio and its
    watermarks. Above the high watermark uplink frames are dropped (counted) until the depth
    falls below the low watermark, so the engine's queue never grows without bound and the
    bridge never blocks.
    """

    sample_bytes = 4
    engine = "WADial"

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, engine: WadialEngine, call_id: str
    ) -> None:
        super().__init__(ws, call_id, engine.stats)
        self.wadial = engine
        self.throttled = False

    async def send(self, pcm: Pcm) -> None:
        if self.throttled:
            self.stats.uplink_dropped += 1
            return
        await self.send_payload(s16_to_f32(pcm).astype("<f4", copy=False).tobytes())

    def decode(self, data: bytes) -> Pcm:
        return f32_to_s16(np.frombuffer(data, dtype="<f4"))

    def on_text(self, text: str) -> None:
        """A JSON control frame (``ready``, ``buffer``, ``call_state``, ``ended``, ``error``)."""
        try:
            frame = json_object(text)  # nested too deeply too: it once ended the call's media
        except BadRequest:
            self.stats.bad_messages += 1
            self.bad(
                "text frames",
                "call %s: WADial sent unparseable text %r (such frames are counted, not said "
                "again)",
                self.call_id,
                text[:80],
            )
            return
        kind = frame.get("type")
        if kind == "ready":
            self._check_ready(frame)
        elif kind == "buffer":
            depth = _num(frame, "bufferedMs", "buffered_ms", "depthMs")
            high = _num(frame, "highWatermarkMs", "high_watermark_ms", "highMs")
            low = _num(frame, "lowWatermarkMs", "low_watermark_ms", "lowMs")
            if depth is not None and high is not None and depth >= high:
                self.throttled = True
            elif depth is not None and (low is None or depth <= low):
                self.throttled = False
        elif kind == "call_state":
            state = str(frame.get("state", "")).lower()
            if state in ACTIVE_STATES:
                emit(self.wadial.events, EngineEvent(EngineEventKind.ANSWERED, self.call_id))
            elif state == "ended":
                self.wadial.forget(self.call_id, "")
        elif kind == "ended":
            self.wadial.forget(self.call_id, str(frame.get("reason") or ""))
        elif kind == "error":  # "invalid frames or feed failures": maybe one a frame
            self.stats.bad_messages += 1
            self.bad(
                "error reports",
                "call %s: WADial media error: %s (further ones are counted, not said)",
                self.call_id,
                frame.get("message") or frame.get("error") or frame,
            )
        else:
            self.stats.bad_messages += 1

    def _check_ready(self, frame: dict[str, Any]) -> None:
        encoding = str(frame.get("encoding", "")).lower()
        rate = _num(frame, "sampleRate", "sample_rate")
        channels = _num(frame, "channels")
        if encoding not in ENCODINGS or rate != SAMPLE_RATE or channels not in (None, 1):
            self.stats.bad_messages += 1
            log.error(
                "call %s: WADial media is %s at %s Hz x%s; the bridge needs f32le 16000 Hz "
                "mono — closing the socket",
                self.call_id,
                encoding or "?",
                rate,
                channels,
            )
            raise MediaFatal(f"{self.call_id}: unsupported media format {frame}")


def _num(frame: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = frame.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


class WadialEngine(PollingEngine):
    """Drives a WADial session (``BRIDGE_ENGINE=wadial``)."""

    name = "wadial"
    who = "WADial"
    not_enabled = "the WADial session is not paired or connected"
    media_before_answer = True
    """The media socket reports ``call_state``/``ended``: open it before the answer."""

    def __init__(self, settings: EngineSettings, http: aiohttp.ClientSession | None = None) -> None:
        super().__init__(settings, http)
        self.headers = {"Authorization": f"Bearer {settings.engine_token}"}
        self.session = settings.engine_session

    def _url(self, route: str, call: str = "") -> tuple[str, str]:
        method, path = ROUTES[route]
        return method, self.base + path.format(
            session=quote(self.session, safe=""), call=quote(call, safe="")
        )

    async def _call(self, route: str, call: str = "", body: Any = None) -> Any:
        method, url = self._url(route, call)
        return await self.request(method, url, payload=body, headers=self.headers)

    async def list_calls(self) -> list[RemoteCall]:
        body = _unwrapped(await self._call("list"))  # a list, or {"calls": [...]} in it
        if isinstance(body, dict):
            body = body.get("calls", [])
        if not isinstance(body, list):
            raise self.unreadable(body)
        return self.listed([_snapshot(item) for item in body])

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        snap = _snapshot(await self._call("dial", body={"to": f"{phone}@s.whatsapp.net"}))
        engine_id = snap.get("callId")
        if not engine_id:
            raise EngineError(f"WADial's answer to the dial has no callId: {snap!r:.200}")
        self.track(
            str(engine_id),
            f"{phone}@s.whatsapp.net",
            str(snap.get("state") or "calling"),
            "outbound",
        )
        return str(engine_id)

    async def answer(self, engine_call_id: str) -> None:
        await self._call("answer", engine_call_id)

    async def end_call(self, engine_call_id: str) -> None:
        await self._call("hangup", engine_call_id)

    async def open_media(self, engine_call_id: str) -> ReconnectingChannel:
        _, url = self._url("media", engine_call_id)

        async def connect() -> WadialMedia:
            ws = await self.media_socket(url, headers=self.headers)
            return WadialMedia(ws, self, engine_call_id)

        return await self.reconnecting(engine_call_id, connect)
