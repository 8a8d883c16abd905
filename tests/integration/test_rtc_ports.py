"""BRIDGE_RTP_PORTS: every UDP socket the bridge's ICE opens binds inside the range."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time

import pytest

from bridge.config import load_settings
from bridge.rtc.ports import (
    EPHEMERAL_RANGE_FILE,
    PortAllocator,
    PortsExhausted,
    ephemeral_overlap,
    parse_port_range,
    port_scope,
)

from ..support.calls import wait_state
from ..support.ports import free_ports
from ..support.requires import needs
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.turnserver import TURNSERVER, Coturn
from ..support.waits import until

# Outside the kernel's ephemeral range, where no test client's socket can land, and outside
# the default range (10000-20000) other bridges under test use: this worker's own ports.
FIRST = free_ports(30)
LAST = FIRST + 19
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", re.M)


def candidate_ports(sdp: str) -> list[int]:
    return [int(m.group(2)) for m in _CANDIDATE.finditer(sdp)]


def test_parse_port_range() -> None:
    assert parse_port_range("") is None
    assert parse_port_range("40000-40999") == (40000, 40999)
    for bad in ("40000", "2-1", "80-90", "40000-70000", "a-b"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_allocator_skips_ports_in_use_and_says_when_exhausted() -> None:
    alloc = PortAllocator(FIRST + 40, FIRST + 42)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", FIRST + 40))
    socks = []
    try:
        socks.append(alloc.bind(socket.AF_INET, "127.0.0.1"))
        socks.append(alloc.bind(socket.AF_INET, "127.0.0.1"))
        assert sorted(s.getsockname()[1] for s in socks) == [FIRST + 41, FIRST + 42]
        with pytest.raises(PortsExhausted, match="BRIDGE_RTP_PORTS"):
            alloc.bind(socket.AF_INET, "127.0.0.1")
        socks.pop().close()
        socks.append(alloc.bind(socket.AF_INET, "127.0.0.1"))  # freed ports come back
    finally:
        squatter.close()
        for s in socks:
            s.close()


def test_ephemeral_overlap(tmp_path) -> None:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("32768\t60999\n")
    assert ephemeral_overlap("40000-40999", str(proc)) == (32768, 60999)
    assert ephemeral_overlap("30000-32768", str(proc)) == (32768, 60999)
    assert ephemeral_overlap("10000-20000", str(proc)) is None
    assert ephemeral_overlap("61000-61999", str(proc)) is None
    assert ephemeral_overlap("", str(proc)) is None
    assert ephemeral_overlap("40000-40999", str(tmp_path / "absent")) is None


@pytest.mark.skipif(not os.path.exists(EPHEMERAL_RANGE_FILE), reason="not Linux")
def test_start_warns_once_when_the_range_overlaps(caplog) -> None:
    from bridge.__main__ import _check_media_ports

    low, high = ephemeral_overlap("1024-65535") or (0, 0)
    caplog.set_level(logging.WARNING, logger="bridge")
    _check_media_ports(load_settings([], {}))  # the default stays below the ephemeral range
    assert not caplog.records
    _check_media_ports(load_settings([], {"BRIDGE_RTP_PORTS": f"{high - 9}-{high}"}))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ip_local_port_range" in warned[0].getMessage()
    assert f"{low}-{high}" in warned[0].getMessage()


async def test_scope_applies_only_inside_it() -> None:
    """Outside a port scope aioice keeps the OS's ephemeral ports (the tests' clients)."""
    import aioice

    from bridge.rtc import hooks

    hooks.install()
    with port_scope(f"{FIRST + 30}-{FIRST + 39}"):
        inside = aioice.Connection(ice_controlling=True)
        await inside.gather_candidates()
    outside = aioice.Connection(ice_controlling=True)
    await outside.gather_candidates()
    try:
        assert {c.port for c in inside.local_candidates} <= set(range(FIRST + 30, FIRST + 40))
        assert all(not FIRST <= c.port <= LAST + 40 for c in outside.local_candidates)
    finally:
        await inside.close()
        await outside.close()


async def test_twenty_sessions_fill_the_range_then_503_then_reusable(make_client) -> None:
    # The clients send no audio: the media watchdog must not free a port while the range fills
    # (twenty offers took over 10 s once on a host loaded to 5).
    client = await make_client(rtp_ports=f"{FIRST}-{LAST}", max_calls=50, media_timeout=120.0)
    calls, clients, ports = [], [], []
    try:
        for _ in range(20):
            call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
            rtc = RtcClient(client, call["callID"], freq=0)
            answer = await rtc.offer()
            calls.append(call["callID"])
            clients.append(rtc)
            ports += candidate_ports(answer["sdp"])
        # One host candidate on 127.0.0.1 with rtcp-mux and BUNDLE: one socket per session.
        assert len(ports) == 20 and len(set(ports)) == 20
        assert all(FIRST <= p <= LAST for p in ports), ports

        extra = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        spare = RtcClient(client, extra["callID"], freq=0)
        spare.pc.addTransceiver("audio", direction="recvonly")
        await spare.pc.setLocalDescription(await spare.pc.createOffer())
        resp = await client.post(
            "/call/webrtc/offer",
            json={"callID": extra["callID"], "type": "offer", "sdp": spare.pc.localDescription.sdp},
        )
        body = await resp.json()
        assert resp.status == 503, body
        assert body["error"]["code"] == "at_capacity"
        assert "BRIDGE_RTP_PORTS" in body["error"]["message"]
        assert resp.headers.get("Retry-After")
        snap = await (await client.get(f"/call/{extra['callID']}")).json()
        assert snap["webrtc"] is None and snap["state"] != "ended"
        await spare.close()

        for call_id, rtc in zip(calls, clients, strict=True):
            await client.post("/call/hangup", json={"callID": call_id})
            await rtc.close()

        # Every port is free again: a new call gets a port of the range and carries audio.
        rtc = RtcClient(client, extra["callID"], freq=440.0)
        answer = await rtc.offer()
        clients.append(rtc)
        assert all(FIRST <= p <= LAST for p in candidate_ports(answer["sdp"]))
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await wait_state(client, extra["callID"], "active")
        await rtc.recorder.tone_arrives(440)
        t1 = time.monotonic()
        await asyncio.sleep(1.0)
        heard = rtc.recorder.since(t1)
        assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(440, abs=5)

        # 19 more sessions fit again, once the hung-up sessions' sockets are closed: a
        # hang-up answers when its call has ended, and a loaded host may close a peer
        # connection's sockets a moment later (an offer meanwhile is 503 "retry later"). A
        # port never given back fails here.
        def free_in_range() -> int:
            free = 0
            for port in range(FIRST, LAST + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    try:
                        probe.bind(("127.0.0.1", port))
                    except OSError:
                        continue
                    free += 1
            return free

        await until(lambda: free_in_range() >= 19, 10, "the hung-up sessions' ports free")
        for _ in range(19):
            call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
            more = RtcClient(client, call["callID"], freq=0)
            answer = await more.offer()
            clients.append(more)
            assert all(FIRST <= p <= LAST for p in candidate_ports(answer["sdp"]))
    finally:
        for rtc in clients:
            await rtc.close()


@needs(TURNSERVER is not None, "coturn", "apt-get install coturn, or run `make test`")
async def test_turn_socket_binds_in_the_range(make_client, tmp_path) -> None:
    """The bridge's socket to its TURN server is a media socket too."""
    coturn = Coturn("north-secret", tmp_path)
    await coturn.start()
    rtc = client = None
    try:
        client = await make_client(
            rtp_ports=f"{FIRST + 20}-{FIRST + 29}",
            turn_urls=(coturn.url,),
            turn_secret="north-secret",
        )
        call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        rtc = RtcClient(client, call["callID"], freq=0)
        answer = await rtc.offer()
        kinds = {m.group(3): m for m in _CANDIDATE.finditer(answer["sdp"])}
        assert set(kinds) == {"host", "relay"}, answer["sdp"]
        assert FIRST + 20 <= int(kinds["host"].group(2)) <= FIRST + 29
        # A relay candidate's related address is the bridge's socket as coturn sees it.
        rport = re.search(r"typ relay raddr \S+ rport (\d+)", answer["sdp"])
        assert rport is not None and FIRST + 20 <= int(rport.group(1)) <= FIRST + 29, answer["sdp"]
        await asyncio.wait_for(rtc.connected.wait(), 10)
    finally:
        if rtc is not None:
            await rtc.close()
        # The bridge before its TURN server, in reverse order of start: the other way round,
        # its relay's deallocation went unanswered and held the teardown 5 s.
        if client is not None:
            await client.close()
        await coturn.stop()
