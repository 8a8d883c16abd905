"""SIPp as the tests start it (``tests/support/sipp.py``): it binds the ports the tests give it
and no others (left to itself it takes 6000 and 6002, its RTP echo and RTP, and 8888, its
control port, and the next ones up when those are taken: in the range the tests' ports come
from, ``tests/support/ports.py``, where another worker may have handed one of them to a
Kamailio, a Twinkle or a bridge that has not bound it yet); and a SIPp waiting for an INVITE
over UDP is started once its port is bound, however long it takes to start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..support.ports import held, leased
from ..support.requires import require
from ..support.sipp import Sipp, tools_missing
from ..support.waits import until


def bound_ports(pid: int) -> set[int]:
    """The UDP and TCP ports process ``pid``'s sockets are bound to (from ``/proc``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("udp", "tcp"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def test_sipp_binds_only_ports_from_our_leases(tmp_path) -> None:
    why = tools_missing()
    require(not why, why, "make system-deps (Debian sip-tester and socat)")
    sipp = Sipp(tmp_path, "pbx_phone_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1", extra=("-rtp_echo",))
    try:
        assert sipp.proc is not None
        pid = sipp.proc.pid
        # Its SIP port, its two media ports and its control port.
        ports = await until(lambda: len(bound_ports(pid)) >= 4 and bound_ports(pid), 10, "SIPp")
        assert sipp.port in ports
        assert all(leased(port) for port in ports), sorted(ports)
    finally:
        await sipp.stop()


async def test_a_sipp_server_on_udp_is_started_once_its_port_is_bound(tmp_path, monkeypatch):
    """A SIPp that takes a second to start (a shim before it on ``PATH``, as a loaded host
    makes it): ``start()`` returns once it holds its UDP port (it returned after 0.3 s, and a
    trunk's first request then met a closed port)."""
    why = tools_missing()
    require(not why, why, "make system-deps (Debian sip-tester and socat)")
    real = shutil.which("sipp")
    shim = tmp_path / "bin" / "sipp"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nsleep 1\nexec {real} "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    sipp = Sipp(tmp_path, "pbx_phone_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1")
    try:
        assert held(sipp.port)
    finally:
        await sipp.stop()
