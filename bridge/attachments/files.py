"""The files a request names under the bridge's directories, and what the disk did to them:
a path kept inside its directory, a disk's failure as the answer it gives (a recording, an
audio asset, a file played), and the retention sweeps' deletions (:class:`ExpiredFiles`)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from ..errors import BadRequest, BridgeError, StorageFailed
from ..logs import Repeats


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


class ExpiredFiles:
    """A retention sweep's deletions (recordings, call records): an item whose files the disk
    will not delete stays for the next sweep, said once at WARNING while it lasts (not at every
    sweep: :class:`~bridge.logs.Repeats`), and its deletion after that at INFO with the tries
    it took; a failure that comes back after that is said again."""

    def __init__(self, log: logging.Logger, size: int = 256) -> None:
        """``log``: the sweeping store's; ``size``: the undeleted items remembered."""
        self._log = log
        self._undeleted = Repeats(size=size)

    def delete(self, key: str, what: str, *paths: Path) -> bool:
        """Delete ``paths`` (``what``, named ``key``: an item of the store); whether they went
        (a file already gone counts as deleted: another worker swept it)."""
        try:
            for path in paths:
                path.unlink(missing_ok=True)
        except OSError as exc:
            if self._undeleted.seen(key) == 1:
                self._log.warning(
                    "retention: %s not deleted (tried again at each sweep): %s", what, exc
                )
            return False
        if tries := self._undeleted.ended(key):
            self._log.info("retention: %s deleted after %d tries", what, tries + 1)
        return True
