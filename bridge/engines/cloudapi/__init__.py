"""Meta's WhatsApp Business Cloud API Calling as an engine (``BRIDGE_ENGINE=cloudapi``):
the Graph client (``graph``), signed webhooks (``webhook``), the WhatsApp-side WebRTC peer
(``peer``, built from ``bridge.rtc`` pieces), SDP as Meta takes it (``sdp``) and the
engine (``engine``); or, with ``BRIDGE_CLOUDAPI_SIGNALLING=sip``, SIP over
TLS (``sip_engine``, ``sip_calls``, on :mod:`bridge.sip`). The media leg is chosen in one
place, ``media`` (``BRIDGE_CLOUDAPI_MEDIA``)."""

from __future__ import annotations

import aiohttp

from ...config import Settings
from ..base import Engine
from .engine import CloudApiEngine
from .sip_engine import SipEngine
from .webhook import SIGNATURE_HEADER, sign, webhook_calls


def create(settings: Settings, http: aiohttp.ClientSession | None = None) -> Engine:
    """The Cloud API engine for ``BRIDGE_CLOUDAPI_SIGNALLING``: Graph or SIP."""
    if settings.engine.sip:
        return SipEngine(settings, http)
    return CloudApiEngine(settings, http)


__all__ = ["SIGNATURE_HEADER", "CloudApiEngine", "SipEngine", "create", "sign", "webhook_calls"]
