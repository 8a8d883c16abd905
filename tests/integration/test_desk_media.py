"""An aiortc agent over a real WebSocket and UDP on loopback: rung, accepts, attaches its leg
(the per-call offer) and the tones are heard each way; accept → first audio measured."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ..support.calls import peer_heard, wait_state
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from .test_desk import Agent, incoming


def first_tone_at(rtc: RtcClient, after: float) -> float | None:
    """When the agent first heard sound (an RMS above -40 dBFS) after ``after``."""
    for chunk, at in zip(rtc.recorder.chunks, rtc.recorder.times, strict=True):
        if at >= after and np.sqrt(np.mean(np.square(chunk / 32768.0))) > 0.01:
            return at
    return None


async def test_an_aiortc_agent_accepts_and_hears_and_is_heard(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0)
    ann, bob = await Agent.connect(client, "ann"), await Agent.connect(client, "bob")
    call_id = await incoming(client)
    await ann.next("ringing"), await bob.next("ringing")
    clicked = time.monotonic()
    await ann.send(type="accept", callID=call_id)
    accepted = await ann.next("accepted")
    answered = time.monotonic()
    assert accepted["callID"] == call_id
    assert (await bob.next("call.taken"))["callID"] == call_id
    rtc = RtcClient(client, call_id, freq=440.0)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await wait_state(client, call_id, "active")
    await asyncio.sleep(1.5)
    heard_at = first_tone_at(rtc, clicked)
    assert heard_at is not None
    agent_hears = rtc.recorder.since(time.monotonic() - 0.8)
    assert abs(dominant_frequency(agent_hears, rtc.recorder.rate) - 660.0) < 15
    assert abs(dominant_frequency(peer_heard(client, call_id, 40), 16_000) - 440.0) < 15
    print(
        f"\naccept → accepted (call answered): {1000 * (answered - clicked):.1f} ms; "
        f"accept → first audio at the agent (per-call offer, ICE, DTLS): "
        f"{1000 * (heard_at - clicked):.1f} ms"
    )
    await rtc.close()
