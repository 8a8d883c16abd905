"""The WhatsApp side of a call: engine adapters behind one ``Engine`` protocol (``base``), the
pump that moves a call's audio between its bus and its engine media (``pump``), and the
factory that picks the configured engine."""

from __future__ import annotations

import aiohttp

from ..config import ConfigError, EngineKind, EngineSettings, IceSettings, SimSettings
from .base import (
    DtmfLeg,
    Engine,
    EngineEvent,
    EngineEventKind,
    EngineHealth,
    EngineStats,
    MediaChannel,
    MediaClosed,
    RemoteCall,
    WebRTCLeg,
)
from .pump import EnginePump
from .sim import SimEngine
from .wadial import WadialEngine
from .zuckzapgo import ZuckZapGoEngine


def create_engine(
    settings: EngineSettings,
    sim: SimSettings,
    http: aiohttp.ClientSession | None = None,
    ice: IceSettings | None = None,
) -> Engine:
    """The engine selected by ``BRIDGE_ENGINE`` (remote ones use ``http``, the app's client;
    cloudapi's WhatsApp-side peer connections use ``ice``)."""
    if settings.engine is EngineKind.SIM:
        return SimEngine(sim)
    if settings.engine is EngineKind.ZUCKZAPGO:
        return ZuckZapGoEngine(settings, http)
    if settings.engine is EngineKind.WADIAL:
        return WadialEngine(settings, http)
    if settings.engine is EngineKind.CLOUDAPI:
        from .cloudapi import CloudApiEngine

        return CloudApiEngine(settings, http, ice)
    raise ConfigError(f"BRIDGE_ENGINE={settings.engine}: unknown engine")


__all__ = [
    "DtmfLeg",
    "Engine",
    "EngineEvent",
    "EngineEventKind",
    "EngineHealth",
    "EnginePump",
    "EngineStats",
    "MediaChannel",
    "MediaClosed",
    "RemoteCall",
    "SimEngine",
    "WadialEngine",
    "WebRTCLeg",
    "ZuckZapGoEngine",
    "create_engine",
]
