"""What the process needs from the file system before it serves: the browser client shipped as
package data, a writable data directory, and the files settings name in the media directory.
Each failure is one :class:`StartupError` line."""

from __future__ import annotations

import importlib.resources
import tempfile
from importlib.resources.abc import Traversable
from pathlib import Path

from .attachments.files import inside
from .errors import BridgeError

WEB_FILES = ("index.html", "demo.js", "bridge-client.js")
"""The browser client and demo page: ``web/`` at the top of the repository, installed as the
package ``bridge.web`` (pyproject.toml maps it)."""


class StartupError(RuntimeError):
    """The process cannot serve; the message is one line saying what and where."""


def web_dir() -> Path:
    """The browser client's directory (served at ``/`` and ``/web/``).

    In a source checkout (``python -m bridge`` from the repository root, or an editable
    install) it is ``web/`` beside the ``bridge/`` that is running, so the page always matches
    the code; an installed wheel carries it as the package ``bridge.web``, found with
    :mod:`importlib.resources`. A package installed without its data (or from a zip) is refused
    rather than served without its demo page and client.
    """
    checkout = Path(__file__).resolve().parent.parent
    where: Traversable | None = None
    if (checkout / "pyproject.toml").is_file() and (checkout / "web").is_dir():
        where = checkout / "web"
    else:
        try:
            where = importlib.resources.files("bridge.web")
        except ModuleNotFoundError:
            pass
    missing = [n for n in WEB_FILES if where is None or not where.joinpath(n).is_file()]
    if missing or not isinstance(where, Path):
        raise StartupError(
            f"the browser client is not installed: looked for {', '.join(missing or WEB_FILES)}"
            f" in {where or Path(__file__).resolve().parent / 'web'}"
        )
    return where


def check_media_file(setting: str, name: str, media_dir: str) -> None:
    """The file ``name`` that ``setting`` names is in ``BRIDGE_MEDIA_DIR`` (read the way
    ``/call/play`` reads its ``file``), so a missing one fails here, at start, and not when it
    is first played."""
    try:
        found = inside(Path(media_dir), name).is_file()
        why = "no such file in BRIDGE_MEDIA_DIR"
    except BridgeError as exc:
        found, why = False, str(exc)
    if not found:
        raise StartupError(f"{setting}={name!r}: {why} ({Path(media_dir).absolute()})")


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
