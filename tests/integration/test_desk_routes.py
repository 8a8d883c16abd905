"""Routes over the real app and the sim engine: sequential rings after a timeout, voicemail
recorded (its WAV's tone asserted), opening hours read against a fixed clock, bad routes."""

from __future__ import annotations

import asyncio
import json
import logging
import wave
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from bridge.agents.deepgram import DeepgramVoiceAgent
from bridge.api.keys import DESK, RECORDINGS
from bridge.audio import tone

from ..fakes.deepgram_agent import FakeDeepgramAgent
from ..fakes.openai_realtime import FakeOpenAIRealtime
from ..support.calls import sim_call, wait_state
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_desk import Agent, incoming
from .test_numbers import bearer, new_tenant
from .test_tenant_isolation import wav_bytes


async def route(client: Any, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    resp = await client.post(
        "/routes", json={"name": "main", "numbers": "default", "steps": steps, **extra}
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def event(sub: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            line = (await sub.content.readline()).decode()
            if line.startswith("data: "):
                body = json.loads(line[6:])
                if body["type"] == kind:
                    return dict(body)


async def test_sequential_rings_the_next_agent_after_a_timeout(client) -> None:
    await route(
        client, [{"ring": {"agents": ["ann", "bob"], "strategy": "sequential", "timeoutS": 0.6}}]
    )
    ann, bob = await Agent.connect(client, "ann"), await Agent.connect(client, "bob")
    call_id = await incoming(client)
    first = await ann.next("ringing")
    loop = asyncio.get_running_loop()
    rang = loop.time()
    stopped = await ann.next("ringing.stopped", timeout=3)
    second = await bob.next("ringing", timeout=3)
    assert first["callID"] == stopped["callID"] == second["callID"] == call_id
    assert 0.5 <= loop.time() - rang <= 1.5
    await bob.send(type="accept", callID=call_id)
    await bob.next("accepted")
    await wait_state(client, call_id, "active")


async def test_nobody_available_moves_on_at_once_to_voicemail(make_client, tmp_path) -> None:
    client = await make_client(sim_peer="tone", sim_tone_hz=660.0, data_dir=str(tmp_path / "data"))
    await route(
        client, [{"ring": {"group": "sales", "timeoutS": 30}}, {"voicemail": {"maxS": 1.5}}]
    )
    sub = await client.get("/call/events")
    call_id = await incoming(client)
    voicemail = await event(sub, "call.voicemail")
    assert voicemail["callID"] == call_id
    assert 1200 <= voicemail["durationMs"] <= 2000
    ended = await event(sub, "call.ended")
    assert ended["callID"] == call_id
    recording = client.app[RECORDINGS].get(voicemail["recordingID"])
    with wave.open(str(recording.path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        rate = w.getframerate()
    assert abs(dominant_frequency(pcm[rate // 5 :], rate) - 660.0) < 15
    resp = await client.get(f"/call/recordings/{voicemail['recordingID']}")
    assert resp.status == 200
    sub.close()


async def test_a_voicemail_nobody_may_record_leaves_the_call_ringing(
    make_client, tmp_path, caplog
) -> None:
    """A voicemail step on a number that forbids recording is refused before the answer: said
    at WARNING with the reason, then the next step (none here: the call rings on for the app).
    Before, the step answered the call and then failed: the caller sat on an answered call
    with nobody, and the app could no longer answer it."""
    caplog.set_level(logging.WARNING)
    client = await make_client(data_dir=str(tmp_path / "data"))
    resp = await client.patch("/numbers/default", json={"recording": "forbidden"})
    assert resp.status == 200, await resp.text()
    await route(client, [{"voicemail": {"maxS": 5}}])
    call_id = await incoming(client)

    def refused() -> list[str]:
        return [r.message for r in caplog.records if "route step voicemail failed" in r.message]

    [said] = await until(refused, timeout=3, what="the voicemail step refused")
    assert "recording is forbidden by number default" in said, said
    snapshot = await (await client.get(f"/call/{call_id}")).json()
    assert snapshot["state"] == "ringing", snapshot
    resp = await client.post("/call/answer", json={"callID": call_id})
    assert resp.status == 200 and (await resp.json())["state"] == "active"


async def test_hours_closed_runs_the_closed_steps(client) -> None:
    # A Monday 20:00 in Paris (19:00 UTC in winter): closed; Monday 10:00: open.
    hours = {
        "timezone": "Europe/Paris",
        "weekly": {"mon": [["09:00", "18:00"]]},
        "closed": [{"hangup": {}}],
    }
    await route(client, [{"ring": {"group": "sales", "timeoutS": 5}}], hours=hours)
    ann = await Agent.connect(client, "ann", ["sales"])
    desk = client.app[DESK]
    desk.clock = lambda: datetime(2025, 1, 6, 19, 0, tzinfo=UTC).timestamp()
    sub = await client.get("/call/events")
    # The closed steps hang up at once (the sim's request may see the call already gone).
    await client.post("/call/sim/incoming", json={"phone": "5521988887777"})
    ended = await event(sub, "call.ended")
    assert ended["call"]["endReason"] == "declined"
    sub.close()
    desk.clock = lambda: datetime(2025, 1, 6, 9, 0, tzinfo=UTC).timestamp()
    open_call = await incoming(client)
    ring = await ann.next("ringing")
    assert ring["callID"] == open_call


async def test_an_agent_dropping_while_ringing_moves_the_call_on(client) -> None:
    await route(client, [{"ring": {"agents": ["ann"], "timeoutS": 60}}, {"hangup": {}}])
    ann = await Agent.connect(client, "ann")
    call_id = await incoming(client)
    await ann.next("ringing")
    loop = asyncio.get_running_loop()
    dropped = loop.time()
    await ann.ws.close()
    await wait_state(client, call_id, "ended", timeout=8)
    assert loop.time() - dropped <= 5.0


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"name": "x", "numbers": "default", "steps": []}, 400, "steps"),
        ({"name": "x", "numbers": ["nope"], "steps": [{"hangup": {}}]}, 400, "numbers"),
        ({"name": "x", "numbers": "default", "steps": [{"ring": {"timeoutS": 5}}]}, 400, "ring"),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"ring": {"group": "a", "strategy": "random"}}],
            },
            400,
            "strategy",
        ),
        ({"name": "x", "numbers": "default", "steps": [{"sip": {"uri": "http://a"}}]}, 400, "uri"),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"sip": {"uri": "sip:a@b", "trunkID": "t"}}],
            },
            400,
            "trunkID",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"sip": {"uri": "sip:a@b", "headers": {"Via": "SIP/2.0/UDP x"}}}],
            },
            400,
            "headers",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"sip": {"uri": "sip:a@b", "headers": {"X-Ok": "a\r\nVia: b"}}}],
            },
            400,
            "headers",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [
                    {"agent": {"provider": "openai-realtime", "url": "ws://x", "apiKey": "k"}}
                ],
            },
            400,
            "apiKey",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"agent": {"provider": "openai-realtime", "url": "ws://model.example"}}],
            },
            403,
            "BRIDGE_FORK_URL_ALLOW",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"agent": {"provider": "x", "url": "ws://y"}}],
            },
            400,
            "provider",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"hangup": {}}],
                "hours": {"timezone": "Mars/Base", "weekly": {"mon": []}},
            },
            400,
            "timezone",
        ),
        (
            {
                "name": "x",
                "numbers": "default",
                "steps": [{"hangup": {}}],
                "hours": {"timezone": "UTC", "weekly": {"mon": [["9", "17:00"]]}},
            },
            400,
            "weekly",
        ),
    ],
)
async def test_bad_routes_name_the_field(client, body, status, field) -> None:
    resp = await client.post("/routes", json=body)
    assert resp.status == status, await resp.text()
    assert field in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(
    "agent, words",
    [
        # Credentials in the URL: refused when a call came (a 400 the caller never saw).
        ({"provider": "openai-realtime", "url": "wss://proxy:pw-0123@127.0.0.1/v1"}, "credentials"),
        # A session the provider's dialect refuses: refused when a call came too.
        (
            {"provider": "gemini-live", "url": "wss://127.0.0.1/ws", "session": {"model": 5}},
            "model",
        ),
        # An ElevenLabs URL naming no agent: refused only when a call came, and only with a
        # key configured (its signed URL names the agent); without one it was dialled as is.
        ({"provider": "elevenlabs", "url": "wss://127.0.0.1/v1/convai/conversation"}, "agent_id"),
    ],
)
async def test_an_agent_step_the_call_would_refuse_is_refused_at_creation(
    make_client, agent, words
) -> None:
    """An ``agent`` step is checked when the route is made by the check a call's agent goes
    through (``POST /call/{callID}/agents``): the same 400 from both. Before, a route whose
    model URL held credentials was stored, and each call it took met the refusal instead."""
    client = await make_client(fork_url_allow=("127.0.0.1",))
    body = {"name": "x", "numbers": "default", "steps": [{"agent": agent}]}
    resp = await client.post("/routes", json=body)
    error = (await resp.json())["error"]
    assert resp.status == 400 and words in error["message"], error
    assert "pw-0123" not in error["message"], error
    assert (await (await client.get("/routes")).json())["routes"] == []
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    at_call = await client.post(f"/call/{call['callID']}/agents", json=agent)
    refused = (await at_call.json())["error"]
    assert at_call.status == 400 and refused["code"] == error["code"], refused
    assert words in refused["message"], refused
    await client.post("/call/hangup", json={"callID": call["callID"]})


async def test_a_tenant_has_at_most_max_routes(make_client) -> None:
    """Each POST /routes stored a route with no bound, and every ringing call reads its
    tenant's routes: past BRIDGE_MAX_ROUTES a 409 says why; a deleted route's place counts
    again."""
    client = await make_client(max_routes=2)
    made = [await route(client, [{"hangup": {}}]) for _ in range(2)]
    body = {"name": "third", "numbers": "default", "steps": [{"hangup": {}}]}
    resp = await client.post("/routes", json=body)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "too_many_routes", error
    assert "BRIDGE_MAX_ROUTES" in error["message"], error
    assert len((await (await client.get("/routes")).json())["routes"]) == 2
    assert (await client.delete(f"/routes/{made[0]['routeID']}")).status == 200
    await route(client, [{"hangup": {}}])


async def test_routes_are_listed_read_and_deleted(client) -> None:
    made = await route(client, [{"hangup": {}}])
    listed = await (await client.get("/routes")).json()
    assert [r["routeID"] for r in listed["routes"]] == [made["routeID"]]
    assert (await (await client.get(f"/routes/{made['routeID']}")).json())["name"] == "main"
    assert (await client.delete(f"/routes/{made['routeID']}")).status == 200
    assert (await client.get(f"/routes/{made['routeID']}")).status == 404


async def test_a_route_ending_in_a_model_agent(make_client, aiohttp_server) -> None:
    """Nobody in the ring group: the ``agent`` step answers the call and puts the model agent
    on it (the configured key: a route keeps none); the model hears the caller's 660 Hz and
    the caller hears the model's 440 Hz."""
    key = "sk-route-0123456789"
    fake = FakeOpenAIRealtime(api_key=key)
    server = await aiohttp_server(fake.app())
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=660.0,
        fork_url_allow=("127.0.0.1",),
        agent_openai_api_key=key,
    )
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
    agent = {"provider": "openai-realtime", "url": url, "session": {"instructions": "Hi."}}
    made = await route(client, [{"ring": {"group": "sales", "timeoutS": 30}}, {"agent": agent}])
    assert made["steps"][1]["agent"] == agent
    sub = await client.get("/call/events")
    call_id = await incoming(client)
    connected = await event(sub, "agent.connected")
    assert connected["callID"] == call_id
    await wait_state(client, call_id, "active")
    assert fake.headers[0]["Authorization"] == f"Bearer {key}"
    assert fake.sessions[0]["instructions"] == "Hi."
    await until(lambda: fake.heard.size >= 24_000, timeout=5)
    assert abs(dominant_frequency(fake.heard[-24_000:], 24_000) - 660.0) < 5
    sc = sim_call(client, call_id)
    n0 = sc.frames_heard
    await fake.say(tone(440, 24_000, 24_000, 0.25))
    await until(lambda: sc.frames_heard - n0 >= 60, timeout=5)
    said = [f for f in list(sc.heard)[-(sc.frames_heard - n0) :] if np.abs(f).max() > 1000]
    assert len(said) >= 40
    assert abs(dominant_frequency(np.concatenate(said[5:-5]), 16_000) - 440.0) < 5
    snap = await (await client.get(f"/call/{call_id}")).json()
    assert [a["provider"] for a in snap["agents"]] == ["openai-realtime"]
    sub.close()
    # Hung up before the fake model's server closes (it waits for the agent's socket).
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    await wait_state(client, call_id, "ended")


async def test_an_agent_step_without_url_takes_the_providers_default(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """A route's ``agent`` step and a call's agent agree on ``url``: optional where the
    provider has a default endpoint (the step runs the model there), required where it has
    none (the same 400 from ``POST /routes`` as from ``POST /call/{callID}/agents``). Before,
    the step required a ``url`` whatever the provider."""
    key = "dg-route-0123456789"
    fake = FakeDeepgramAgent(api_key=key)
    server = await aiohttp_server(fake.app())
    # The provider's own endpoint, moved to the fake on loopback.
    default = f"ws://127.0.0.1:{server.port}/v1/agent/converse"
    monkeypatch.setattr(DeepgramVoiceAgent, "default_url", default)
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=660.0,
        fork_url_allow=("127.0.0.1",),
        agent_deepgram_api_key=key,
    )
    refused = {}
    for provider in ("openai-realtime", "gemini-live", "azure-voice-live", "elevenlabs"):
        body = {"name": "x", "numbers": "default", "steps": [{"agent": {"provider": provider}}]}
        resp = await client.post("/routes", json=body)
        refused[provider] = (await resp.json())["error"]
        assert resp.status == 400, refused[provider]
        assert "steps.agent.url' is required" in refused[provider]["message"], refused[provider]
    made = await route(client, [{"agent": {"provider": "deepgram"}}])
    assert made["steps"] == [{"agent": {"provider": "deepgram"}}]
    sub = await client.get("/call/events")
    call_id = await incoming(client)
    assert (await event(sub, "agent.connected"))["callID"] == call_id
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    assert abs(dominant_frequency(fake.heard[-16_000:], 16_000) - 660.0) < 5
    sub.close()
    for provider, error in refused.items():
        at_call = await client.post(f"/call/{call_id}/agents", json={"provider": provider})
        said = (await at_call.json())["error"]
        assert at_call.status == 400 and said["code"] == error["code"], said
        assert "field 'url' is required" in said["message"], said
    assert (await client.post("/call/hangup", json={"callID": call_id})).status == 200
    await wait_state(client, call_id, "ended")


async def test_a_route_plays_only_its_tenants_audio(make_client, tmp_path) -> None:
    """A tenant's route names its own audio assets (or the service's): another tenant's asset
    in a ``play`` or a voicemail ``greeting`` is 400 at ``POST /routes`` (before, 201, and that
    tenant's private audio was played to this tenant's callers)."""
    client = await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path))
    acme, globex = await new_tenant(client, "Acme"), await new_tenant(client, "Globex")
    acme_key, globex_key = bearer(acme["apiKey"]), bearer(globex["apiKey"])
    resp = await client.post("/call/audio-assets", data={"audio": wav_bytes()}, headers=acme_key)
    asset = (await resp.json())["assetId"]
    for steps in (
        [{"play": {"assetId": asset}}],
        [{"voicemail": {"greeting": asset}}],
        [{"play": {"assetId": "no-such-asset"}}],
    ):
        body = {"name": "x", "numbers": "default", "steps": steps}
        resp = await client.post("/routes", json=body, headers=globex_key)
        assert resp.status == 400, (steps, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == "unknown_asset" and "steps" in error["message"]
        assert asset not in error["message"] or asset in json.dumps(steps)
    closed = {"timezone": "UTC", "weekly": {"mon": [["09:00", "17:00"]]}}
    closed["closed"] = [{"play": {"assetId": asset}}]
    body = {"name": "x", "numbers": "default", "steps": [{"hangup": {}}], "hours": closed}
    assert (await client.post("/routes", json=body, headers=globex_key)).status == 400
    body = {"name": "x", "numbers": "default", "steps": [{"play": {"assetId": asset}}]}
    assert (await client.post("/routes", json=body, headers=acme_key)).status == 201
    # The service's token sees every asset, but one that does not exist is refused as well
    # (before, 201, and the voicemail's greeting failed when a call came).
    for steps in ([{"voicemail": {"greeting": "as_missing"}}], [{"play": {"assetId": "x"}}]):
        body = {"name": "x", "numbers": "default", "steps": steps}
        resp = await client.post("/routes", json=body, headers=bearer("admin-token"))
        assert resp.status == 400, (steps, await resp.text())
        assert (await resp.json())["error"]["code"] == "unknown_asset"


async def test_an_agent_listed_twice_is_rung_once(client) -> None:
    """A ring step's ``agents`` listing an agent twice rings it once: before, a sequential ring
    rang it again after it declined, for the step's whole timeout, before the next agent."""
    shown = await route(
        client,
        [{"ring": {"agents": ["ann", "ann", "bob"], "strategy": "sequential", "timeoutS": 30}}],
    )
    assert shown["steps"][0]["ring"]["agents"] == ["ann", "bob"]
    ann, bob = await Agent.connect(client, "ann"), await Agent.connect(client, "bob")
    call_id = await incoming(client)
    await ann.next("ringing")
    await ann.send(type="decline", callID=call_id)
    await ann.next("ringing.stopped")
    assert (await bob.next("ringing", timeout=3))["callID"] == call_id
    await bob.send(type="accept", callID=call_id)
    await bob.next("accepted")
    await wait_state(client, call_id, "active")


async def test_a_route_read_after_the_app_answered_is_not_run(client, caplog) -> None:
    """The store answers a ringing call's route read late (Redis stalled, then back) and the
    app answered the call meanwhile: the route is not run on it, said at INFO. Before, its
    ring step rang the agents for a call the app had taken."""
    caplog.set_level(logging.INFO, logger="bridge.desk.starting")
    await route(client, [{"ring": {"agents": ["ann"], "timeoutS": 30}}])
    ann = await Agent.connect(client, "ann")
    desk = client.app[DESK]
    store = desk.store
    read, asked, answered = store.routes, asyncio.Event(), asyncio.Event()

    async def late() -> list[dict[str, Any]]:
        asked.set()
        await answered.wait()
        return await read()

    store.routes = late  # type: ignore[method-assign]
    call_id = await incoming(client)
    await asyncio.wait_for(asked.wait(), 5)
    assert (await client.post("/call/answer", json={"callID": call_id})).status == 200
    answered.set()
    run = desk.run_of(call_id)  # attached before the read, which it runs in its first turn
    await until(
        lambda: any("route not run" in r.getMessage() for r in caplog.records) or not run.reading,
        3,
        "the route's read to come back",
    )
    assert desk.run_of(call_id) is None, "the route ran on the call the app answered"
    await ann.send(type="ping")
    heard = []
    async with asyncio.timeout(5):
        while (kind := json.loads((await ann.ws.receive()).data)["type"]) != "pong":
            heard.append(kind)
    assert "ringing" not in heard, heard
    assert (await wait_state(client, call_id, "active"))["state"] == "active"
