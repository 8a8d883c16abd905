"""WhatsApp engine adapters behind one ``Engine`` protocol, and the factory that picks one."""

from __future__ import annotations

from ..config import ConfigError, EngineKind, Settings
from .base import Engine, EngineEvent, EngineEventKind, EngineHealth, MediaChannel, MediaClosed
from .pump import LegPump
from .sim import SimEngine


def create_engine(settings: Settings) -> Engine:
    """The engine selected by ``BRIDGE_ENGINE``."""
    if settings.engine is EngineKind.SIM:
        return SimEngine(settings)
    raise ConfigError(f"BRIDGE_ENGINE={settings.engine}: this engine is not available yet")


__all__ = [
    "Engine",
    "EngineEvent",
    "EngineEventKind",
    "EngineHealth",
    "LegPump",
    "MediaChannel",
    "MediaClosed",
    "SimEngine",
    "create_engine",
]
