"""An owner's close runs to its end once, whoever awaits it or is cancelled (``bridge/tasks.py``
``CloseOnce``, the one mechanism: a WebRTC leg's close and a recorder's). A leg's close used to
mark the leg closed first and then tear down inline in its caller: a caller cancelled
mid-teardown (a request whose client went away) left the wire and the peer connection open,
and every later close returned at once."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.config import SimPeer, SimSettings
from bridge.desk import AgentClaims, AgentSession
from bridge.engines import EnginePump
from bridge.engines.base import EngineStats
from bridge.engines.cloudapi.peer import WhatsAppPeer
from bridge.engines.sim import SimCall, SimMediaChannel
from bridge.errors import StorageFailed
from bridge.media import CallBus
from bridge.rtc import restrict_host_addresses
from bridge.tasks import CloseOnce
from tests.fakes.cloudapi import meta_offer
from tests.support.closes import cancel_mid_teardown
from tests.support.sdes_leg import sdes_leg
from tests.support.sdes_peer import SdesEndpoint
from tests.support.waits import until


def _bound_ports(peer: WhatsAppPeer) -> list[int]:
    """The UDP ports the leg's ICE sockets are bound to."""
    ports = []
    for transceiver in peer.pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            ports.append(protocol.transport.get_extra_info("sockname")[1])
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_a_leg_whose_closing_caller_is_cancelled_still_closes_its_socket() -> None:
    restrict_host_addresses(["127.0.0.1"])
    meta = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        meta.addTransceiver("audio", direction="sendrecv")
        await meta.setLocalDescription(await meta.createOffer())
        peer = WhatsAppPeer(
            "cancelled", None, EngineStats(), on_dtmf=lambda *_: None, on_media=lambda *_: None
        )
        await peer.answer(meta_offer(meta.localDescription.sdp))  # its ICE sockets bound
        ports = _bound_ports(peer)
        assert ports and not any(_free(p) for p in ports)
        await cancel_mid_teardown(peer._tasks, peer.close)
        assert peer.closed
        await until(lambda: peer.state == "closed", timeout=5, what="the teardown's end")
        await peer.close()  # a later close: the same teardown, over
        assert all(_free(p) for p in ports)
    finally:
        restrict_host_addresses([])
        await meta.close()


async def test_an_sdes_leg_whose_closing_caller_is_cancelled_still_closes_its_socket(
    sdes_meta: SdesEndpoint,
) -> None:
    peer, _ = sdes_leg()
    sdes_meta.take(await peer.answer(sdes_meta.sdp()))  # its RTP socket bound, media flowing
    port = peer.socket.local[1]
    assert not _free(port)
    await cancel_mid_teardown(peer._tasks, peer.close)
    assert peer.dead
    await until(lambda: peer.state == "closed", timeout=2, what="the teardown's end")
    await peer.close()  # a later close: the same teardown, over
    assert _free(port)


async def test_an_engine_pump_whose_closing_caller_is_cancelled_still_closes_its_channel() -> None:
    bus = CallBus("pump-cancelled")
    call = SimCall(id="SIM1", peer="1@s.whatsapp.net", direction="outbound", state="active")
    channel = SimMediaChannel(call, SimSettings(sim_peer=SimPeer.TONE))
    pump = EnginePump(bus, channel)
    pump.start()  # the WhatsApp side's port in the call, the far end on the clock
    assert bus.conference.whatsapp is not None
    await cancel_mid_teardown(pump._tasks, pump.close)
    # Nobody closes it again: the channel closes and the port leaves the call all the same.
    await until(lambda: bus.conference.whatsapp is None, 2, "the port leaving")
    assert channel.door.over is not None
    await pump.close()


async def test_a_desk_session_whose_closing_caller_is_cancelled_still_closes_its_socket() -> None:
    eof = asyncio.Event()

    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the agent's socket is closed
        eof.set()
        writer.close()

    server = await asyncio.start_server(server_side, "127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])

        async def write(text: str) -> None:
            writer.write(text.encode())

        async def hang_up() -> None:
            writer.close()
            await writer.wait_closed()

        claims = AgentClaims(None, "ann", ("sales",), time.time() + 60)
        session = AgentSession(claims, write, hang_up)
        session.start()
        await cancel_mid_teardown(session._tasks, session.close)
        await asyncio.wait_for(eof.wait(), 2)  # the socket closed all the same
        await session.close()  # a later close: the same teardown, over
        assert session.closed
    finally:
        server.close()
        await server.wait_closed()


async def test_concurrent_closes_share_one_teardown_and_its_failure() -> None:
    runs = 0

    async def teardown() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise StorageFailed("the disk is full")

    closing: CloseOnce[str] = CloseOnce("test:close")
    callers = [closing.run(teardown) for _ in range(3)]
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert runs == 1 and all(isinstance(r, StorageFailed) for r in results)
    assert closing.started


async def test_a_failure_with_nobody_left_waiting_is_said_not_lost(caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.tasks")
    finished = asyncio.Event()

    async def teardown() -> None:
        await asyncio.sleep(0.01)
        finished.set()
        raise StorageFailed("the recording cannot be finished: No space left on device")

    closing: CloseOnce[None] = CloseOnce("recorder[test]")
    caller = asyncio.create_task(closing.run(teardown))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await finished.wait()
    await asyncio.sleep(0)
    (record,) = [r for r in caplog.records if r.name == "bridge.tasks"]
    assert record.levelno == logging.WARNING and "No space left" in record.getMessage()
