"""Application keys of app-scoped resources."""

from __future__ import annotations

from aiohttp import web

from ..calls import CallManager
from ..config import Settings
from ..forks import ForkService
from ..legs import Engine
from ..playback import PlaybackService
from ..recording import RecordingService

SETTINGS = web.AppKey("settings", Settings)
MANAGER = web.AppKey("manager", CallManager)
ENGINE = web.AppKey("engine", Engine)
PLAYBACK = web.AppKey("playback", PlaybackService)
RECORDINGS = web.AppKey("recordings", RecordingService)
FORKS = web.AppKey("forks", ForkService)
