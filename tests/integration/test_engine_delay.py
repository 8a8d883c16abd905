"""The remote PCM engine path holds its delay whatever the engine's clock (issue 61).

A real bridge (in this process) on the ZuckZapGo engine, against ``bench/zuckzapgo_echo.py``'s
echoing engine over a real WebSocket, in each of its unkind ways: one that sends back what it
gets as it gets it, one on its own 60 ms clock at a seeded phase that drops nothing, one whose
clock drifts. A real aiortc peer sends a 20 ms 1 kHz click once a second and times each from
its RTP packet's send to the first loud RTP packet back (``bench/loadgen.py``'s probe, decoded
as each packet arrives, so the peer's own jitter buffer is not in it); the same peer against a
bare aiortc echo (``bench/echo_server.py``) is the reference, timed once for the module's
cases (:func:`bare_round_trips`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench import echo_server
from bench.loadgen import ClickProbe, PacketTrack, encode_clicks
from bench.zuckzapgo_echo import EchoingZuckZapGo, EchoKind, EchoTiming
from bridge.rtc import restrict_host_addresses
from tests.support.ports import free_port

from ..support.waits import until

CLICKS = 4
"""Clicks timed per call (one a second), after the first two (the call's start)."""


async def click_round_trips(http: Any, clicks: int = CLICKS) -> list[float]:
    """A call placed through ``http`` (``/call/make`` then ``/call/webrtc/offer``) whose peer
    clicks once a second: the round trip of each click after the first two (s)."""
    restrict_host_addresses(["127.0.0.1"])
    resp = await http.post("/call/make", json={"phone": "+5521999999999"})
    assert resp.status == 201
    call_id = (await resp.json())["callID"]
    probe = ClickProbe()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PacketTrack(list(encode_clicks()), probe=probe))
    receiver = pc.getTransceivers()[0].receiver
    handle = receiver._handle_rtp_packet

    async def timed(packet: Any, arrival_time_ms: int) -> None:
        if packet.payload:
            probe.on_receive(packet.payload, time.monotonic())
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = timed  # this peer's receiver only
    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"callID": call_id, "type": "offer", "sdp": pc.localDescription.sdp}
        resp = await http.post("/call/webrtc/offer", json=body)
        answer = await resp.json()
        assert resp.status == 200, answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await until(lambda: len(probe.round_trips) >= clicks + 2, clicks + 8, "the clicks back")
        return probe.round_trips[2 : clicks + 2]
    finally:
        await pc.close()


def echo_app() -> web.Application:
    """``bench/echo_server.py``: the bare aiortc echo."""
    app = web.Application()
    app[echo_server.PCS] = set()
    app.router.add_post("/call/make", echo_server.make)
    app.router.add_post("/call/webrtc/offer", echo_server.offer)
    app.on_shutdown.append(echo_server.close_all)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bare_round_trips() -> list[float]:
    """The bare echo's click round trips, on one call: every case's reference. Each case timed
    a bare call of its own before; one call is one phase of the echo's either way (its figure
    moves by the phase from call to call, :data:`BOUND`), and those calls were 5 s of each
    case's 11.5 (this serial module: 24 s, not 35)."""
    async with TestClient(TestServer(echo_app())) as http:
        return await click_round_trips(http)


async def added_delay(
    bare: list[float], make_client: Callable[..., Awaitable[Any]], timing: EchoTiming
) -> tuple[float, float, list[float]]:
    """(the bridge's click round trip minus the bare echo's, medians in s; the bridge's)."""
    engine = EchoingZuckZapGo(timing, token="ztok", port=free_port(), answer_delay=0.05)
    await engine.start()
    try:
        client = await make_client(
            engine="zuckzapgo",
            engine_url=engine.url,
            engine_token="ztok",
            engine_poll_interval=0.2,
        )
        rtts = await click_round_trips(client)
    finally:
        await engine.stop()
    added = statistics.median(rtts) - statistics.median(bare)
    return added, statistics.median(bare), rtts


BOUND = 0.045
"""Seconds over the bare echo's round trip this branch holds on a shared 2-core runner. The
goal is +20 ms (issue 61), and ``bench.engine_delay`` holds it within a few ms over many
clicks; one call here times four, and the bare echo's own figure moves by its phase from one
call to the next (83, 101 or 106-111 ms on 2026-11-26), so a single pair carries up to ~25 ms
of that. Nine runs of the three cases here (load 1.5-3.4): worst +37.6 ms, the one-process
as-received case (its bridge round trip is 111-121 ms, as on main) against the echo's best
phase. 45 ms keeps ~7 ms for a loaded host's ticks and still fails a frame left standing in
the engine for the call (60 ms more: +58 to +97 ms in the bench before it was shed) and the
as-received engine before issue 61's first fix (+97 to +118 ms). Under a load of 5-6 from
other work this runner has seen +68 ms: the test is serial for that reason."""


@pytest.mark.serial  # round trips timed to the ms: other tests' CPU moves them by ticks
@pytest.mark.parametrize(
    "timing",
    [
        EchoTiming(EchoKind.AS_RECEIVED),
        EchoTiming(EchoKind.CLOCKED, 0.031),
        EchoTiming(EchoKind.DRIFT, 0.011, ppm=300),
    ],
    ids=lambda t: f"{t.kind.value}@{t.phase}{t.ppm:+g}",
)
async def test_engine_delay_is_held(
    bare_round_trips: list[float], make_client: Any, timing: EchoTiming
) -> None:
    """The click's round trip through the bridge and each unkind engine, minus the bare
    echo's, stays within :data:`BOUND`."""
    added, bare, _ = await added_delay(bare_round_trips, make_client, timing)
    if added > BOUND:
        # One call's clicks carry the phase of its ticks against the engine's (up to ~25 ms:
        # +43 and +52 ms seen once each on a quiet Intel VM, +11 to +30 ms on the next runs):
        # a second call is timed. What this test is for is systematic (a frame left standing
        # in the engine: +58 ms and more on every call) and fails both.
        added, bare, _ = await added_delay(bare_round_trips, make_client, timing)
    assert added <= BOUND, f"{1000 * added:+.1f} ms over the bare echo's {1000 * bare:.1f}"
