"""Application keys of app-scoped resources."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ..agents import AgentService
from ..attachments import ForkService, PlaybackService, RecordingService
from ..calls import CallManager, InboundCalls, Recovery
from ..calls.reports import CallReports
from ..cluster import Directory
from ..cluster.handover import Handover
from ..config import Settings
from ..desk import Desk
from ..engines import Engine
from ..metrics import Metrics
from ..numbers.catalog import Catalog
from ..numbers.switchboard import Switchboard
from ..rtc import TurnProvider
from ..tasks import TaskSet
from ..trunks import TrunkService
from ..webhooks import WebhookService

SETTINGS = web.AppKey("settings", Settings)
MANAGER = web.AppKey("manager", CallManager)
INBOUND = web.AppKey("inbound", InboundCalls)
"""Who takes a new inbound call (``POST /call/adopt`` lands there)."""
RECOVERY = web.AppKey("recovery", Recovery)
"""Orphans at start-up and a dead worker's calls (the directory hands them over)."""
ENGINE = web.AppKey("engine", Engine)
"""The default number's engine (the one ``BRIDGE_ENGINE`` defines)."""
CATALOG = web.AppKey("catalog", Catalog)
"""Numbers and tenants (``/numbers``, ``/tenants``), kept equal to the store."""
SWITCHBOARD = web.AppKey("switchboard", Switchboard)
"""Every number's engine behind one face: the manager's engine, the webhook front door."""
TRUNKS = web.AppKey("trunks", TrunkService)
"""SIP trunks in calls: the trunk listener, SIP participants, registrations."""
TURN = web.AppKey("turn", TurnProvider)
METRICS = web.AppKey("metrics", Metrics)
PLAYBACK = web.AppKey("playback", PlaybackService)
RECORDINGS = web.AppKey("recordings", RecordingService)
FORKS = web.AppKey("forks", ForkService)
AGENTS = web.AppKey("agents", AgentService)
"""Realtime model agents on calls (OpenAI Realtime, Gemini Live)."""
WEBHOOKS = web.AppKey("webhooks", WebhookService)
REPORTS = web.AppKey("reports", CallReports)
"""Each call's timeline while it lasts and its record after (``GET /call/{callID}/report``)."""
DIRECTORY = web.AppKey("directory", Directory)
HANDOVER = web.AppKey("handover", Handover)
"""Moves this worker's calls away when it drains; takes calls moved here
(``POST /call/handover``) and a dead worker's calls that recovery adopts."""
HTTP = web.AppKey("http", aiohttp.ClientSession)
"""The process's one outgoing client (engines, forks, playback URLs, webhooks, TURN)."""
TASKS = web.AppKey("tasks", TaskSet)
"""The app's own background tasks (loop-lag monitor, retention sweep, record-every-call)."""
INTERNAL_HTTP = web.AppKey("internal_http", aiohttp.ClientSession)
"""Requests between instances: a session of its own, so relayed streams never take the
connections engines, forks and webhooks need."""
DESK = web.AppKey("desk", Desk)
"""People who answer calls: agent tokens, presence, their sockets, routes."""
