"""Releasing a closed peer connection's aiortc/aioice state (``rtc/release.py``) never pulls it
from under a task that still uses it: a leg closed before its ICE started (Meta refused the
``pre_accept``) left "Task exception was never retrieved … 'Connection' object has no
attribute '_nominated'" in the log."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.rtc import aiortc_seam as seam
from bridge.rtc.release import release_peer_connection


async def _closed_pc() -> tuple[RTCPeerConnection, Any]:
    """A peer connection closed before its ICE started, and its aioice connection."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    ice = pc.getTransceivers()[0].receiver.transport.transport
    connection = seam.ice_connection(ice)
    assert connection is not None
    await pc.close()
    return pc, connection


async def _uses_later(connection: Any) -> int:
    """A task on the connection that is not one of its methods (a plain function holding it,
    as aioice's own candidate-gathering helpers are), reading its state a moment later."""
    await asyncio.sleep(0.05)
    return len(connection._nominated)


async def test_a_task_still_on_the_connection_is_waited_for(caplog: Any) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    pc, connection = await _closed_pc()
    task = asyncio.ensure_future(_uses_later(connection))
    released = await release_peer_connection(pc, 1.0)
    assert task.done() and task.result() == 0  # it ran on the state before it was released
    assert released > 0 and "_nominated" not in vars(connection)
    del task
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_leftover_task_that_failed_is_not_logged_as_never_retrieved(
    caplog: Any,
) -> None:
    """aiortc's own leftovers (its connect task starting DTLS on a connection closed before
    ICE ran) may end in an exception nobody awaits: release takes it (logged at debug)."""

    async def fails(connection: Any) -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("Cannot send data, not connected")

    caplog.set_level(logging.ERROR, logger="asyncio")
    pc, connection = await _closed_pc()
    task = asyncio.ensure_future(fails(connection))
    await release_peer_connection(pc, 1.0)
    assert task.done()
    del task
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize("timeout", [0.01])
async def test_a_task_that_outlasts_the_wait_keeps_the_state(timeout: float) -> None:
    pc, connection = await _closed_pc()
    task = asyncio.ensure_future(_uses_later(connection))
    assert await release_peer_connection(pc, timeout) == 0  # the collector frees it later
    assert await task == 0


async def test_consent_checks_started_after_the_close_are_cancelled() -> None:
    """aioice's ``connect()`` starts its consent checks once its checks complete, even when
    ``close()`` came meanwhile (a call hung up as its ICE completed): that task loops for ever
    on the closed connection and held the whole peer connection alive. Release cancels it and
    frees the state."""
    pc, connection = await _closed_pc()
    connection.remote_password = "a-password"  # what connect() had when it started them
    consent = asyncio.ensure_future(connection.query_consent())
    await asyncio.sleep(0)
    released = await release_peer_connection(pc, 1.0)
    assert consent.cancelled()
    assert released > 0 and "_nominated" not in vars(connection)
