"""The always-connected agent leg (issue 49): aiortc agents over a real WebSocket and UDP on
loopback offer once at connect, idle (a few packets a second at most, nothing on the media
clock), take calls on that leg with no new offer (tones asserted by frequency each way), take a
second call on it, come back with a new offer after a drop, and place a call with it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from bridge.api.keys import DESK
from bridge.media.clock import worker_clock
from bridge.rtc import restrict_host_addresses

from ..support.calls import sim_call, wait_state
from ..support.loops import LoopLag
from ..support.rtc_client import Recorder, ToneTrack
from ..support.spectrum import dominant_frequency
from ..support.waits import settled, until
from .test_desk import Agent, incoming


class GatedTone(ToneTrack):
    """A microphone the agent app opens on a call only (idle: the sender sends nothing)."""

    def __init__(self, freq: float) -> None:
        super().__init__(freq)
        self.on = asyncio.Event()

    async def recv(self) -> Any:
        if not self.on.is_set():
            await self.on.wait()
            self._start = time.monotonic() - self._n / self.rate  # paced from now, no burst
        return await super().recv()


class LegAgent:
    """An agent's socket and its connected leg, as an app drives them."""

    def __init__(self, agent: Agent, freq: float = 440.0) -> None:
        self.agent = agent
        self.freq = freq
        self.pc: RTCPeerConnection | None = None
        self.recorder = Recorder()
        self.mic = GatedTone(freq)
        self.connected = asyncio.Event()
        self.datagrams = 0
        self.rtp_times: list[float] = []
        self.first_rtp = 0.0

    async def offer(self) -> None:
        restrict_host_addresses(["127.0.0.1"])
        self.pc = pc = RTCPeerConnection()
        self.connected = asyncio.Event()
        self.recorder = Recorder()
        self.mic = GatedTone(self.freq)
        pc.on("track", self.recorder.start)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        pc.addTrack(self.mic)
        await pc.setLocalDescription(await pc.createOffer())
        await self.agent.send(type="offer", sdp=pc.localDescription.sdp)
        answer = await self.agent.next("answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(self.connected.wait(), 10)
        self._count_datagrams()
        self.rtp_times = []
        rx = pc.getTransceivers()[0].receiver
        handle = rx._handle_rtp_packet

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            self.rtp_times.append(time.monotonic())
            await handle(packet, arrival_time_ms)

        rx._handle_rtp_packet = timed

    def _count_datagrams(self) -> None:
        assert self.pc is not None
        ice = self.pc.getTransceivers()[0].receiver.transport.transport
        for protocol in ice._connection._protocols:
            received = protocol.datagram_received

            def counting(data: bytes, addr: Any, received: Any = received) -> None:
                self.datagrams += 1
                received(data, addr)

            protocol.datagram_received = counting

    def first_sound(self, after: float) -> float | None:
        rec = self.recorder
        for chunk, at in zip(rec.chunks, rec.times, strict=True):
            if at >= after and np.sqrt(np.mean(np.square(chunk / 32768.0))) > 0.01:
                return at
        return None

    async def close(self) -> None:
        await self.recorder.stop()
        if self.pc is not None:
            await self.pc.close()


async def peer_hears_sound(client: Any, call_id: str, timeout: float = 3.0) -> float:
    """When the simulated WhatsApp peer first heard sound (polled every 2 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    heard = sim_call(client, call_id).heard
    while loop.time() < deadline:
        if any(np.abs(frame).max() > 300 for frame in list(heard)[-3:]):
            return time.monotonic()
        await asyncio.sleep(0.002)
    raise AssertionError("the peer heard nothing")


async def idle_datagrams(leg: LegAgent, seconds: float) -> float:
    """Datagrams a second the bridge sent the idle leg; its RTP among them is the keepalive
    (a packet of silence a second: ``rtc/connected.py``), checked here."""
    before, rtp = leg.datagrams, len(leg.rtp_times)
    await asyncio.sleep(seconds)
    keepalives = (len(leg.rtp_times) - rtp) / seconds
    assert 0.4 <= keepalives <= 1.6, f"{keepalives:.1f} RTP packets a second while idle"
    return (leg.datagrams - before) / seconds


async def take_call(client: Any, leg: LegAgent) -> tuple[str, float, float]:
    """A sim call rings the agent, who accepts: tones each way on the connected leg. Returns
    the call and accept → first sound at the agent / at the peer (ms)."""
    call_id = await incoming(client)
    await leg.agent.next("ringing")
    leg.mic.on.set()  # the app opens its microphone as it clicks answer
    clicked = time.monotonic()
    await leg.agent.send(type="accept", callID=call_id)
    peer_at = await peer_hears_sound(client, call_id)
    accepted = await leg.agent.next("accepted")
    assert accepted["leg"] is True
    await wait_state(client, call_id, "active")
    # This process runs the agent's client and the bridge: a stall of it past 100 ms leaves
    # the last 0.6 s unheard (once nothing at all, beside a full suite's other workers); such
    # a second is listened to again, up to three. A leg the bridge stopped feeding is silent
    # in every one.
    for _ in range(3):
        async with LoopLag() as lag:
            await asyncio.sleep(1.0)
        hears = leg.recorder.since(time.monotonic() - 0.6)
        if lag.stalled < 0.1:
            break
    agent_at = leg.first_sound(clicked)
    assert agent_at is not None
    leg.first_rtp = next(t for t in leg.rtp_times if t >= clicked) - clicked
    assert abs(dominant_frequency(hears, leg.recorder.rate) - 660.0) < 15, lag.stalled
    heard = np.concatenate(list(sim_call(client, call_id).heard)[-30:]).astype(np.float64)
    assert abs(dominant_frequency(heard, 16_000) - leg.freq) < 15
    return call_id, 1000 * (agent_at - clicked), 1000 * (peer_at - clicked)


async def hang_up(client: Any, leg: LegAgent, call_id: str) -> None:
    leg.mic.on.clear()
    await client.post("/call/hangup", json={"callID": call_id})
    await leg.agent.next("call.ended")
    assert (await leg.agent.next("presence"))["state"] == "available"


async def test_a_connected_leg_idles_takes_two_calls_and_comes_back(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    leg = LegAgent(await Agent.connect(client, "ann"), freq=440.0)
    await leg.offer()
    # Idle: nothing of it on the media clock once its priming is sent (bounded: a loaded host
    # finishes later). Its upkeep (RTCP, consent checks, the keepalive) never takes a tick,
    # however closely two datagrams follow each other (rtc/udp_poll.py).
    assert await settled(lambda: worker_clock().running, 0.5, 5.0, "the media clock") is False
    # The keepalive (one a second), RTCP and consent checks: no media on the clock.
    assert await idle_datagrams(leg, 2.0) <= 6

    call_id, to_agent, to_peer = await take_call(client, leg)
    rtp1 = leg.first_rtp
    await hang_up(client, leg, call_id)
    await asyncio.sleep(0.3)
    assert await idle_datagrams(leg, 1.5) <= 6  # parked again after the call

    call_id, to_agent2, to_peer2 = await take_call(client, leg)  # the same leg, no offer
    rtp2 = leg.first_rtp
    await hang_up(client, leg, call_id)
    print(
        f"\nconnected leg: accept → first sound at the agent {to_agent:.1f} / {to_agent2:.1f} ms, "
        f"at the WhatsApp peer {to_peer:.1f} / {to_peer2:.1f} ms; first RTP packet at the agent "
        f"{1000 * rtp1:.1f} / {1000 * rtp2:.1f} ms"
    )

    # The leg is lost (the app's peer connection closed); a new offer on the same socket.
    await leg.close()
    await leg.offer()
    call_id, _, _ = await take_call(client, leg)
    await hang_up(client, leg, call_id)
    # The socket closes: its idle leg is closed with the session (aiohttp cancels the socket's
    # handler as it goes, which once cut the session's close short and left the leg open).
    (session,) = client.app[DESK].sessions()
    bridge_leg = session.leg
    await leg.agent.ws.close()
    await until(lambda: bridge_leg.closed, 3, "the bridge's leg closed with its socket")
    await leg.close()


async def test_an_agent_places_a_call_on_its_connected_leg(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    leg = LegAgent(await Agent.connect(client, "bob"), freq=520.0)
    resp = await client.post("/call/make", json={"phone": "5521988887777", "agentID": "bob"})
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "agent_not_ready"
    await leg.offer()
    leg.mic.on.set()
    resp = await client.post("/call/make", json={"phone": "5521988887777", "agentID": "bob"})
    assert resp.status == 201, await resp.text()
    call_id = (await resp.json())["callID"]
    assert (await leg.agent.next("presence"))["state"] == "busy"
    await wait_state(client, call_id, "active")
    await until(lambda: _sound(leg), timeout=3.0)
    await asyncio.sleep(0.8)
    hears = leg.recorder.since(time.monotonic() - 0.6)
    assert abs(dominant_frequency(hears, leg.recorder.rate) - 660.0) < 15
    heard = np.concatenate(list(sim_call(client, call_id).heard)[-30:]).astype(np.float64)
    assert abs(dominant_frequency(heard, 16_000) - 520.0) < 15
    await hang_up(client, leg, call_id)
    # Bad input: an unknown agent, a malformed offer.
    resp = await client.post("/call/make", json={"phone": "5521988887777", "agentID": "nobody"})
    assert resp.status == 409
    await leg.agent.send(type="offer", sdp="")
    assert (await leg.agent.next("error"))["code"] == "bad_sdp"
    await leg.agent.send(type="offer", sdp="v=0\r\nnonsense")
    assert (await leg.agent.next("error"))["code"] in ("bad_offer", "unsupported_media")
    await leg.close()


async def _sound(leg: LegAgent) -> bool:
    return leg.first_sound(0.0) is not None


async def test_a_leg_idle_past_the_media_timeout_is_not_failed_as_it_takes_a_call(
    make_client,
) -> None:
    """Idle, the app sends nothing on its leg (the JS client opens its microphone when its
    presence turns ``busy``). The media timeout counted from the leg's latest packet, before
    the idle time: an agent idle for longer than ``BRIDGE_MEDIA_TIMEOUT`` (10 s: almost every
    agent between calls) had its leg failed by the watchdog's first pass after the lend,
    unless its microphone's first packet came first, and lost the call's audio. It counts
    from the lend."""
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, media_timeout=1.0)
    leg = LegAgent(await Agent.connect(client, "ann"), freq=440.0)
    await leg.offer()
    (session,) = client.app[DESK].sessions()
    bridge_leg = session.leg
    try:
        await asyncio.sleep(1.2)  # idle past the media timeout
        call_id = await incoming(client)
        await leg.agent.next("ringing")
        await leg.agent.send(type="accept", callID=call_id)
        assert (await leg.agent.next("accepted"))["leg"] is True
        await asyncio.sleep(0.4)  # the app opens its microphone (getUserMedia, replaceTrack)
        leg.mic.on.set()
        await wait_state(client, call_id, "active")
        await peer_hears_sound(client, call_id)
        await asyncio.sleep(0.3)
        assert bridge_leg.state == "connected", bridge_leg.failure
        heard = np.concatenate(list(sim_call(client, call_id).heard)[-15:]).astype(np.float64)
        assert abs(dominant_frequency(heard, 16_000) - leg.freq) < 15
        await hang_up(client, leg, call_id)
    finally:
        await leg.close()
