"""A live call as one worker hands it to another: the body of ``POST /call/handover``, and
what a call's directory record keeps for a survivor to adopt it (``handover.py`` carries it)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest
from .model import Call


@dataclass(frozen=True)
class MovedCall:
    """A live call as one worker hands it to another (the body of ``POST /call/handover``)."""

    snapshot: dict[str, Any]
    engine_call_id: str
    reason: str
    """``drain`` (the old worker is shutting down) or ``crash`` (it died)."""
    moved_at: float = field(default_factory=time.time)
    """Wall-clock time the move began (the audio gap is measured from it)."""
    status_callback: str | None = None
    recording: dict[str, Any] | None = None
    """The recording to continue into its next segment (``RecordingService.export``)."""
    forks: list[dict[str, Any]] = field(default_factory=list)
    """The media forks to open again, same stream ids (``Fork.export``)."""
    agents: list[dict[str, Any]] = field(default_factory=list)
    """The model agents to open again, same ids (``Agent.export``)."""
    music: str | None = None
    """The audio asset a held call's music loops (``Hold.music_asset``), played on here."""
    playbacks: list[dict[str, Any]] = field(default_factory=list)
    """The audio assets playing (``POST /call/play``, not the hold's music) to play on here,
    same ids, from where they were (``Playback.export``)."""
    token: str = ""
    """The old owner's offer of the call to this one worker (``Directory.offer_move``): the
    new owner takes the call in the directory only while that offer stands (empty: a crash
    adoption, which needs none)."""

    @property
    def call_id(self) -> str:
        return str(self.snapshot["callID"])

    @property
    def previous_owner(self) -> str:
        return str(self.snapshot.get("owner") or "")

    def to_json(self) -> dict[str, Any]:
        return {
            "call": self.snapshot,
            "engineCallID": self.engine_call_id,
            "reason": self.reason,
            "movedAt": self.moved_at,
            "statusCallback": self.status_callback,
            "recording": self.recording,
            "forks": self.forks,
            "agents": self.agents,
            "music": self.music,
            "playbacks": self.playbacks,
            "token": self.token,
        }

    @classmethod
    def from_json(cls, body: Any) -> MovedCall:
        try:
            snap = body["call"]
            if not isinstance(snap, dict) or not isinstance(snap.get("callID"), str):
                raise TypeError("call")
            Call.from_snapshot(snap, str(body["engineCallID"]))  # every field it needs is there
            recording = body.get("recording")
            forks = body.get("forks") or []
            if not isinstance(forks, list) or not all(isinstance(f, dict) for f in forks):
                raise TypeError("forks")
            agents = body.get("agents") or []
            if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
                raise TypeError("agents")
            music = body.get("music")
            if music is not None and not isinstance(music, str):
                raise TypeError("music")
            playbacks = body.get("playbacks") or []
            if not isinstance(playbacks, list) or not all(isinstance(p, dict) for p in playbacks):
                raise TypeError("playbacks")
            return cls(
                snapshot=snap,
                engine_call_id=str(body["engineCallID"]),
                reason=str(body.get("reason") or "drain"),
                moved_at=float(body.get("movedAt") or time.time()),
                status_callback=body.get("statusCallback"),
                recording=recording if isinstance(recording, dict) else None,
                forks=forks,
                agents=agents,
                music=music,
                playbacks=playbacks,
                token=str(body.get("token") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"not a moved call: {exc}") from None
