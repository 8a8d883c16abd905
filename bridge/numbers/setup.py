"""The numbers of a worker, made at start: the default number from the settings, the store,
the declarative file applied, the catalog loaded and followed, the switchboard built on it."""

from __future__ import annotations

import logging

import aiohttp

from ..config import EngineKind, RecordingSetting, Settings
from ..engines import Engine
from ..metrics import Metrics
from .blocks import engine_fields
from .catalog import Catalog
from .defined import settings_fields
from .file import apply_numbers_file
from .model import DEFAULT_NUMBER, Number
from .sip_road import enable_declared
from .store import ALONE_POLL, POLL_INTERVAL, open_store
from .switchboard import Switchboard

log = logging.getLogger(__name__)


def default_number(settings: Settings) -> Number:
    """The number ``BRIDGE_ENGINE`` and its settings define (``numberID`` ``default``)."""
    engine = settings.engine
    config: dict[str, object] = {}
    if engine.engine is EngineKind.CLOUDAPI:
        config = {
            "signalling": str(engine.cloudapi_signalling),
            "media": str(engine.cloudapi_media),
            # The Graph API the settings name (Meta's own unless set): the number's health is
            # probed there, as its engine calls it. Without it the probe went to Meta's own
            # whatever BRIDGE_ENGINE_URL said (a proxy, a version, the tests' fake).
            "graphURL": engine.engine_url,
        }
        if engine.cloudapi_phone_number_id:
            config["phoneNumberID"] = engine.cloudapi_phone_number_id
    elif engine.engine is not EngineKind.SIM:
        config = {"url": engine.engine_url}
    values: dict[str, object] = {**vars(settings.engine), **vars(settings.sip)}
    secrets = {  # which are set (GET shows only that), and what a stored one is compared with
        name: str(values[setting])
        for name, (setting, secret, _) in engine_fields(engine.engine).items()
        if secret and values.get(setting)
    }
    policy = settings.storage.recording_policy
    phone = f"+{settings.sip.sip_number}" if settings.sip.sip_number else ""
    return Number(
        number_id=DEFAULT_NUMBER,
        phone=phone,
        engine=engine.engine,
        config=config,
        secrets=secrets,
        recording="allowed" if policy is RecordingSetting.API else str(policy),
        created_at=0,
    )


async def start_numbers(
    settings: Settings,
    default_engine: Engine,
    http: aiohttp.ClientSession | None,
    metrics: Metrics | None = None,
) -> tuple[Catalog, Switchboard]:
    """The catalog (loaded, following its store) and the switchboard (the numbers' engines
    started). A store that cannot be read at start leaves the default number serving and is
    read again every poll (logged once)."""
    cluster = settings.cluster
    store = open_store(
        settings.storage.data_dir,
        cluster.directory if cluster.shared else "",
        cluster.internal_secret,
    )
    catalog = Catalog(store, default_number(settings), settings_fields(settings))
    on_sip: list[str] = []
    if settings.storage.numbers_file:
        on_sip = await apply_numbers_file(catalog, settings.storage.numbers_file, settings)
    # Other processes write the store only when it is Redis (several workers need it): a
    # lone worker's own writes reload at once (store.py ALONE_POLL).
    await catalog.start(POLL_INTERVAL if cluster.shared else ALONE_POLL)
    switchboard = Switchboard(default_engine, catalog, settings, http)
    switchboard.metrics = metrics
    await switchboard.start()
    await enable_declared(catalog, switchboard, settings, on_sip)
    return catalog, switchboard
