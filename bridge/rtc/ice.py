"""ICE configuration for the bridge's own peer connections, and the two aioice hooks.

aioice has no option to choose the interfaces it gathers host candidates on, and it skips
loopback. :func:`restrict_host_addresses` is the one place that changes that: it replaces
``aioice.ice.get_host_addresses`` (the function ``Connection.gather_candidates`` calls) with
one that returns the configured addresses.

aioice waits up to 5 s for server-reflexive and relayed candidates, and aiortc's
``setLocalDescription`` waits for gathering to finish, so an unreachable STUN or TURN server
would hold every answer for seconds. :func:`set_gather_timeout` caps that wait (aioice's
``get_component_candidates`` takes the timeout as a parameter; pending STUN/TURN attempts are
cancelled and aioice closes their sockets). Both hooks are process-wide, as aioice's are.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from ..config import IceSettings
from .turn import TurnGrant, pick_server_turn_url

_ORIGINAL: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
_ORIGINAL_COMPONENT = aioice.ice.Connection.get_component_candidates


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


def set_gather_timeout(seconds: float) -> None:
    """Wait at most ``seconds`` for STUN/TURN candidates (host candidates are immediate)."""

    @functools.wraps(_ORIGINAL_COMPONENT)
    async def get_component_candidates(
        self: Any, component: int, addresses: list[str], timeout: float = seconds
    ) -> Any:
        # aioice annotates the timeout as int; it goes to asyncio.wait, which takes a float.
        cap = min(timeout, seconds)
        return await _ORIGINAL_COMPONENT(self, component, addresses, timeout=cap)  # type: ignore[arg-type]

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]


def server_rtc_configuration(
    settings: IceSettings, turn: TurnGrant | None = None
) -> RTCConfiguration:
    """The bridge side's ``RTCConfiguration``.

    aiortc uses only the first STUN and the first TURN URL it is given, so exactly one of
    each is passed, chosen on purpose: the first ``BRIDGE_SERVER_STUN_URLS`` entry, and the
    TURN URL :func:`pick_server_turn_url` prefers (UDP, then TCP, then TLS). An empty list is
    passed explicitly when none is configured: given ``None``, aiortc would fall back to
    Google's public STUN server.
    """
    servers: list[RTCIceServer] = []
    if settings.server_stun_urls:
        servers.append(RTCIceServer(urls=settings.server_stun_urls[0]))
    for entry in turn.servers if turn is not None else ():
        url = pick_server_turn_url(
            [u for u in entry.get("urls", []) if u.startswith(("turn:", "turns:"))]
        )
        if url:
            servers.append(
                RTCIceServer(
                    urls=url, username=entry.get("username"), credential=entry.get("credential")
                )
            )
            break
    return RTCConfiguration(iceServers=servers)


_HOST_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)( \d+ typ host)", re.M)


def advertise_public_ip(sdp: str, public_ip: str) -> str:
    """Rewrite the answer's host candidates (and ``c=`` lines) to ``public_ip``: for a bridge
    behind 1:1 NAT, whose interfaces only know their private address."""
    if not public_ip:
        return sdp
    sdp = _HOST_CANDIDATE.sub(lambda m: f"{m.group(1)}{public_ip}{m.group(3)}", sdp)
    family = "IP6" if ":" in public_ip else "IP4"
    return re.sub(r"^c=IN IP[46] \S+", f"c=IN {family} {public_ip}", sdp, flags=re.M)
