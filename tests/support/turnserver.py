"""A real coturn on loopback, started by the tests (Debian's coturn package)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

from .ports import free_port
from .processes import stop_process
from .waits import until

TURNSERVER = shutil.which("turnserver")


class Coturn:
    """``turnserver`` with ``use-auth-secret`` on 127.0.0.1, loopback peers allowed."""

    def __init__(self, secret: str, workdir: Path) -> None:
        self.secret = secret
        self.workdir = workdir
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert TURNSERVER, "coturn is not installed"
        base = 40000 + (os.getpid() % 200) * 100
        self.proc = await asyncio.create_subprocess_exec(
            TURNSERVER,
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--relay-ip=127.0.0.1",
            f"--min-port={base}",
            f"--max-port={base + 99}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            "--realm=bridge.test",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-tcp-relay",
            "--simple-log",
            f"--log-file={self.workdir / 'turn.log'}",
            f"--pidfile={self.workdir / 'turn.pid'}",
            f"--userdb={self.workdir / 'turndb'}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        # Ready when it answers a STUN binding request.
        await until(self._answers, 20.0, "coturn to answer STUN", every=0.05)

    async def _answers(self) -> bool:
        request = bytes.fromhex("000100002112a442") + os.urandom(12)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(request, ("127.0.0.1", self.port))
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 1500), 0.2)
            except (TimeoutError, ConnectionRefusedError):
                return False
        return data[:2] == b"\x01\x01"

    async def stop(self) -> None:
        await stop_process(self.proc)
