"""The fake Meta's own recordings and transcripts of calls (Meta Cloud API Calling: Call
recording, Call transcription), strict as Meta is.

* ``connect``/``accept`` may carry ``recording`` and ``transcription`` objects: ``status``
  ``ENABLED`` or ``DISABLED``; when enabled, ``purpose`` (at most 250 characters) and
  ``announcement_language`` are required, else a request error (100).
* After the call, :meth:`MetaMedia.recording_event` / :meth:`transcription_event` make the
  ``calls`` webhook items ``call_recording_available`` (``call_recording.audio``) and
  ``call_transcription_available`` (``call_transcript.document``), each a media asset with
  ``id``, base64 ``sha256``, ``mime_type`` and a short-lived ``url``: the file is served at it
  to the number's bearer token until it expires (``ttl``; Meta's lives minutes), and
  ``fail_next`` downloads answer 500 first (a retry must follow). ``GET /{MEDIA_ID}`` (the
  Media API) gives the asset a fresh URL.
* :meth:`MetaMedia.voicemail_event`: Meta's voicemail of a rejected or unanswered call, a
  ``messages`` webhook value with an ``audio`` message (``audio {id, mime_type, sha256,
  voice}``, no URL: the Media API names it) whose ``id`` is the call's wacid (issue 50's
  description; send it with ``envelope(…, field="messages")``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PURPOSE_MAX = 250


@dataclass
class MediaAsset:
    content: bytes
    mime_type: str
    expires: float


class MetaMedia:
    """Recording/transcription requests seen, and the media assets served."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self.assets: dict[str, MediaAsset] = {}
        self.asked: dict[str, dict[str, Any]] = {}
        """wacid → ``{"recording": …, "transcription": …}`` as the action carried them."""
        self.downloads = 0
        self.lookups = 0
        self.fail_next = 0
        self.base_url = ""
        self.tokens: set[str] = set()

    def refusal(self, body: dict[str, Any]) -> str | None:
        """Meta's request error for a malformed ``recording``/``transcription``, or None."""
        for name in ("recording", "transcription"):
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, dict) or value.get("status") not in ("ENABLED", "DISABLED"):
                return f"(#100) Param {name}[status] must be one of {{ENABLED, DISABLED}}"
            if value["status"] == "ENABLED":
                purpose = value.get("purpose")
                if not isinstance(purpose, str) or not purpose or len(purpose) > PURPOSE_MAX:
                    return f"(#100) Param {name}[purpose] is required (at most 250 characters)"
                if not isinstance(value.get("announcement_language"), str):
                    return f"(#100) Param {name}[announcement_language] is required"
        return None

    def heard(self, wacid: str, body: dict[str, Any]) -> None:
        asked = {k: body[k] for k in ("recording", "transcription") if k in body}
        if asked:
            self.asked[wacid] = asked

    def _asset(self, content: bytes, mime: str) -> dict[str, str]:
        media_id = str(uuid.uuid4().int)[:16]
        self.assets[media_id] = MediaAsset(content, mime, time.monotonic() + self.ttl)
        return {
            "id": media_id,
            "sha256": base64.b64encode(hashlib.sha256(content).digest()).decode(),
            "mime_type": mime,
            "url": f"{self.base_url}/whatsapp_business/attachments/?mid={media_id}",
        }

    def recording_event(self, wacid: str, user: str, audio: bytes, mime: str) -> dict:
        item = {
            "id": wacid,
            "from": user,
            "timestamp": str(int(time.time())),
            "event": "call_recording_available",
            "call_recording": {"audio": self._asset(audio, mime)},
        }
        return {"calls": [item]}

    def transcription_event(self, wacid: str, user: str, document: dict[str, Any]) -> dict:
        content = json.dumps(document).encode()
        item = {
            "id": wacid,
            "from": user,
            "timestamp": str(int(time.time())),
            "event": "call_transcription_available",
            "call_transcript": {"document": self._asset(content, "application/json")},
        }
        return {"calls": [item]}

    def voicemail_event(self, wacid: str, user: str, audio: bytes) -> dict:
        asset = self._asset(audio, "audio/ogg; codecs=opus")
        del asset["url"]
        message = {
            "from": user,
            "id": wacid,
            "timestamp": str(int(time.time())),
            "type": "audio",
            "audio": {**asset, "voice": True},
        }
        contacts = [{"profile": {"name": "Caller"}, "wa_id": user}]
        return {"contacts": contacts, "messages": [message]}

    def node(self, request: web.Request) -> web.Response:
        """``GET /{MEDIA_ID}`` (Meta's Media API): the asset with a fresh short-lived URL."""
        if request.headers.get("Authorization", "") not in {f"Bearer {t}" for t in self.tokens}:
            return web.json_response({"error": {"code": 190, "message": "bad token"}}, status=401)
        media_id = request.match_info["pnid"]
        asset = self.assets[media_id]
        asset.expires = time.monotonic() + self.ttl
        self.lookups += 1
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "id": media_id,
                "url": f"{self.base_url}/whatsapp_business/attachments/?mid={media_id}",
                "mime_type": asset.mime_type,
                "sha256": base64.b64encode(hashlib.sha256(asset.content).digest()).decode(),
                "file_size": len(asset.content),
            }
        )

    async def download(self, request: web.Request) -> web.Response:
        """``GET`` a media URL with the bearer token (Meta: an authenticated GET)."""
        if request.headers.get("Authorization", "") not in {f"Bearer {t}" for t in self.tokens}:
            return web.json_response({"error": {"code": 190, "message": "bad token"}}, status=401)
        self.downloads += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="try again")
        asset = self.assets.get(request.query.get("mid", ""))
        if asset is None or time.monotonic() > asset.expires:
            return web.Response(status=404, text="URL expired")
        return web.Response(body=asset.content, content_type=asset.mime_type)
