"""The SIP TLS listener when accept() fails: on asyncio's loop only (uvloop's ``sock_accept``
cannot be replaced; the listener's loop is the same code on both)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .test_tls_handshakes import HOST, Served, _serve


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """A TLS listener (``test_tls_handshakes``'s), on this module's loop: asyncio's."""
    async for s in _serve(tmp_path, None):
        yield s


async def test_out_of_descriptors_is_said_once_and_accepting_resumes(
    served: Served, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accept() failing (EMFILE: the process out of descriptors) is retried every 0.1 s and
    said once while it lasts, not ten times a second; then handshakes complete as before."""
    loop = asyncio.get_running_loop()
    real, failures = loop.sock_accept, [6]

    async def out_of_descriptors(sock: socket.socket) -> tuple[socket.socket, object]:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return await real(sock)

    monkeypatch.setattr(loop, "sock_accept", out_of_descriptors)
    caplog.set_level(logging.INFO, logger="bridge.sip")
    assert await served.handshake(HOST) == HOST  # the accept already waiting, unpatched
    assert await served.handshake(HOST) == HOST  # after six failures, 0.1 s apart
    said = [r.getMessage() for r in caplog.records if "accept" in r.getMessage()]
    assert len(said) == 2 and "Too many open files" in said[0], said
    assert said[1] == "SIP TLS: accepting again"
