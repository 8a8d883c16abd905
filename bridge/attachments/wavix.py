"""How a media fork's events are spelled on the wire (:class:`ForkDialect`), and the
Wavix-style dialect (:class:`WavixEvents`, ``"format": "pcm16"`` or ``"pcmu"``); the Twilio
Media Streams dialect is ``twilio.py``'s, everything else about a fork ``forks.py``'s."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any, Protocol

from ..timefmt import iso_utc


def _now() -> str:
    return iso_utc(time.time())


class ForkDialect(Protocol):
    """How one fork's events are spelled on the wire (the fork decides when to send them)."""

    stream_id: str
    codec: str
    """``pcm16`` (s16le 16 kHz) or ``pcmu`` (G.711 µ-law 8 kHz): the media payloads both ways."""

    def connected(self) -> dict[str, Any]: ...

    def start(self, channel: str, stream_type: str) -> dict[str, Any]: ...

    def media(self, track: str, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        """One 20 ms frame of ``track`` (``inbound``/``outbound``), already encoded."""

    def mark(self, name: str, status: str) -> dict[str, Any]:
        """A mark the app sent, now played (or cleared)."""

    def dtmf(self, digit: str) -> dict[str, Any] | None:
        """A key the WhatsApp user pressed (``None``: the dialect does not carry DTMF)."""

    def stop(self) -> dict[str, Any]: ...


class WavixEvents:
    """The Wavix-style dialect: snake_case fields, a sequence number on every event but
    ``connected``, ``media_format`` naming the payload encoding."""

    def __init__(self, call_id: str, codec: str, stream_id: str | None = None) -> None:
        self.stream_id = stream_id or "st_" + secrets.token_hex(8)
        self.call_id = call_id
        self.codec = codec
        self._seq = 0

    def _event(self, event: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        return {
            "event": event,
            "event_time": _now(),
            "call_id": self.call_id,
            "stream_id": self.stream_id,
            "sequence_number": self._seq,
            **fields,
        }

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "event_time": _now()}

    def start(self, channel: str, stream_type: str) -> dict[str, Any]:
        pcmu = self.codec == "pcmu"
        return self._event(
            "start",
            stream_type=stream_type,
            channel=channel,
            media_format={
                "encoding": "audio/x-mulaw" if pcmu else "audio/x-l16",
                "sample_rate": 8000 if pcmu else 16_000,
                "channels": 1,
            },
        )

    def media(self, track: str, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        return self._event(
            "media",
            media={
                "payload": base64.b64encode(payload).decode(),
                "track": track,
                "timestamp": timestamp_ms,
                "chunk": chunk,
            },
        )

    def mark(self, name: str, status: str) -> dict[str, Any]:
        return self._event("mark", mark={"name": name, "status": status})

    def dtmf(self, digit: str) -> dict[str, Any] | None:
        return None  # key presses reach Wavix-style apps as call.dtmf events (SSE, webhooks)

    def stop(self) -> dict[str, Any]:
        return self._event("stop")
