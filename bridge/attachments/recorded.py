"""A finished recording file's metadata, as the API, the events and the index carry it, and
its JSON sidecar beside the WAV (the index after a restart, and on every worker sharing
``BRIDGE_DATA_DIR``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..timefmt import iso_utc, parse_iso_utc


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
