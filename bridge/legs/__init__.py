"""WhatsApp engine adapters behind one ``Engine`` protocol, and the factory that picks one."""

from __future__ import annotations

from ..config import ConfigError, EngineKind, Settings
from .base import (
    Engine,
    EngineEvent,
    EngineEventKind,
    EngineHealth,
    LegStats,
    MediaChannel,
    MediaClosed,
)
from .pump import LegPump
from .sim import SimEngine
from .wadial import WadialEngine
from .zuckzapgo import ZuckZapGoEngine


def create_engine(settings: Settings) -> Engine:
    """The engine selected by ``BRIDGE_ENGINE``."""
    if settings.engine is EngineKind.SIM:
        return SimEngine(settings)
    if settings.engine is EngineKind.ZUCKZAPGO:
        return ZuckZapGoEngine(settings)
    if settings.engine is EngineKind.WADIAL:
        return WadialEngine(settings)
    raise ConfigError(f"BRIDGE_ENGINE={settings.engine}: unknown engine")


__all__ = [
    "Engine",
    "EngineEvent",
    "EngineEventKind",
    "EngineHealth",
    "LegPump",
    "LegStats",
    "MediaChannel",
    "MediaClosed",
    "SimEngine",
    "WadialEngine",
    "ZuckZapGoEngine",
    "create_engine",
]
