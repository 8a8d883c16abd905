"""What the process needs from the file system before it serves: the browser client shipped as
package data, and a writable data directory. Each failure is one :class:`StartupError` line."""

from __future__ import annotations

import importlib.resources
import tempfile
from pathlib import Path

WEB_FILES = ("index.html", "demo.js", "bridge-client.js")
"""The browser client and demo page, package data of ``bridge`` (``bridge/web/``)."""


class StartupError(RuntimeError):
    """The process cannot serve; the message is one line saying what and where."""


def web_dir() -> Path:
    """The installed ``bridge/web`` directory (served at ``/`` and ``/web/``).

    Found with :mod:`importlib.resources`, so editable and regular installs both work; a
    package installed without its data (or from a zip) is refused rather than served without
    its demo page and client.
    """
    where = importlib.resources.files(__package__ or "bridge").joinpath("web")
    missing = [name for name in WEB_FILES if not where.joinpath(name).is_file()]
    if missing or not isinstance(where, Path):
        raise StartupError(
            f"the browser client is not installed: looked for {', '.join(missing or WEB_FILES)}"
            f" in {where}"
        )
    return where


def prepare_data_dir(data_dir: str) -> Path:
    """Create ``BRIDGE_DATA_DIR`` and the directories the services write to, and prove each is
    writable (a file is created and removed), so a read-only volume fails here, at start."""
    root = Path(data_dir)
    for sub in ("", "assets", "files", "files/calls"):
        path = root / sub
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise StartupError(
                f"BRIDGE_DATA_DIR={data_dir!r}: {path.absolute()} is not a writable directory"
                f" ({why}); point BRIDGE_DATA_DIR at a writable directory or volume"
            ) from None
    return root
