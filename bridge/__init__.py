"""WebRTC media bridge for WhatsApp calls.

Importing the package is cheap (``import bridge.audio.pcm`` loads no aiohttp or aiortc);
``create_app`` and the settings are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app", "load_settings"]

if TYPE_CHECKING:
    from .app import create_app
    from .config import Settings, load_settings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("Settings", "load_settings"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
