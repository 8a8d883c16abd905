"""A finished recording file's metadata, as the API, the events and the index carry it, and
its JSON sidecar beside the WAV (the index after a restart, and on every worker sharing
``BRIDGE_DATA_DIR``), written as a segment finishes (:func:`finished`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio import SAMPLE_RATE
from ..timefmt import iso_utc, parse_iso_utc
from .wav import HEADER_BYTES


@dataclass
class Recording:
    """One recording file (a kind of one segment of a call's recording)."""

    id: str
    call_id: str
    kind: str
    path: Path
    relative: str
    duration_ms: int
    size_bytes: int
    created_at: float
    expires_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "recordingId": self.id,
            "callID": self.call_id,
            "kind": self.kind,
            "path": self.relative,
            "durationMs": self.duration_ms,
            "sizeBytes": self.size_bytes,
            "createdAt": iso_utc(self.created_at),
            "expiresAt": iso_utc(self.expires_at),
        }

    @classmethod
    def from_sidecar(cls, meta: Path) -> Recording:
        """The recording a sidecar describes (its WAV beside it); ``ValueError``,
        ``KeyError`` or ``OSError`` for one that cannot be read."""
        d = json.loads(meta.read_text())
        return cls(
            d["recordingId"],
            d["callID"],
            d["kind"],
            meta.with_suffix(".wav"),
            d["path"],
            d["durationMs"],
            d["sizeBytes"],
            parse_iso_utc(d["createdAt"]),
            parse_iso_utc(d["expiresAt"]),
        )


def finished(
    call_id: str, files: list[tuple[str, Path]], root: Path, created_at: float, retention_s: float
) -> list[Recording]:
    """The recordings of one finished segment (``files``: each kind and its whole WAV under
    ``root``), each with its sidecar written beside it (run off the event loop)."""
    out = []
    for kind, path in files:
        size = path.stat().st_size
        rec = Recording(
            id="rec_" + uuid.uuid4().hex,
            call_id=call_id,
            kind=kind,
            path=path,
            relative=str(path.relative_to(root)),
            duration_ms=(size - HEADER_BYTES) // 2 * 1000 // SAMPLE_RATE,
            size_bytes=size,
            created_at=created_at,
            expires_at=created_at + retention_s,
        )
        path.with_suffix(".json").write_text(json.dumps(rec.as_json()))
        out.append(rec)
    return out
