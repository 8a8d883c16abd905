"""The engine registry: every ``BRIDGE_ENGINE`` value has one entry, each entry builds its
engine from the settings, and what each engine can do is declared by the capability
protocols the app and the routes check (never by its kind)."""

from __future__ import annotations

import pytest

from bridge.config import EngineKind, load_settings
from bridge.engines import (
    ENGINES,
    CloudApiEngine,
    EndsBeforeArrival,
    Engine,
    PolledEngine,
    SignedWebhookEngine,
    SimEngine,
    SimulatedNetwork,
    WadialEngine,
    WebhookEngine,
    ZuckZapGoEngine,
    create_engine,
)

ENVIRONMENTS = {
    EngineKind.SIM: {},
    EngineKind.ZUCKZAPGO: {"BRIDGE_ENGINE_URL": "http://127.0.0.1:9", "BRIDGE_ENGINE_TOKEN": "z"},
    EngineKind.WADIAL: {
        "BRIDGE_ENGINE_URL": "http://127.0.0.1:9",
        "BRIDGE_ENGINE_TOKEN": "w",
        "BRIDGE_ENGINE_SESSION": "s1",
    },
    EngineKind.CLOUDAPI: {
        "BRIDGE_ENGINE_TOKEN": "t",
        "BRIDGE_CLOUDAPI_PHONE_NUMBER_ID": "1234567890",
        "BRIDGE_CLOUDAPI_APP_SECRET": "s",
        "BRIDGE_CLOUDAPI_VERIFY_TOKEN": "v",
    },
}

CAPABILITIES = (
    WebhookEngine,
    SignedWebhookEngine,
    PolledEngine,
    SimulatedNetwork,
    EndsBeforeArrival,
)


def test_every_engine_kind_is_registered() -> None:
    assert set(ENGINES) == set(EngineKind)


@pytest.mark.parametrize(
    ("kind", "cls", "capabilities"),
    [
        (EngineKind.SIM, SimEngine, {SimulatedNetwork}),
        (EngineKind.ZUCKZAPGO, ZuckZapGoEngine, {WebhookEngine, PolledEngine}),
        (EngineKind.WADIAL, WadialEngine, {PolledEngine}),
        # Meta's terminate webhook may overtake its connect, to another worker.
        (
            EngineKind.CLOUDAPI,
            CloudApiEngine,
            {WebhookEngine, SignedWebhookEngine, EndsBeforeArrival},
        ),
    ],
)
def test_the_registry_builds_the_engine_with_its_capabilities(
    kind: EngineKind, cls: type, capabilities: set[type]
) -> None:
    settings = load_settings([], {"BRIDGE_ENGINE": str(kind), **ENVIRONMENTS[kind]})
    engine: Engine = create_engine(settings)
    assert type(engine) is cls and engine.name == str(kind)
    assert {c for c in CAPABILITIES if isinstance(engine, c)} == capabilities
