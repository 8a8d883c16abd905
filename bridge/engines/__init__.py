"""The WhatsApp side of a call: engine adapters behind one ``Engine`` protocol and its
capabilities (``base``), the pump that moves a call's audio between its bus and its engine
media (``pump``), and the registry of engines by ``BRIDGE_ENGINE`` (:data:`ENGINES`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp

from ..config import ConfigError, EngineKind, Settings
from . import cloudapi
from .base import (
    ArtifactsEngine,
    BilledEngine,
    CallButtonEngine,
    CallLeg,
    CallsOver,
    EndsBeforeArrival,
    Engine,
    EngineEvent,
    EngineEventKind,
    EngineHealth,
    EngineStats,
    LegCodecEngine,
    LegEngine,
    MovableCalls,
    OffersAgain,
    PermissionEngine,
    PolledEngine,
    RemoteCall,
    SettingsEngine,
    SimulatedNetwork,
    SipLineEngine,
    StandingEngine,
)
from .channels import (
    ClockedChannel,
    DtmfLeg,
    MediaChannel,
    MediaClosed,
    OpensInBackground,
    WebRTCChannel,
    WebRTCLeg,
)
from .cloudapi import CloudApiEngine
from .pump import EnginePump
from .sim import SimEngine
from .socket import PcmStreamMedia
from .wadial import WadialEngine
from .webhooks import SignedWebhookEngine, WebhookCalls, WebhookEngine
from .zuckzapgo import ZuckZapGoEngine

EngineFactory = Callable[[Settings, aiohttp.ClientSession | None], Engine]
"""Builds an engine from the bridge's settings; remote engines make their requests with the
app's HTTP client."""

ENGINES: Mapping[EngineKind, EngineFactory] = {
    EngineKind.SIM: SimEngine.from_settings,
    EngineKind.ZUCKZAPGO: ZuckZapGoEngine.from_settings,
    EngineKind.WADIAL: WadialEngine.from_settings,
    EngineKind.CLOUDAPI: cloudapi.create,  # Graph or SIP signalling
}
"""Every engine, by its ``BRIDGE_ENGINE`` name (docs/architecture.md: how to add one)."""


WEBHOOK_CALLS: Mapping[EngineKind, Callable[[bytes], WebhookCalls]] = {
    EngineKind.CLOUDAPI: cloudapi.webhook_calls,
}
"""How each kind of engine whose signed webhooks name their number in the body (Meta's
``phone_number_id``, on either road) reads the calls a webhook names, with no engine built:
for a number deleted before this worker started, whose calls may live on another worker."""


def create_engine(settings: Settings, http: aiohttp.ClientSession | None = None) -> Engine:
    """The engine selected by ``BRIDGE_ENGINE``."""
    factory = ENGINES.get(settings.engine.engine)
    if factory is None:
        raise ConfigError(f"BRIDGE_ENGINE={settings.engine.engine}: no engine is registered")
    return factory(settings, http)


__all__ = [
    "ENGINES",
    "WEBHOOK_CALLS",
    "ArtifactsEngine",
    "BilledEngine",
    "CallButtonEngine",
    "CallLeg",
    "CallsOver",
    "ClockedChannel",
    "CloudApiEngine",
    "DtmfLeg",
    "EndsBeforeArrival",
    "Engine",
    "EngineEvent",
    "EngineEventKind",
    "EngineFactory",
    "EngineHealth",
    "EnginePump",
    "EngineStats",
    "LegCodecEngine",
    "LegEngine",
    "MediaChannel",
    "MediaClosed",
    "MovableCalls",
    "OffersAgain",
    "OpensInBackground",
    "PcmStreamMedia",
    "PermissionEngine",
    "PolledEngine",
    "RemoteCall",
    "SettingsEngine",
    "SignedWebhookEngine",
    "SimEngine",
    "SimulatedNetwork",
    "SipLineEngine",
    "StandingEngine",
    "WadialEngine",
    "WebRTCChannel",
    "WebRTCLeg",
    "WebhookCalls",
    "WebhookEngine",
    "ZuckZapGoEngine",
    "create_engine",
]
