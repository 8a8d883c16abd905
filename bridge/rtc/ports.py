"""Pinned media ports (``BRIDGE_RTP_PORTS``): every UDP socket the bridge's ICE opens binds
inside one configured range, so firewalls can be written for it.

aioice has no port-range option (aioice PR #112 was never merged): ``rtc/ice.py`` routes its
two socket binds through :func:`bind_in_range` while a :func:`port_scope` (a context variable,
entered around a leg's negotiation) is active, so other aioice users in the process keep the
OS's ephemeral ports.

The allocator is stateless about which ports are taken: the kernel is the authority. It starts
each search after the port it handed out last (a just-freed port is not reused at once), moves
on at ``EADDRINUSE``, and raises :class:`PortsExhausted` (503) when the range is full.

The range belongs outside the kernel's ephemeral range (32768-60999 on Linux), where any
process binding port 0 could take a media port; PBXes use 10000-20000 for this reason, the
default. :func:`ephemeral_overlap` says at start when a configured range overlaps.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import AtCapacity

_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")


class PortsExhausted(AtCapacity):
    """Every port of ``BRIDGE_RTP_PORTS`` is in use."""


def parse_port_range(value: str) -> tuple[int, int] | None:
    """``"40000-40999"`` → ``(40000, 40999)``; empty → ``None``. Raises ``ValueError``."""
    if not value.strip():
        return None
    m = _RANGE.match(value)
    if not m:
        raise ValueError("expected a range like 40000-40999")
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError("expected 1024 <= first <= last <= 65535")
    return lo, hi


@dataclass
class PortAllocator:
    """Binds UDP sockets inside ``[first, last]``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        self._next = self.first
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def bind(self, family: int, host: str) -> socket.socket:
        """A non-blocking UDP socket bound to ``(host, port)`` with ``port`` in the range."""
        with self._lock:
            start = self._next
            for i in range(self.size):
                port = self.first + (start - self.first + i) % self.size
                try:
                    sock = udp_socket(family, host, port)
                except OSError as exc:
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise
                self._next = self.first + (port - self.first + 1) % self.size
                return sock
        raise PortsExhausted(
            f"all {self.size} media ports of BRIDGE_RTP_PORTS={self.first}-{self.last} are in "
            "use; retry later or widen the range"
        )


EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_overlap(ports: str, path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """The kernel's ephemeral range when ``ports`` overlaps it (``None``: no overlap, no
    range, or no such file: not Linux)."""
    rng = parse_port_range(ports)
    try:
        with open(path, encoding="ascii") as f:
            low, high = (int(p) for p in f.read().split())
    except (OSError, ValueError):
        return None
    if rng is None or rng[1] < low or rng[0] > high:
        return None
    return low, high


_ALLOCATORS: dict[tuple[int, int], PortAllocator] = {}
_SCOPE: contextvars.ContextVar[PortAllocator | None] = contextvars.ContextVar(
    "bridge_rtp_ports", default=None
)


def allocator_for(first: int, last: int) -> PortAllocator:
    """The process-wide allocator of a range (one per range)."""
    key = (first, last)
    if key not in _ALLOCATORS:
        _ALLOCATORS[key] = PortAllocator(first, last)
    return _ALLOCATORS[key]


def current_allocator() -> PortAllocator | None:
    return _SCOPE.get()


@contextlib.contextmanager
def port_scope(ports: str) -> Iterator[PortAllocator | None]:
    """Within this block (and tasks it starts), aioice binds inside ``ports`` (a range string;
    empty: the OS's ephemeral ports)."""
    rng = parse_port_range(ports)
    allocator = allocator_for(*rng) if rng else None
    token = _SCOPE.set(allocator)
    try:
        yield allocator
    finally:
        _SCOPE.reset(token)


def udp_socket(family: int, host: str, port: int = 0) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` (0: a port the kernel picks, when no
    range is set)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_in_range(
    allocator: PortAllocator | None,
    local_addr: tuple[str, int] | None,
    remote_addr: tuple[str, int] | None,
) -> socket.socket:
    """A media socket bound inside the range (``allocator``; ``None``: a port the kernel
    picks): the one aioice asked ``create_datagram_endpoint`` for, or an SDES or trunk leg's
    (``rtc/srtpudp.py``).

    ``local_addr`` is a host candidate's (or the leg's) address; for a TURN server
    (``remote_addr`` only) the socket binds the wildcard address of the server's family and is
    connected to it.
    """
    if local_addr is not None:
        host = local_addr[0]
    else:
        assert remote_addr is not None
        host = "::" if ":" in remote_addr[0] else "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = allocator.bind(family, host) if allocator is not None else udp_socket(family, host)
    if remote_addr is not None:
        try:
            sock.connect(remote_addr)
        except OSError:
            sock.close()
            raise
    return sock
