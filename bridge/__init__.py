"""WebRTC media bridge for WhatsApp calls."""

from .app import create_app
from .config import Settings, load_settings

__version__ = "0.1.0"

__all__ = ["Settings", "__version__", "create_app", "load_settings"]
