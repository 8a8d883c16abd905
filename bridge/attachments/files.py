"""The files a request names under the bridge's directories, and what the disk did to them:
a path kept inside its directory, and a disk's failure as the answer it gives (a recording, an
audio asset, a file played)."""

from __future__ import annotations

import errno
from pathlib import Path

from ..errors import BadRequest, BridgeError, StorageFailed


def inside(base: Path, relative: str) -> Path:
    """``base / relative`` if it stays inside ``base`` (no ``..``, no absolute escape)."""
    if not relative or "\x00" in relative:
        raise BadRequest("a path is required", code="bad_path")
    root = base.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise BadRequest(f"path {relative[:80]!r} leaves {base}", code="bad_path")
    return path


PATH_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP}
)
"""What a path given in a request can be at fault for itself (too long, through a file)."""


def disk_error(exc: OSError, what: str, path: str | None = None) -> BridgeError:
    """What a file a request reads or writes met on the disk, as an answer: the request's
    ``path`` at fault (:data:`PATH_ERRNOS`), a 400 ``bad_path`` naming it; else the disk's
    own failure (full, read-only), a 503 ``storage_failed``. Never the 500 it once was."""
    reason = exc.strerror or type(exc).__name__
    if path is not None and exc.errno in PATH_ERRNOS:
        return BadRequest(f"path {path[:80]!r} cannot be used: {reason}", code="bad_path")
    return StorageFailed(f"{what}: {reason}")
