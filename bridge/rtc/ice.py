"""ICE configuration for the bridge's own peer connections, and the aioice hooks.

aioice has no option to choose the interfaces it gathers host candidates on, and it skips
loopback: :func:`restrict_host_addresses` replaces ``aioice.ice.get_host_addresses`` with one
that returns the configured addresses.

aioice waits up to 5 s for server-reflexive and relayed candidates, and aiortc's
``setLocalDescription`` waits for gathering, so an unreachable STUN or TURN server would hold
every answer for seconds: :func:`set_gather_timeout` caps that wait. Both hooks are
process-wide, as aioice's are.

aioice's ``asyncio`` is replaced (:data:`ASYNCIO_FOR_AIOICE`, installed with the other hooks,
``rtc/hooks.py``) for two things. Its two socket binds go through the pinned port range
while a ``port_scope`` is active (``rtc/ports.py``); an exhausted range becomes
:class:`~bridge.rtc.ports.PortsExhausted` (503) rather than a skipped candidate. And its ICE
consent checks' sleeps (RFC 7675 §5.1: every 5 s, randomised) of a second or more end on the
worker clock at the first point of the parked sockets' 0.2 s grid (``rtc/udp_poll.py``
``BATCH``), so they add no wake-up of their own; the randomisation is kept (4.0–6.2 s).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import re
import socket
import types
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer

from ..config import ConfigError, IceSettings
from ..media.clock import clock_sleep
from . import aiortc_seam as seam
from . import udp_poll
from .guard import timed_receiver
from .ports import PortAllocator, PortsExhausted, bind_in_range, current_allocator
from .turn import TurnGrant, pick_server_turn_url

_ORIGINAL_COMPONENT = seam.ORIGINAL.get_component_candidates


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Gather host candidates only on ``addresses`` (empty: aioice's default behaviour); an
    address no socket can be bound to here is a :class:`ConfigError`."""
    if not addresses:
        seam.set_host_addresses(None)
        return
    parsed = [ipaddress.ip_address(a) for a in addresses]
    for address in parsed:  # each one a socket can be bound to, else no call could gather
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((str(address), 0))
        except OSError as exc:
            raise ConfigError(
                f"BRIDGE_ICE_ADDRESSES: {str(address)!r} cannot be bound here ({exc.strerror}): "
                "list addresses of this machine"
            ) from None

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in parsed if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    seam.set_host_addresses(get_host_addresses)


_gather_timeout: float | None = None
_EXHAUSTED: ContextVar[list[PortsExhausted] | None] = ContextVar(
    "bridge_ports_exhausted", default=None
)


def set_gather_timeout(seconds: float) -> None:
    """Wait at most ``seconds`` for STUN/TURN candidates (host candidates are immediate):
    through the hook each leg installs before it gathers (``rtc/hooks.py``)."""
    global _gather_timeout
    _gather_timeout = seconds


@functools.wraps(_ORIGINAL_COMPONENT)
async def get_component_candidates(
    self: Any, component: int, addresses: list[str], timeout: float = 5
) -> Any:
    if _gather_timeout is not None:
        timeout = min(timeout, _gather_timeout)
    exhausted: list[PortsExhausted] = []
    token = _EXHAUSTED.set(exhausted)
    try:
        # aioice annotates the timeout as int; it goes to asyncio.wait, which takes a float.
        candidates = await _ORIGINAL_COMPONENT(self, component, addresses, timeout=timeout)
    finally:
        _EXHAUSTED.reset(token)
    if exhausted:
        # aioice skipped the candidate (it logs and goes on at an OSError); sockets it did
        # open are in the connection's protocols and close with it.
        raise exhausted[0]
    return candidates


class _RangeLoop:
    """The running loop as aioice sees it: binds its UDP sockets inside the port range."""

    def __init__(self, loop: asyncio.AbstractEventLoop, allocator: PortAllocator | None) -> None:
        self._loop = loop
        self._allocator = allocator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs or (local_addr is not None and local_addr[1] != 0):
            return await self._loop.create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs
            )
        if remote_addr is not None and local_addr is None:
            infos = await self._loop.getaddrinfo(*remote_addr, type=socket.SOCK_DGRAM)
            remote_addr = (str(infos[0][4][0]), int(infos[0][4][1]))
        try:
            sock = bind_in_range(self._allocator, local_addr, remote_addr)
        except PortsExhausted as exc:
            box = _EXHAUSTED.get()
            if box is not None:
                box.append(exc)
            # What aioice expects from a failed bind: it skips this candidate.
            raise OSError(errno.EADDRINUSE, exc.message) from None
        try:
            if udp_poll.enabled and remote_addr is None:  # a host candidate's socket
                protocol = protocol_factory()
                timed = timed_receiver(protocol)  # each datagram with its socket's stamp
                checks_over = functools.partial(_checks_over, protocol)
                return udp_poll.open_polled(sock, protocol, timed, checks_over), protocol
            return await self._loop.create_datagram_endpoint(protocol_factory, sock=sock)
        except BaseException:
            sock.close()
            raise


def _checks_over(protocol: Any) -> bool:
    """Whether the ICE connection behind ``protocol`` (aioice's ``StunProtocol``) has nominated
    a pair: its STUN is consent upkeep from then on (``rtc/udp_poll.py``)."""
    return bool(seam.nominated(protocol.receiver))


def _running_loop() -> Any:
    loop = asyncio.get_running_loop()
    allocator = current_allocator()
    if allocator is None and not udp_poll.enabled:
        return loop
    return _RangeLoop(loop, allocator)


CLOCKED_SLEEP = 1.0
"""Seconds: aioice's sleeps from this long on end on the worker clock's grid (module
docstring)."""


async def _sleep(delay: float, result: Any = None) -> Any:
    if delay < CLOCKED_SLEEP:
        return await asyncio.sleep(delay, result)
    await clock_sleep(delay, udp_poll.BATCH)
    return result


class _AsyncioForAioice(types.ModuleType):
    """``asyncio`` as ``aioice.ice`` and ``aioice.turn`` see it: the loop differs, and long
    sleeps end on the worker clock (module docstring)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    get_running_loop = staticmethod(_running_loop)
    sleep = staticmethod(_sleep)


ASYNCIO_FOR_AIOICE = _AsyncioForAioice("asyncio")


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
    """Rewrite the answer's host candidates of ``public_ip``'s family (and ``c=`` lines) to
    ``public_ip``: for a bridge behind 1:1 NAT, whose interfaces only know their private
    address. A host candidate of the other family is left as it is: the NAT maps one family,
    and that candidate's port on the public address would be another socket's, or none."""
    if not public_ip:
        return sdp
    v6 = ":" in public_ip

    def public(m: re.Match[str]) -> str:
        if (":" in m.group(2)) != v6:
            return m.group(0)
        return f"{m.group(1)}{public_ip}{m.group(3)}"

    sdp = _HOST_CANDIDATE.sub(public, sdp)
    family = "IP6" if v6 else "IP4"
    return re.sub(r"^c=IN IP[46] \S+", f"c=IN {family} {public_ip}", sdp, flags=re.M)
