"""The softphone places a call with its own agent token (``POST /call/make``), its connected
leg carrying it (tones asserted by frequency each way); a voicemail whose caller hangs up
before ``maxS`` still raises ``call.voicemail`` with what was recorded (its WAV's tone)."""

from __future__ import annotations

import asyncio
import time
import wave

import numpy as np

from bridge.api.keys import RECORDINGS

from ..support.calls import sim_call, wait_state
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_desk import Agent, incoming, token
from .test_desk_leg import LegAgent
from .test_desk_routes import event, route

KEY = "service-key-0123456789abcdef"


async def test_an_agent_places_a_call_with_its_own_token(make_client) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, api_tokens=(KEY,))
    service = {"Authorization": f"Bearer {KEY}"}
    resp = await client.post("/agents/tokens", json={"agentID": "bob"}, headers=service)
    bob_token = (await resp.json())["token"]
    ws = await client.ws_connect(f"/agents/connect?token={bob_token}")
    leg = LegAgent(Agent(ws), freq=520.0)
    await leg.agent.next("hello")
    mine = {"Authorization": f"Bearer {bob_token}"}
    resp = await client.post("/call/make", json={"phone": "5521988887777"}, headers=mine)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "agent_not_ready"
    await leg.offer()
    leg.mic.on.set()
    resp = await client.post("/call/make", json={"phone": "5521988887777"}, headers=mine)
    assert resp.status == 201, await resp.text()
    call_id = (await resp.json())["callID"]
    assert (await leg.agent.next("presence"))["state"] == "busy"
    await wait_state(client, call_id, "active", headers=service)
    await until(lambda: leg.first_sound(0.0) is not None, timeout=3.0)
    await asyncio.sleep(0.8)
    hears = leg.recorder.since(time.monotonic() - 0.6)
    assert abs(dominant_frequency(hears, leg.recorder.rate) - 660.0) < 15
    heard = np.concatenate(list(sim_call(client, call_id).heard)[-30:]).astype(np.float64)
    assert abs(dominant_frequency(heard, 16_000) - 520.0) < 15
    # An agent token is for its own agent's calls only, and nothing else of the API.
    for body, status in (
        ({"phone": "5521988887777", "agentID": "ann"}, 403),
        ({"phone": "not-a-phone"}, 400),
    ):
        resp = await client.post("/call/make", json=body, headers=mine)
        assert resp.status == status, await resp.text()
        assert "error" in await resp.json()
    forged = {"Authorization": f"Bearer {bob_token[:-4]}AAAA"}
    resp = await client.post("/call/make", json={"phone": "5521988887777"}, headers=forged)
    assert resp.status == 401 and "error" in await resp.json()
    resp = await client.get("/call/status", headers=mine)
    assert resp.status == 401
    await client.post("/call/hangup", json={"callID": call_id}, headers=service)
    await leg.agent.next("call.ended")
    await leg.close()


async def test_a_caller_hanging_up_during_voicemail_still_leaves_one(make_client, tmp_path) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, data_dir=str(tmp_path / "d"))
    await route(client, [{"voicemail": {"maxS": 30}}])
    await token(client, "ann")  # a route without agents: voicemail at once
    sub = await client.get("/call/events")
    call_id = await incoming(client)
    await wait_state(client, call_id, "active")
    await asyncio.sleep(1.2)
    await client.post("/call/hangup", json={"callID": call_id})  # long before maxS
    voicemail = await event(sub, "call.voicemail")
    assert voicemail["callID"] == call_id
    assert 800 <= voicemail["durationMs"] <= 3000
    recording = client.app[RECORDINGS].get(voicemail["recordingID"])
    with wave.open(str(recording.path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    assert abs(dominant_frequency(pcm[rate // 5 :], rate) - 660.0) < 15
    sub.close()
