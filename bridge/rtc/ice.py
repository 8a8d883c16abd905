"""ICE configuration for the bridge's own peer connections.

aioice has no option to choose the interfaces it gathers host candidates on, and it skips
loopback. :func:`restrict_host_addresses` is the one place that changes that: it replaces
``aioice.ice.get_host_addresses`` (the function ``Connection.gather_candidates`` calls) with
one that returns the configured addresses. The hook is process-wide, as aioice's lookup is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from ..config import Settings

_ORIGINAL: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on ``addresses`` (empty: aioice's default behaviour)."""
    if not addresses:
        aioice.ice.get_host_addresses = _ORIGINAL  # type: ignore[assignment]
        return
    parsed = [ipaddress.ip_address(a) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in parsed if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def server_rtc_configuration(settings: Settings) -> RTCConfiguration:
    """The bridge side's ``RTCConfiguration``.

    aiortc uses only the first STUN and the first TURN URL it is given, so exactly those are
    passed. An empty list is passed explicitly when none is configured: given ``None``,
    aiortc would fall back to Google's public STUN server.
    """
    servers: list[RTCIceServer] = []
    if settings.server_stun_urls:
        servers.append(RTCIceServer(urls=settings.server_stun_urls[0]))
    return RTCConfiguration(iceServers=servers)
