"""Meta's own call recordings and transcripts, as they travel (Meta Cloud API Calling: Call
recording, Call transcription; docs/engines/cloudapi.md, *Meta's recordings and transcripts*).

Asked for per call on the ``connect`` or ``accept`` action (:func:`meta_options` reads our
API's camelCase). Delivered after the call as ``calls`` webhook items
``call_recording_available`` / ``call_transcription_available``, each a media asset whose URL
lives a few minutes (:func:`artifact_events`); a transcript's segments are channel 0 the
business, 1 the user (:func:`transcript_words`).

Meta's voicemail arrives as a ``messages`` item of ``type`` ``audio`` whose ``id`` (or
``context.id``) is the call's wacid — the issue's description: the public references this
project works from name no other field (:func:`voicemail_item`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...errors import BadRequest
from .webhook import ARTIFACT_EVENTS, changes, text

OPTIONS = ("recording", "transcription")
PURPOSE_MAX = 250  # Meta's limit on the spoken purpose
LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
"""A locale code as Meta takes ``announcement_language`` (``en``, ``en_US``, ``pt``…)."""
WACID = "wacid."
"""How a call id starts (a message's own id starts ``wamid.``): an audio message carrying one
is the voicemail of that call."""


def meta_options(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Meta's ``recording``/``transcription`` objects for the API body's camelCase ones
    (``{}`` when the body asks for neither); 400 ``invalid_field`` naming the bad field."""
    out: dict[str, dict[str, str]] = {}
    for name in OPTIONS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _invalid(name, "must be an object")
        unknown = sorted(set(value) - {"purpose", "announcementLanguage"})
        if unknown:
            raise _invalid(f"{name}/{unknown[0][:40]}", "is unknown")
        purpose, language = value.get("purpose"), value.get("announcementLanguage", "en")
        if not isinstance(purpose, str) or not purpose.strip() or len(purpose) > PURPOSE_MAX:
            why = f"must be the purpose spoken to both sides (1-{PURPOSE_MAX} characters)"
            raise _invalid(f"{name}/purpose", why)
        if not isinstance(language, str) or not LANGUAGE.match(language):
            why = "must be a locale code such as 'en' or 'pt_BR'"
            raise _invalid(f"{name}/announcementLanguage", why)
        out[name] = {"status": "ENABLED", "purpose": purpose, "announcement_language": language}
    return out


def _invalid(field: str, why: str) -> BadRequest:
    return BadRequest(f"field '{field}' {why}", code="invalid_field")


@dataclass(frozen=True)
class ArtifactWebhook:
    """One ``call_recording_available`` or ``call_transcription_available`` item."""

    kind: str  # "recording", "transcript" or "voicemail"
    wacid: str
    media_id: str
    url: str
    mime_type: str
    sha256: str


def artifact_item(item: dict[str, Any]) -> ArtifactWebhook | None:
    """The artifact a ``calls`` item announces (``None``: malformed)."""
    kind = ARTIFACT_EVENTS.get(text(item.get("event")))
    holder = item.get("call_recording" if kind == "recording" else "call_transcript")
    media = None
    if isinstance(holder, dict):
        media = holder.get("audio" if kind == "recording" else "document")
    wacid = text(item.get("id"))
    if kind is None or not wacid or not isinstance(media, dict):
        return None
    media_id, url = text(media.get("id")), text(media.get("url"))
    if not media_id and not url.startswith(("https://", "http://")):
        return None
    return ArtifactWebhook(
        kind, wacid, media_id, url, text(media.get("mime_type")), text(media.get("sha256"))
    )


def voicemail_item(item: dict[str, Any]) -> ArtifactWebhook | None:
    """The voicemail an audio ``messages`` item is (``None``: an ordinary message)."""
    audio = item.get("audio")
    if item.get("type") != "audio" or not isinstance(audio, dict):
        return None
    context = item.get("context")
    ids = [text(item.get("id")), text(context.get("id")) if isinstance(context, dict) else ""]
    wacid = next((i for i in ids if i.startswith(WACID)), "")
    media_id, url = text(audio.get("id")), text(audio.get("url"))
    if not wacid or not (media_id or url.startswith(("https://", "http://"))):
        return None
    mime = text(audio.get("mime_type")).split(";")[0].strip()
    return ArtifactWebhook("voicemail", wacid, media_id, url, mime, text(audio.get("sha256")))


def _voicemails(value: Any) -> list[ArtifactWebhook]:
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list):
        return []
    found = [voicemail_item(m) for m in messages if isinstance(m, dict)]
    return [v for v in found if v is not None]


def artifact_events(body: dict[str, Any]) -> tuple[list[ArtifactWebhook], int]:
    """Every artifact item of a webhook body (voicemails from its ``messages`` changes), and
    how many were malformed."""
    out: list[ArtifactWebhook] = []
    bad = 0
    for field, value in changes(body, "messages", "calls"):
        if field == "messages":
            out.extend(_voicemails(value))
            continue
        calls = value.get("calls") if isinstance(value, dict) else None
        for item in calls if isinstance(calls, list) else []:
            if not isinstance(item, dict) or text(item.get("event")) not in ARTIFACT_EVENTS:
                continue
            found = artifact_item(item)
            if found is None:
                bad += 1
            else:
                out.append(found)
    return out, bad


def transcript_words(document: Any) -> tuple[str, list[dict[str, Any]]]:
    """The detected language and every word of a transcript document, in order, each
    ``{word, start, end, channel}`` (channel 0 the business, 1 the customer)."""
    transcript = document.get("transcript") if isinstance(document, dict) else None
    if not isinstance(transcript, dict):
        raise ValueError("a transcript document has a 'transcript' object")
    words: list[dict[str, Any]] = []
    segments = transcript.get("segments")
    for segment in segments if isinstance(segments, list) else []:
        if not isinstance(segment, dict):
            continue
        channel = segment.get("channel")
        for word in segment.get("words") or []:
            if isinstance(word, dict) and isinstance(word.get("word"), str):
                words.append(
                    {
                        "word": word["word"],
                        "start": word.get("start"),
                        "end": word.get("end"),
                        "channel": channel if channel in (0, 1) else None,
                    }
                )
    return text(transcript.get("language")), words
