"""Ports for the processes a test starts (a bridge, Redis, coturn, Kamailio, SIPp, baresip…).

Why not ``bind(("127.0.0.1", 0))`` and hand the port over: the port is closed again before the
child binds it, often a second later (a Python process starting), and in the meantime the
kernel may give that same port to anyone who asks for an ephemeral one: another test's
outgoing connection, an ICE candidate, a second ``bind(0)`` made for the instance started
beside it. Two bridges started together on one port: one exits, the other answers both
readiness probes, and "instance a" refuses every connection once "b" stops.

So ports handed to children come from 2000–9999: below the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768–60999 by default) and below the bridges' own media
range (``BRIDGE_RTP_PORTS``, 10000–20000 by default, where every bridge under test binds its
ICE sockets), where nothing binds by chance.

Each process that asks leases blocks of :data:`LEASE` ports, a block at a time, by an
exclusive ``flock`` on a file in the temporary directory, held until the process exits (the
kernel releases it then, however the process ends). No two processes on the machine hand out
the same port while both live: not two pytest-xdist workers, not a test and a bench's or a
fake's child, not two test runs side by side (a full run beside a colleague's tests: a
per-worker block met the other run's same worker, and a bridge's readiness probe was answered
by the other run's fake engine). A block's ports are handed out in turn, never twice in one
process, each checked free (TCP and UDP) first: a process from an earlier run may linger on one.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import threading
from pathlib import Path

FIRST_PORT = 2000
LAST_PORT = 10_000  # exclusive: the bridges' media range begins there
LEASE = 100
"""Ports a process leases at a time (80 leases in the range)."""
LEASES = Path(tempfile.gettempdir()) / "bridge-test-ports"
_lock = threading.Lock()
_leased: dict[int, int] = {}
"""This process's leases: their first port → the open, locked file that holds each."""
_next = 0
_end = 0


def _lease() -> None:
    """Take the next block no live process holds: ``_next`` and ``_end`` span it."""
    global _next, _end
    LEASES.mkdir(exist_ok=True)
    count = (LAST_PORT - FIRST_PORT) // LEASE
    first = (os.getpid() * 7) % count  # processes started together look in different places
    for i in range(count):
        start = FIRST_PORT + (first + i) % count * LEASE
        if start in _leased:
            continue
        fd = os.open(LEASES / f"{start}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _leased[start] = fd
        _next, _end = start, start + LEASE
        return
    raise RuntimeError(f"every block of {LEASE} ports in {FIRST_PORT}-{LAST_PORT} is leased")


def _free(port: int) -> bool:
    """Nothing holds ``port`` on loopback, TCP or UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive free ports of this process's leases (baresip's TLS
    listener is its SIP port + 1; an RTP port and its RTCP port)."""
    global _next
    assert 0 < count <= LEASE
    with _lock:
        while True:
            if _next + count > _end:
                _lease()
            first = _next
            _next = first + count
            if all(_free(p) for p in range(first, first + count)):
                return first


def held(port: int) -> bool:
    """Something holds ``port`` on loopback (TCP or UDP): for a port of ours, the child it was
    given to has bound it (a UDP socket answers no connect, so this is how it is probed)."""
    return not _free(port)


def leased(port: int) -> bool:
    """Whether ``port`` lies in one of this process's leases."""
    with _lock:
        return any(start <= port < start + LEASE for start in _leased)


def free_port() -> int:
    """One free port, never handed out before by this process nor held by another's lease."""
    return free_ports(1)
