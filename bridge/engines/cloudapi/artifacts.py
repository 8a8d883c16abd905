"""``MetaArtifacts``: Meta's own recordings and transcripts of one number's calls.

What a call asks for waits here, keyed by the user dialled (a dial has no wacid yet) or the
wacid (an answer), until the ``connect`` or ``accept`` action carries it. The files the
webhooks announce are fetched at once, in an owned task each, retried with backoff while the
media URL still lives (about five minutes), and go out as ``ARTIFACT`` engine events
(``recording``, ``transcript`` or ``voicemail``) for the call layer to store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ...errors import EngineError
from ...tasks import TaskSet
from ..base import EngineEvent, EngineEventKind, Remembered, emit
from .artifacts_wire import ArtifactWebhook, artifact_events, meta_options, transcript_words
from .graph import GraphClient

log = logging.getLogger(__name__)

FETCH_WINDOW = 290.0
"""Seconds a download is retried after its webhook (Meta's media URL lives five minutes)."""
MAX_ASKED = 1000
"""Calls whose options wait for their connect/accept (the oldest are dropped beyond it)."""
MAX_FETCHES = 32
"""Downloads at once; the others wait their turn (Meta announces a busy hour's together)."""
MAX_PENDING = 1000
"""Announcements waiting or downloading; beyond it one is dropped (logged once each)."""


class MetaArtifacts:
    """Asks Meta for a call's recording/transcription and fetches what it delivers."""

    def __init__(
        self,
        graph: GraphClient,
        events: asyncio.Queue[EngineEvent],
        tasks: TaskSet,
        *,
        window: float = FETCH_WINDOW,
        backoff: float = 1.0,
    ) -> None:
        self.graph = graph
        self.events = events
        self.tasks = tasks
        self.window = window
        self.backoff = backoff
        self.asked = Remembered(MAX_ASKED)
        self.pending = 0
        self._downloads = asyncio.Semaphore(MAX_FETCHES)
        self.failed = 0

    def ask(self, key: str, options: dict[str, Any]) -> None:
        """``ArtifactsPort.ask`` (``engines/base.py``): as Meta's objects (:func:`meta_options`)."""
        self.asked.add(key, meta_options(options))

    def fields(self, key: str) -> dict[str, Any]:
        """The options waiting for ``key``, taken (an empty dict when none)."""
        return self.asked.pop(key, {})

    def heard(self, body: dict[str, Any]) -> int:
        """Start fetching what a webhook body announces; returns how many items were
        malformed."""
        found, bad = artifact_events(body)
        for ev in found:
            if self.pending >= MAX_PENDING:
                log.warning(
                    "Meta's %s of call %s not fetched: %d announcements already wait",
                    ev.kind,
                    ev.wacid,
                    MAX_PENDING,
                )
                self.failed += 1
                continue
            self.pending += 1
            self.tasks.spawn(self._fetch(ev), f"artifact:{ev.kind}:{ev.wacid[:40]}")
        return bad

    async def _fetch(self, ev: ArtifactWebhook) -> None:
        started = time.monotonic()
        deadline = started + self.window
        delay = self.backoff
        url = ev.url
        try:
            while True:
                try:
                    async with self._downloads:
                        content, mime = await self.graph.fetch_media(ev.media_id, url, ev.sha256)
                    break
                except EngineError as exc:
                    if time.monotonic() + delay > deadline:
                        self.failed += 1
                        log.warning(
                            "Meta's %s of call %s could not be fetched: %s", ev.kind, ev.wacid, exc
                        )
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    if ev.media_id:  # the URL may have expired: ask Meta's Media API anew
                        url = ""
        finally:
            self.pending -= 1
        data: dict[str, Any] = {"artifact": ev.kind, "mediaID": ev.media_id}
        if ev.kind == "transcript":
            try:
                data["language"], data["words"] = transcript_words(json.loads(content))
            except ValueError as exc:
                self.failed += 1
                log.warning("Meta's transcript of call %s is unreadable: %s", ev.wacid, exc)
                return
        else:
            data["mimeType"] = ev.mime_type or mime
            data["content"] = content
        self.graph.stats.artifact_seconds.observe(time.monotonic() - started)
        emit(self.events, EngineEvent(EngineEventKind.ARTIFACT, ev.wacid, data=data))
