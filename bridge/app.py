"""``create_app(settings)``: the aiohttp application — middlewares, routes, the page — and its
app-scoped resources (``resources.py``: one cleanup_ctx entry each)."""

from __future__ import annotations

import logging

from aiohttp import web

from .api import setup_routes
from .api.auth import auth_middleware
from .api.desk import authenticates_itself as agent_socket
from .api.desk import desk_resources
from .api.engine import authenticates_itself
from .api.errors import BODY_TIMEOUT, error_middleware
from .api.keys import CATALOG, METRICS, SETTINGS, TURN
from .api.limits import cors_middleware, cors_on_prepare, rate_limit_middleware
from .api.media import play_body_limit
from .api.routing import call_id_of, routing_middleware
from .api.schema import openapi_document
from .api.tenancy import tenancy_middleware
from .api.trunks import sip_trunks
from .calls import CallEvents, InMemoryCallRegistry
from .config import AgentFallback, Settings
from .engines import Engine
from .errors import NotFound
from .logs import name_numbers, quiet_parser_refusals
from .metrics import Metrics
from .resources import (
    CALL_EVENTS,
    CALL_REGISTRY,
    CLEANUP_CTX,
    ENGINE_OVERRIDE,
    WORKER_INDEX,
    on_shutdown,
)
from .rtc import create_turn_provider, restrict_host_addresses, set_gather_timeout, udp_poll
from .rtc.counters import RtcCollector
from .startup import check_media_file, prepare_data_dir, web_dir

log = logging.getLogger(__name__)


def tenant_of_key(request: web.Request, key: str) -> str | None:
    """The tenant whose API key ``key`` is (``None``: no tenant's)."""
    return request.app[CATALOG].tenant_of_key(key) if CATALOG in request.app else None


async def signs_itself(request: web.Request) -> bool:
    """A request that needs no API token: its route checks its caller itself."""
    return agent_socket(request) or await authenticates_itself(request)


def create_app(
    settings: Settings, *, engine: Engine | None = None, worker_index: int = 0
) -> web.Application:
    """Build the bridge application. ``engine`` overrides the configured one (tests);
    ``worker_index`` is this worker's place among ``BRIDGE_WORKERS`` (its internal port).

    Raises :class:`~bridge.startup.StartupError` when the packaged browser client is missing,
    ``BRIDGE_DATA_DIR`` is not writable or the fallback message is not in ``BRIDGE_MEDIA_DIR``."""
    server, storage, cluster = settings.server, settings.storage, settings.cluster
    static = web_dir()
    prepare_data_dir(storage.data_dir)
    agents = settings.agents
    if agents.agent_fallback is AgentFallback.MESSAGE:
        check_media_file(
            "BRIDGE_AGENT_FALLBACK_FILE", agents.agent_fallback_file, storage.media_dir
        )
    # The API's document, read here, before the worker listens: parsed in the first request
    # that validates a body, it held a fresh worker's event loop for 0.2-0.7 s while it took
    # handed-over calls, past its heartbeat on a loaded host (a survivor then reaped it).
    openapi_document()
    middlewares = [
        cors_middleware(server.cors_origins),
        error_middleware(),
        # Signed engine webhooks (Meta's) carry their signature, never our token.
        auth_middleware(
            server.api_tokens,
            authenticates_itself=signs_itself,
            internal_secret=cluster.internal_secret,
            tenant_of_key=tenant_of_key,
        ),
        tenancy_middleware(call_id_of),  # a tenant's key sees its own calls only
        rate_limit_middleware(server.rate_limit, server.rate_burst, by_token=server.auth_enabled),
    ]
    if cluster.shared:
        middlewares.append(routing_middleware(cluster.internal_secret))
    # The largest body aiohttp would read itself: ``/call/play``'s (every route reads and caps
    # its own body: JSON at 64 KiB, ``api.errors.read_json``; an upload as it streams).
    client_max_size = play_body_limit(settings.storage)
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)
    app[SETTINGS] = settings
    app[BODY_TIMEOUT] = server.body_timeout
    restrict_host_addresses(settings.ice.ice_addresses)
    set_gather_timeout(settings.ice.ice_gather_timeout)
    udp_poll.configure(settings.ice.udp_poll)
    turn = create_turn_provider(settings.ice)

    metrics = Metrics()
    metrics.registry.register(RtcCollector())  # UDP drops, WebRTC failures by reason
    app[METRICS] = metrics
    app[TURN] = turn
    app[WORKER_INDEX] = worker_index
    if engine is not None:
        app[ENGINE_OVERRIDE] = engine
    # The calls' record and their events exist before the directory and the webhooks that
    # read and observe them; the manager, made later, runs them.
    app[CALL_REGISTRY] = InMemoryCallRegistry(settings.calls.ended_call_ttl)
    app[CALL_EVENTS] = CallEvents()
    registry = app[CALL_REGISTRY]

    def number_of(call_id: str) -> str | None:
        call = registry.get(call_id)
        return call.number_id if call is not None else None

    unname = name_numbers(number_of)  # every log line of a call names its number
    unquiet = quiet_parser_refusals()  # malformed HTTP from anyone: no traceback each

    async def stop_naming(app: web.Application) -> None:
        unname()
        unquiet()

    app.on_cleanup.append(stop_naming)
    # App-scoped resources, made in this order and closed in reverse (resources.py).
    app.cleanup_ctx.extend(CLEANUP_CTX)
    app.cleanup_ctx.append(desk_resources)  # agents and routes, above the calls
    app.cleanup_ctx.append(sip_trunks)  # after the calls it joins (api/trunks.py)
    app.on_shutdown.append(on_shutdown)
    app.on_response_prepare.append(cors_on_prepare(server.cors_origins))
    setup_routes(app)
    index = static / "index.html"

    async def demo_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    async def report_page(request: web.Request) -> web.FileResponse:
        # The page holds no data: it reads the reports with the API's token (api/metrics.py).
        return web.FileResponse(static / "report.html")

    # The page and its scripts (web/__init__.py only makes the directory a package).
    files = {f.name: f for f in static.iterdir() if f.suffix in (".html", ".js", ".css")}

    async def web_file(request: web.Request) -> web.FileResponse:
        # The packaged files only, by name: no directory walk, and a 404 with the JSON body.
        path = files.get(request.match_info["filename"])
        if path is None:
            raise NotFound(f"no file {request.match_info['filename'][:80]!r} under /web/")
        return web.FileResponse(path)

    app.router.add_get("/", demo_page)
    app.router.add_get("/report", report_page)
    app.router.add_get("/web/{filename}", web_file)
    return app
