"""Application keys of app-scoped resources."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ..attachments import ForkService, PlaybackService, RecordingService
from ..calls import CallManager
from ..cluster import Directory
from ..cluster.handover import Handover
from ..config import Settings
from ..engines import Engine
from ..metrics import Metrics
from ..rtc import TurnProvider
from ..webhooks import WebhookService

SETTINGS = web.AppKey("settings", Settings)
MANAGER = web.AppKey("manager", CallManager)
ENGINE = web.AppKey("engine", Engine)
TURN = web.AppKey("turn", TurnProvider)
METRICS = web.AppKey("metrics", Metrics)
PLAYBACK = web.AppKey("playback", PlaybackService)
RECORDINGS = web.AppKey("recordings", RecordingService)
FORKS = web.AppKey("forks", ForkService)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
DIRECTORY = web.AppKey("directory", Directory)
HANDOVER = web.AppKey("handover", Handover)
INTERNAL_HTTP = web.AppKey("internal_http", aiohttp.ClientSession)
"""Requests between instances: a session of its own, so relayed streams never take the
connections engines, forks and webhooks need."""
