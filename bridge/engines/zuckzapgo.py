"""ZuckZapGo (meowcaller) engine: REST ``/call/*`` with a ``token`` header and the
``{code,data,success}`` envelope; media over ``GET /call/{id}/stream?token=`` as raw s16le
16 kHz mono in 960-sample (1920-byte, 60 ms) frames both ways.
Source: ZuckZapGo's Calls API guide (its response envelope, REST endpoints and media socket)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from ..audio.pcm import SAMPLE_RATE
from ..config import EngineSettings
from ..errors import EngineError, json_object
from .base import EngineEvent, EngineEventKind, RemoteCall, emit
from .polling import PollingEngine
from .socket import PcmStreamMedia, ReconnectingChannel
from .tick_aim import TickAim
from .webhooks import WebhookCalls

log = logging.getLogger(__name__)

ENGINE_FRAME_SAMPLES = 960
"""§6: the engine's frame, 960 samples = 1920 bytes = 60 ms (three bus frames)."""


class ZuckZapGoEngine(PollingEngine):
    """Drives a ZuckZapGo instance (``BRIDGE_ENGINE=zuckzapgo``)."""

    name = "zuckzapgo"
    who = "ZuckZapGo"
    not_enabled = (
        "the ZuckZapGo calls engine is not enabled for this instance: "
        'PUT /call/config {"callsEnabled": true, "callInboundMode": "manual"} on the engine, '
        "then reconnect its session (POST /session/disconnect, POST /session/connect) "
        "— engine said"
    )

    def __init__(self, settings: EngineSettings, http: aiohttp.ClientSession | None = None) -> None:
        super().__init__(settings, http)
        self.headers = {"token": settings.engine_token}

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call's payload: §2, ``.data`` of ``{code, data, success}``."""
        raw = await self.request(method, self.base + path, payload=body, headers=self.headers)
        if isinstance(raw, dict) and "data" in raw and "success" in raw:
            if raw.get("success") is False:
                raise EngineError(f"engine error: {raw.get('error') or raw}")
            return raw["data"]
        return raw

    async def list_calls(self) -> list[RemoteCall]:
        data = await self._call("GET", "/call/status")
        if not isinstance(data, dict):
            raise self.unreadable(data)
        return self.listed(data.get("calls"))

    async def dial(self, phone: str, *, call_id: str = "") -> str:
        data = await self._call("POST", "/call/dial", {"phone": phone})
        engine_id = data.get("callId") if isinstance(data, dict) else None
        if not engine_id:
            raise EngineError(f"the engine's dial answer has no callId: {data!r:.200}")
        self.track(str(engine_id), f"{phone}@s.whatsapp.net", "calling", "outbound")
        return str(engine_id)

    async def answer(self, engine_call_id: str) -> None:
        await self._call("POST", "/call/answer", {"callId": engine_call_id})

    async def end_call(self, engine_call_id: str) -> None:
        await self._call("POST", "/call/hangup", {"callId": engine_call_id})

    async def open_media(self, engine_call_id: str) -> ReconnectingChannel:
        url = f"{self.base}/call/{quote(engine_call_id, safe='')}/stream"

        async def connect() -> PcmStreamMedia:
            """§6: bus frames in threes to exactly 1920-byte frames, and back (the engine
            zero-pads partial frames, which would put gaps in the call); text is ignored."""
            started = time.monotonic()
            ws = await self.media_socket(url, params={"token": self.settings.engine_token})
            # The opening's time bounds the socket's delay, which a frame aimed at the
            # engine's tick must allow for (``tick_aim.py``).
            aim = TickAim(ENGINE_FRAME_SAMPLES / SAMPLE_RATE, time.monotonic() - started)
            return PcmStreamMedia(
                ws,
                engine_call_id,
                self.stats,
                batch_samples=ENGINE_FRAME_SAMPLES,
                aim=aim,
                engine=self.who,
            )

        return await self.reconnecting(engine_call_id, connect)

    def receive_webhook(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """A ``v1.call.*`` webhook (§5): ring at once on ``v1.call.offer``; re-poll on any.
        Authenticated by the bridge's API token like any ``/engine/`` route; ``False`` for
        another event; :class:`~bridge.errors.BadRequest` when not a JSON object."""
        payload = json_object(raw)
        kind = str(payload.get("type") or payload.get("event") or "")
        if not kind.startswith("v1.call."):
            return False
        data = payload.get("data") if isinstance(payload.get("data"), dict) else payload
        assert isinstance(data, dict)
        call_id = data.get("callId") or data.get("call_id") or data.get("CallID") or data.get("id")
        peer = data.get("peer") or data.get("from") or data.get("From") or ""
        if call_id and self._calls.over(str(call_id)):
            return True  # a late event about a call that has already ended
        if kind == "v1.call.offer" and call_id and str(call_id) not in self._calls:
            self.track(str(call_id), str(peer), "ringing", "inbound")
            emit(self.events, EngineEvent(EngineEventKind.INCOMING, str(call_id), str(peer)))
        elif kind in ("v1.call.terminate", "v1.call.reject") and call_id:
            self.forget(str(call_id), "")
        self.poke()
        return True

    def webhook_calls(self, raw: bytes) -> WebhookCalls:
        """Nothing to route by: every worker polls the engine and the workers claim each new
        call once, so a webhook (which only hurries the poll) is handled where it lands."""
        return WebhookCalls()
