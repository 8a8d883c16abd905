"""Meta's recording/transcription wire (``artifacts_wire``) and the fetching policy
(``MetaArtifacts``): options named field by field, webhook items read or counted malformed,
a transcript's words with their channels, a file that never comes given up on with one
WARNING, a bounded number of downloads at once."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from bridge.engines.base import EngineEvent
from bridge.engines.cloudapi.artifacts import MAX_FETCHES, MAX_PENDING, MetaArtifacts
from bridge.engines.cloudapi.artifacts_wire import (
    artifact_events,
    meta_options,
    transcript_words,
)
from bridge.errors import BadRequest, EngineError
from bridge.tasks import TaskSet

from ..support.waits import until


def test_options_become_meta_s_objects_and_bad_ones_name_their_field() -> None:
    assert meta_options({"recording": {"purpose": "qa"}}) == {
        "recording": {"status": "ENABLED", "purpose": "qa", "announcement_language": "en"}
    }
    assert meta_options({}) == {}
    for body, field in [
        ({"transcription": {"purpose": ""}}, "transcription/purpose"),
        ({"recording": {"purpose": "qa", "announcementLanguage": "EN"}}, "announcementLanguage"),
        ({"recording": {"purpose": "qa", "x": 1}}, "recording/x"),
        ({"recording": []}, "recording"),
    ]:
        with pytest.raises(BadRequest) as caught:
            meta_options(body)
        assert field in caught.value.message


def _body(*items: object) -> dict:
    return {"entry": [{"changes": [{"field": "calls", "value": {"calls": list(items)}}]}]}


def test_webhook_items_are_read_or_counted_malformed() -> None:
    audio = {"id": "1", "url": "https://lookaside.example/a", "mime_type": "audio/ogg"}
    good = {
        "id": "wacid.A",
        "event": "call_recording_available",
        "call_recording": {"audio": audio},
    }
    document = {"id": "2", "url": "https://lookaside.example/t", "mime_type": "application/json"}
    text = {
        "id": "wacid.B",
        "event": "call_transcription_available",
        "call_transcript": {"document": document},
    }
    broken = {"id": "wacid.C", "event": "call_recording_available", "call_recording": "x"}
    other = {"id": "wacid.D", "event": "terminate"}
    found, bad = artifact_events(_body(good, text, broken, other))
    assert [(f.kind, f.wacid, f.media_id) for f in found] == [
        ("recording", "wacid.A", "1"),
        ("transcript", "wacid.B", "2"),
    ]
    assert bad == 1


def test_transcript_words_keep_their_channel() -> None:
    document = {
        "transcript": {
            "language": "pt",
            "segments": [
                {"channel": 1, "words": [{"word": "Oi", "start": 0.1, "end": 0.3}]},
                {"channel": 0, "words": [{"word": "Olá", "start": 1.0, "end": 1.4}, "junk"]},
            ],
        }
    }
    language, words = transcript_words(document)
    assert language == "pt"
    assert [(w["word"], w["channel"]) for w in words] == [("Oi", 1), ("Olá", 0)]
    with pytest.raises(ValueError):
        transcript_words({"metadata": {}})


class NeverThere:
    def __init__(self) -> None:
        self.tried_at: list[float] = []

    async def fetch_media(self, media_id: str, url: str, sha256: str = "") -> tuple[bytes, str]:
        self.tried_at.append(time.monotonic())
        raise EngineError("HTTP 404")


async def test_a_file_that_never_comes_is_given_up_with_one_warning(caplog) -> None:
    caplog.set_level(logging.WARNING)
    graph = NeverThere()
    events: asyncio.Queue[EngineEvent] = asyncio.Queue(10)
    tasks = TaskSet("test")
    artifacts = MetaArtifacts(graph, events, tasks, window=0.3, backoff=0.05)  # type: ignore[arg-type]
    audio = {"id": "1", "url": "https://lookaside.example/a"}
    item = {
        "id": "wacid.A",
        "event": "call_recording_available",
        "call_recording": {"audio": audio},
    }
    assert artifacts.heard(_body(item)) == 0
    await until(lambda: artifacts.failed == 1, timeout=5, what="the fetch given up")
    assert artifacts.pending == 0
    # Retried with the backoff doubling (0.05, 0.1: three tries in the 0.3 s window on a quiet
    # host; a stall of the loop can leave room for two, never for one, and no sleep ends early).
    gaps = np.diff(graph.tried_at)
    assert len(graph.tried_at) >= 2, graph.tried_at
    assert all(gap >= 0.05 * 2**i * 0.9 for i, gap in enumerate(gaps)), gaps
    assert events.empty()
    said = [r for r in caplog.records if "could not be fetched" in r.getMessage()]
    assert len(said) == 1
    await tasks.close()


class Slow:
    def __init__(self) -> None:
        self.now = self.most = 0

    async def fetch_media(self, media_id: str, url: str, sha256: str = "") -> tuple[bytes, str]:
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(0.2)
        self.now -= 1
        return b"{}", "application/json"


async def test_downloads_at_once_are_bounded_and_the_others_wait_their_turn() -> None:
    """Meta announces a busy hour's files together: MAX_FETCHES download at once, the rest
    wait (none dropped); only beyond MAX_PENDING waiting is one refused."""
    events: asyncio.Queue[EngineEvent] = asyncio.Queue(100)
    tasks = TaskSet("test")
    graph = Slow()
    artifacts = MetaArtifacts(graph, events, tasks)  # type: ignore[arg-type]
    document = {"id": "2", "url": "https://lookaside.example/t"}
    items = [
        {
            "id": f"wacid.{i}",
            "event": "call_transcription_available",
            "call_transcript": {"document": document},
        }
        for i in range(MAX_FETCHES + 3)
    ]
    artifacts.heard(_body(*items))
    assert artifacts.pending == MAX_FETCHES + 3 and artifacts.failed == 0
    # Two rounds of 0.2 s downloads: waited for, bounded (a loaded host takes longer than 0.4 s).
    await until(lambda: artifacts.pending == 0, what="every download done")
    assert graph.most == MAX_FETCHES
    # "{}" is no transcript document: every one read, found unreadable, nothing announced.
    assert events.empty() and artifacts.failed == MAX_FETCHES + 3
    artifacts.pending = MAX_PENDING  # full: the next announcement is refused, said
    artifacts.heard(_body(items[0]))
    assert artifacts.failed == MAX_FETCHES + 4
    await tasks.close()
