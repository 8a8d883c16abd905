"""The SIP listener's places per source (``bridge/sip/places.py``, issue 60): one source
address cannot hold every connection place and keep Meta out. Over its cap a source's next
connection is closed as it arrives (counted, said once at WARNING while it lasts) while another
source still gets in; sources in the trusted networks are not capped; a connection that says
nothing after its handshake is closed after the first-message timeout, CRLF pings or not.

Real sockets on loopback: the listener on 127.0.0.1, clients from 127.0.0.1 and 127.0.0.2
(Linux routes all of 127/8 to lo)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.sip.listener import Listener
from bridge.sip.places import Places
from bridge.sip.trust import PeerPolicy

from ..support.loops import event_loop_policy  # noqa: F401  (both loops)
from .test_tls_handshakes import (
    BOUND,
    HOST,
    Served,
    _ignore,
    _ignore_bad,
    _serve,
    closed_by_the_listener,
    handshaken,
    refused_before_a_byte,
)

OPTIONS = (
    b"OPTIONS sip:bridge@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bK-places\r\n"
    b"From: <sip:meta@127.0.0.1>;tag=1\r\nTo: <sip:bridge@127.0.0.1>\r\n"
    b"Call-ID: places-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


async def ping(writer: asyncio.StreamWriter) -> None:
    """A CRLF ping (RFC 5626 §4.4.1) every 0.1 s, until cancelled."""
    while True:
        writer.write(b"\r\n\r\n")
        await asyncio.sleep(0.1)


def places(served: Served) -> Places:
    assert served.listener is not None
    return served.listener.places


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_one_source_over_its_cap_is_refused_while_another_gets_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.sip")
    async for served in _serve(tmp_path, None, PeerPolicy(per_source=3)):
        held = [await handshaken(served, "127.0.0.1") for _ in range(3)]
        # Its cap is taken: its next connections are closed as they arrive, said once.
        assert await refused_before_a_byte(served.port, "127.0.0.1")
        assert await refused_before_a_byte(served.port, "127.0.0.1")
        over = said(caplog, "3 connections from 127.0.0.1 at once")
        assert [r.levelno for r in over] == [logging.WARNING], caplog.text
        assert "BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE" in over[0].getMessage()
        assert places(served).refused["per_source"] == 2
        # Another source gets its handshakes meanwhile, up to its own cap.
        others = [await handshaken(served, "127.0.0.2") for _ in range(3)]
        assert await refused_before_a_byte(served.port, "127.0.0.2")
        assert places(served).refused["per_source"] == 3
        # One of the first source's closes: its place is free again.
        held[0][1].close()
        async with asyncio.timeout(BOUND):
            while True:
                try:
                    again = await handshaken(served, "127.0.0.1")
                    break
                except (ConnectionError, ssl.SSLError):
                    await asyncio.sleep(0.05)
        assert said(caplog, "127.0.0.1 has a place again")  # (2 refused or more: the retries)
        for _, writer in [*held[1:], *others, again]:
            writer.close()
        # Every place is left as its connection ends: nothing is kept per source.
        for _ in range(int(BOUND / 0.02)):
            if not places(served).by_source:
                break
            await asyncio.sleep(0.02)
        assert places(served).by_source == {}


async def test_sources_in_the_trusted_networks_are_not_capped(tmp_path: Path) -> None:
    """Meta's ranges (``BRIDGE_SIP_TRUSTED_NETWORKS``) are the operator's to vouch for: any
    number of their connections, within the listener's own bound; the others are capped."""
    policy = PeerPolicy((ipaddress.ip_network("127.0.0.1/32"),), per_source=2)
    async for served in _serve(tmp_path, None, policy):
        trusted = [await handshaken(served, "127.0.0.1") for _ in range(6)]
        untrusted = [await handshaken(served, "127.0.0.2") for _ in range(2)]
        assert await refused_before_a_byte(served.port, "127.0.0.2")
        assert await served.handshake(HOST) == HOST
        assert places(served).refused == {
            "closing": 0,
            "full": 0,
            "untrusted": 0,
            "per_source": 1,
        }
        for _, writer in [*trusted, *untrusted]:
            writer.close()


async def test_a_connection_that_never_sends_a_message_is_closed_after_the_first_message_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Handshaken and then silent, or sending only CRLF pings (RFC 5626 §4.4.1, answered):
    closed once the first-message timeout (0.5 s here, 30 s in service) has passed, said once
    for the source. One that sent a whole message first stays open past it."""
    caplog.set_level(logging.WARNING, logger="bridge.sip")
    policy = PeerPolicy(first_message_timeout=0.5)
    async for served in _serve(tmp_path, None, policy):
        speaking = await handshaken(served, "127.0.0.1")
        speaking[1].write(OPTIONS)
        silent = await handshaken(served, "127.0.0.2")
        pinging = await handshaken(served, "127.0.0.2")

        pinger = asyncio.create_task(ping(pinging[1]))
        try:
            assert await closed_by_the_listener(silent[0])
            assert await pinging[0].readexactly(2) == b"\r\n"  # the pings were heard
            assert await closed_by_the_listener(pinging[0])
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
        with pytest.raises(TimeoutError):  # past the timeout: still open
            await asyncio.wait_for(speaking[0].read(1), 0.3)
        silence = said(caplog, "no SIP message within 0.5 s")
        assert len(silence) == 1 and "127.0.0.2" in silence[0].getMessage(), caplog.text
        for _, writer in (speaking, silent, pinging):
            writer.close()


@pytest.fixture
async def trunk_port() -> AsyncIterator[int]:
    """A plain TCP listener (a trunk's), each source capped at 2."""
    listener = Listener(None, _ignore, _ignore_bad, PeerPolicy(per_source=2))
    await listener.start("127.0.0.1", 0)
    try:
        yield listener.port
    finally:
        await listener.close()


async def test_a_trunks_tcp_listener_caps_each_source_too(trunk_port: int) -> None:
    held = [
        await asyncio.open_connection("127.0.0.1", trunk_port, local_addr=("127.0.0.1", 0))
        for _ in range(2)
    ]
    # Accepted ones wait for their message: nothing closes them.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(held[0][0].read(1), 0.2)
    assert await refused_before_a_byte(trunk_port, "127.0.0.1")
    other = await asyncio.open_connection("127.0.0.1", trunk_port, local_addr=("127.0.0.2", 0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other[0].read(1), 0.2)
    for _, writer in [*held, other]:
        writer.close()


async def test_the_settings_reach_the_engines_listener(sip_rig) -> None:
    """``BRIDGE_SIP_MAX_CONNECTIONS_PER_SOURCE`` as the engine applies it: a source's third
    connection closed as it arrives, counted in the engine's health."""
    rig = await sip_rig(sip_max_connections_per_source=2, sip_first_message_timeout=5.0)
    port = rig.engine.ua.port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    with pytest.raises(TimeoutError):  # accepted: waiting for its client hello
        await asyncio.wait_for(held[1][0].read(1), 0.2)
    assert await refused_before_a_byte(port, "127.0.0.1")
    health = await rig.engine.health()
    assert health.info["refused_connections"]["per_source"] == 1
    for _, writer in held:
        writer.close()
