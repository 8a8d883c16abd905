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
ICE sockets), where nothing binds by chance. Each pytest-xdist worker (``PYTEST_XDIST_WORKER``:
``gw0``, ``gw1``…) has its own block, so workers never meet; a block's ports are handed out
in turn, never twice in one process, each checked free (TCP and UDP) first: a process from an
earlier run may linger on one.
"""

from __future__ import annotations

import os
import socket
import threading

FIRST_PORT = 2000
BLOCK = 1000  # ports per worker: 8 workers fit below 10000
_lock = threading.Lock()
_next: int | None = None


def _block() -> tuple[int, int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    start = FIRST_PORT + (index % 8) * BLOCK
    return start, start + BLOCK


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
    """The first of ``count`` consecutive free ports from this worker's block (baresip's TLS
    listener is its SIP port + 1; an RTP port and its RTCP port)."""
    global _next
    start, end = _block()
    with _lock:
        if _next is None or not start <= _next < end:
            # Start where an earlier process of this worker (a re-run) is unlikely to linger.
            _next = start + (os.getpid() * 7) % (BLOCK // 2)
        for _ in range(BLOCK):
            first = _next
            if first + count > end:
                first = start
            _next = first + count
            if all(_free(p) for p in range(first, first + count)):
                return first
    raise RuntimeError(f"no {count} free consecutive ports in {start}-{end}")


def free_port() -> int:
    """One free port, never handed out before by this process."""
    return free_ports(1)
