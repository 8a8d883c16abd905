"""The audio-asset store: uploaded audio under ``BRIDGE_DATA_DIR/assets``, one file and one
JSON record each (playbacks and hold music name an asset by its id)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio.decode import AudioInfo, UndecodableAudio, measure_duration_ms, probe
from ..disk import on_disk
from ..errors import BadRequest, NotFound
from ..logs import Repeats
from ..timefmt import iso_utc, parse_iso_utc
from .files import disk_error

log = logging.getLogger(__name__)


MAX_ID = 64
"""The longest asset id looked for ("as_" and 32 hex digits are made): a longer one, past
what a file name may be, was asked of the disk, and its error was a 500."""


@dataclass(frozen=True)
class Asset:
    id: str
    path: Path
    duration_ms: int
    format: str
    name: str
    created_at: float
    owner: str = ""
    """The tenant that uploaded it (empty: the service's own, playable on every call)."""

    def visible_to(self, tenant_id: str | None, *, shared: bool = False) -> bool:
        """Whether a tenant sees it (``None``: the service sees all); ``shared``: the
        service's own assets count too (hold music a platform gives every tenant)."""
        return tenant_id is None or self.owner == tenant_id or (shared and not self.owner)

    def as_json(self) -> dict[str, Any]:
        return {
            "assetId": self.id,
            "durationMs": self.duration_ms,
            "format": self.format,
            "name": self.name,
            "createdAt": iso_utc(self.created_at),
        }


class AssetStore:
    """Uploaded audio under ``BRIDGE_DATA_DIR/assets`` (file + JSON metadata each)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._unreadable = Repeats()  # a record that cannot be read: said once

    def add(self, data: bytes, name: str, owner: str = "") -> Asset:
        info = self._check(data)
        asset_id = "as_" + uuid.uuid4().hex
        path = self.root / f"{asset_id}.audio"
        meta_path = self.root / f"{asset_id}.json"
        try:
            path.write_bytes(data)
            duration = (
                info.duration_ms if info.duration_ms is not None else measure_duration_ms(path)
            )
            asset = Asset(asset_id, path, duration, info.format, name[:200], time.time(), owner)
            # Whole or not at all (a listing, here or on another worker, reads it meanwhile).
            partial = meta_path.with_suffix(".partial")
            partial.write_text(json.dumps({**asset.as_json(), "owner": owner}))
            partial.replace(meta_path)
        except OSError as exc:  # a full disk: no half-written asset left behind
            path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise disk_error(exc, "the audio asset cannot be stored") from None
        except UndecodableAudio as exc:  # its start decodes, not the rest (a stream cut short)
            path.unlink(missing_ok=True)
            raise _undecodable(exc) from None
        return asset

    @staticmethod
    def _check(data: bytes) -> AudioInfo:
        try:
            return probe(data)
        except UndecodableAudio as exc:
            raise _undecodable(exc) from None

    def get(self, asset_id: str) -> Asset:
        """The asset's record, read from the disk (in a thread: :meth:`find` on the loop)."""
        if not asset_id.startswith("as_") or not asset_id[3:].isalnum() or len(asset_id) > MAX_ID:
            raise NotFound(f"no audio asset {asset_id[:80]!r}")
        meta_path = self.root / f"{asset_id}.json"
        if not meta_path.is_file():
            raise NotFound(f"no audio asset {asset_id[:80]!r}")
        try:
            meta = json.loads(meta_path.read_text())
            created = parse_iso_utc(meta["createdAt"])
            asset = Asset(
                asset_id,
                self.root / f"{asset_id}.audio",
                int(meta["durationMs"]),
                str(meta["format"]),
                str(meta.get("name", "")),
                created,
                str(meta.get("owner") or ""),
            )
        except FileNotFoundError:  # deleted meanwhile
            raise NotFound(f"no audio asset {asset_id[:80]!r}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Cut short by a crash, or not ours: that asset is gone, the others stay.
            if self._unreadable.seen(asset_id) == 1:
                log.warning("audio asset %s: its record cannot be read (%s)", asset_id, exc)
            raise NotFound(f"no audio asset {asset_id[:80]!r}") from None
        return asset

    async def find(
        self, asset_id: str, tenant_id: str | None = None, *, shared: bool = True
    ) -> Asset:
        """The asset, its record read off the event loop (a volume that stalls holds this
        caller, never the worker's calls): the one way code on the loop reads an asset.
        404 when there is none, or when ``tenant_id`` does not see it (``Asset.visible_to``:
        another tenant's is not found, never forbidden; ``None``: the service sees all)."""
        asset = await on_disk(self.get, asset_id)
        if not asset.visible_to(tenant_id, shared=shared):
            raise NotFound(f"no audio asset {asset_id[:80]!r}")
        return asset

    def list(self) -> list[Asset]:
        assets = []
        for path in self.root.glob("as_*.json"):
            try:
                assets.append(self.get(path.stem))
            except NotFound:  # unreadable (said once), or deleted meanwhile
                continue
        return sorted(assets, key=lambda a: a.created_at)

    def delete(self, asset_id: str) -> None:
        asset = self.get(asset_id)
        asset.path.unlink(missing_ok=True)
        (self.root / f"{asset_id}.json").unlink(missing_ok=True)


def _undecodable(exc: UndecodableAudio) -> BadRequest:
    return BadRequest(
        f"the upload is not audio the bridge can decode: {exc}", code="undecodable_audio"
    )
