"""The Twilio Media Streams dialect of a media fork (``"format": "twilio"``).

A voice agent written for Twilio (pipecat's ``TwilioFrameSerializer``, or any Media Streams
WebSocket server) takes a WhatsApp call unchanged: the bridge speaks the protocol as Twilio's
Media Streams docs describe it — the same event names, field names and field order:

* to the app: ``connected`` (protocol ``Call``, version ``1.0.0``), ``start`` (``streamSid``,
  ``accountSid``, ``callSid``, ``tracks``, ``customParameters``, ``mediaFormat``), ``media``
  (``track``, ``chunk``, ``timestamp``, ``payload``: base64 G.711 µ-law, 8 kHz mono, 20 ms),
  ``mark`` (a mark the app sent, once the audio queued before it has played, or cleared),
  ``dtmf`` (``track`` ``inbound_track``, ``digit``) and ``stop``. ``sequenceNumber``,
  ``chunk`` and ``timestamp`` are strings, as Twilio sends them.
* from the app (two-way): ``media`` (µ-law payload played into the call), ``mark``,
  ``clear`` — parsed by the fork, the same shapes as the Wavix-style dialect.

What Twilio has and a WhatsApp call does not: ``callSid`` is the bridge's call id, and
``accountSid`` a placeholder of the right shape (``AC`` and 32 zeros); there is no Twilio REST
API to hang up through — the app calls ``POST /call/hangup`` and gets a ``stop``.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from ..errors import BadRequest

ACCOUNT_SID = "AC" + "0" * 32
"""Twilio's ``accountSid`` is ``AC`` and 32 hex digits; a WhatsApp call has no account."""
MAX_PARAMETERS = 32
"""``customParameters`` one fork may carry (Twilio's ``<Parameter>`` nouns, name and value)."""
MAX_PARAMETER_CHARS = 500


def custom_parameters(value: Any) -> dict[str, str]:
    """Validate a fork request's ``customParameters``: an object of short strings."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_PARAMETERS:
        raise BadRequest(f"customParameters must be an object of at most {MAX_PARAMETERS} entries")
    for name, text in value.items():
        if not isinstance(text, str) or len(name) > 100 or len(text) > MAX_PARAMETER_CHARS:
            raise BadRequest(
                f"customParameters values must be strings of at most {MAX_PARAMETER_CHARS} "
                "characters (names at most 100)"
            )
    return dict(value)


class TwilioEvents:
    """Twilio Media Streams messages for one stream (see the module docstring)."""

    codec = "pcmu"

    def __init__(
        self, call_id: str, parameters: dict[str, str], stream_id: str | None = None
    ) -> None:
        # A Stream SID: MZ and 32 hex digits (a stream resumed by another worker keeps its own).
        self.stream_id = stream_id or "MZ" + secrets.token_hex(16)
        self.call_id = call_id
        self.parameters = parameters
        self._seq = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self, channel: str, stream_type: str) -> dict[str, Any]:
        tracks = ["inbound", "outbound"] if channel == "both" else [channel]
        return {
            "event": "start",
            "sequenceNumber": self._next(),
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": self.stream_id,
                "callSid": self.call_id,
                "tracks": tracks,
                "customParameters": self.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_id,
        }

    def media(self, track: str, chunk: int, timestamp_ms: int, payload: bytes) -> dict[str, Any]:
        return {
            "event": "media",
            "sequenceNumber": self._next(),
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": self.stream_id,
        }

    def mark(self, name: str, status: str) -> dict[str, Any]:
        # Twilio answers a mark when its audio has played and, after a ``clear``, at once:
        # either way the same message (it has no status field).
        return {
            "event": "mark",
            "sequenceNumber": self._next(),
            "streamSid": self.stream_id,
            "mark": {"name": name},
        }

    def dtmf(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "streamSid": self.stream_id,
            "sequenceNumber": self._next(),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def stop(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": self._next(),
            "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_id},
            "streamSid": self.stream_id,
        }
