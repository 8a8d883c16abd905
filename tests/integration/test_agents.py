"""Realtime model agents (``POST /call/{callID}/agents``) against strict fakes of the models'
public protocols: the caller's audio reaches the model at its rate, the model's voice reaches
the WhatsApp user, barge-in cuts it and tells the model what was heard, the key stays secret."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import numpy as np
import pytest

from bench.agents import ADAPTERS as AGENT_BENCH
from bridge.api.keys import MANAGER
from bridge.audio import rms_dbfs, tone

from ..fakes.openai_realtime import FakeOpenAIRealtime
from ..support.agents import attach_agent
from ..support.calls import sim_call
from ..support.closes import cancel_mid_teardown
from ..support.spectrum import dominant_frequency
from ..support.waits import settled, until
from . import test_webhooks
from .test_streams import active_call

receiver = test_webhooks.receiver  # the webhook receiver fixture
KEY = "sk-test-secret-0123456789"


async def openai_agent(make_client, aiohttp_server, **settings):
    fake = FakeOpenAIRealtime(api_key=KEY)
    server = await aiohttp_server(fake.app())
    client = await make_client(fork_url_allow=("127.0.0.1",), **settings)
    call = await active_call(client)
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
    return fake, client, call, url


def loud(frames: list[np.ndarray], floor: int = 1000) -> list[np.ndarray]:
    return [f for f in frames if np.abs(f).max() > floor]


async def next_event(sub, type_: str, timeout: float = 5.0):
    while True:
        event = await sub.get(timeout)
        assert event is not None
        if event.type == type_:
            return event


async def test_openai_audio_both_ways_and_the_key_is_never_shown(
    make_client, aiohttp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    cid = call["callID"]
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.post(
            f"/call/{cid}/agents",
            json={
                "provider": "openai-realtime",
                "url": url,
                "apiKey": KEY,
                "session": {"instructions": "Be brief.", "voice": "marin"},
            },
        )
        assert resp.status == 201, await resp.text()
        started = await resp.json()
        connected = await next_event(sub, "agent.connected")
    agent_id = started["agentID"]
    assert started["provider"] == "openai-realtime" and started["state"] == "connected"
    assert connected.data["agentID"] == agent_id
    assert fake.headers[0]["Authorization"] == f"Bearer {KEY}"
    # The app's session fields merged into the bridge's; the voice where GA has it.
    (session,) = fake.sessions
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
    # The caller's 660 Hz reaches the model at 24 kHz, at the level the caller sent it.
    await until(lambda: fake.heard.size >= 24_000, timeout=5)
    up = fake.heard[-24_000:]
    assert dominant_frequency(up, 24_000) == pytest.approx(660, abs=3)
    assert rms_dbfs(up) == pytest.approx(rms_dbfs(tone(660, 16_000, 16_000, 0.3)), abs=0.5)
    # The model's 440 Hz (1 s at 24 kHz, sent faster than real time) reaches the caller.
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 24_000, 24_000, 0.25))
        said = await next_event(sub, "agent.transcript")
    assert (said.data["role"], said.data["text"]) == ("agent", "a tone")
    await until(lambda: sc.frames_heard - n0 >= 70, timeout=5)
    down = loud(list(sc.heard)[-(sc.frames_heard - n0) :])
    assert 48 <= len(down) <= 51  # one second of voice, whole frames
    pcm = np.concatenate(down[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(440, 16_000, 16_000, 0.25)), abs=0.5)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["agents"] == [
        {
            "agentID": agent_id,
            "provider": "openai-realtime",
            "url": url.split("?")[0],
            "state": "connected",
            "reconnects": 0,
            "interruptions": 0,
            "callerAudioDroppedMs": 0,
            "modelMessagesDropped": 0,
        }
    ]
    resp = await client.delete(f"/call/{cid}/agents/{agent_id}")
    assert resp.status == 200 and (await resp.json()) == {"agentID": agent_id, "stopped": True}
    assert (await (await client.get(f"/call/{cid}")).json())["agents"] == []
    assert (await client.delete(f"/call/{cid}/agents/{agent_id}")).status == 404
    assert fake.errors == []
    assert KEY not in caplog.text and KEY not in json.dumps(snap)


async def agent_on_a_talking_call(make_client, aiohttp_server):
    """An OpenAI agent on a call whose caller talks (a 200 Hz tone at -9 dBFS: louder than any
    echo of the agent's voice). Returns the fake model, the client, the call id and the
    simulated call."""
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=200.0
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    return fake, client, cid, sim_call(client, cid)


async def agent_talking(make_client, aiohttp_server, frames: int):
    """:func:`agent_on_a_talking_call`, its 5 s answer (440 Hz) playing: ``frames`` of it
    heard. Returns the fake model, the client, the call id, the simulated call, its frame
    count before the answer and the answer's item id."""
    fake, client, cid, sc = await agent_on_a_talking_call(make_client, aiohttp_server)
    n0 = sc.frames_heard
    item = await fake.say(tone(440, 5 * 24_000, 24_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= frames, timeout=5)
    return fake, client, cid, sc, n0, item


async def test_barge_in_cuts_the_voice_and_truncates_what_was_heard(
    make_client, aiohttp_server
) -> None:
    # A 5 s answer arrives at once; the caller talks over it after about a second.
    fake, client, cid, sc, n0, item = await agent_talking(make_client, aiohttp_server, 40)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.speech_started()
        speech = await next_event(sub, "agent.speech.started")
        cut = await next_event(sub, "agent.interrupted")
        heard_before = sc.frames_heard  # the cut is made where the event is published
        await fake.late_delta(item, tone(440, 12_000, 24_000, 0.25))  # in flight: not played
    assert speech.data["echo"] is False
    await until(lambda: len(fake.truncates) == 1, timeout=3)
    await asyncio.sleep(0.3)
    played = loud(list(sc.heard)[-(sc.frames_heard - n0) :])
    after = loud(list(sc.heard)[-(sc.frames_heard - heard_before) :])
    assert len(after) <= 2  # stopped at the caller within two frames
    (truncate,) = fake.truncates
    assert truncate["item_id"] == item
    assert truncate["audio_end_ms"] == cut.data["heardMs"]
    # What the model is told was heard is what the caller really heard (within 40 ms).
    assert abs(truncate["audio_end_ms"] - len(played) * 20) <= 40
    assert cut.data["droppedMs"] >= 2000
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})  # the agent leaves with the call
    await until(lambda: fake.ws is not None and fake.ws.closed, timeout=3)


async def test_a_barge_in_during_a_preamble_truncates_it_and_the_answer_queued_after_it(
    make_client, aiohttp_server
) -> None:
    """A reasoning model (``gpt-realtime-2``) may speak a preamble before its answer: two
    audio items in one response, the answer's sent while the preamble still plays. A caller
    who talks over the preamble cut that item where they stopped hearing it, and the answer
    none of which they heard at 0 ms: the model is told of both (once, the item it cut being
    the one the caller heard)."""
    fake, client, _cid, sc = await agent_on_a_talking_call(make_client, aiohttp_server)
    n0 = sc.frames_heard
    preamble, answer = await fake.say_items(
        [tone(440, 2 * 24_000, 24_000, 0.25), tone(440, 2 * 24_000, 24_000, 0.25)]
    )
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 25, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.speech_started()
        cut = await next_event(sub, "agent.interrupted")
    await until(lambda: len(fake.truncates) == 2, timeout=3)
    played = loud(list(sc.heard)[-(sc.frames_heard - n0) :])
    first, second = fake.truncates
    assert (first["item_id"], second["item_id"]) == (preamble, answer)
    assert first["audio_end_ms"] == cut.data["heardMs"] and cut.data["itemID"] == preamble
    assert abs(first["audio_end_ms"] - len(played) * 20) <= 40
    assert second["audio_end_ms"] == 0
    assert cut.data["droppedMs"] >= 2000
    assert fake.errors == []


async def test_on_hold_the_agent_neither_speaks_to_nor_hears_the_caller(
    make_client, aiohttp_server
) -> None:
    """Hold cuts the agent's voice as a barge-in would (the model told what was heard), drops
    what the model says meanwhile (truncated at 0 ms; its transcript is still told: the
    record of what the model said) and sends the model none of the caller; taking the call
    off hold brings both back."""
    fake, client, cid, sc, n0, item = await agent_talking(make_client, aiohttp_server, 25)
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.post("/call/hold", json={"callID": cid, "held": True})
        assert resp.status == 200
        held_at = sc.frames_heard  # held when the request is answered
        cut = await next_event(sub, "agent.interrupted")
    assert cut.data["by"] == "hold" and cut.data["droppedMs"] >= 2000
    await until(lambda: len(fake.truncates) == 1, timeout=3)
    assert fake.truncates[0]["item_id"] == item
    played = loud(list(sc.heard)[-(sc.frames_heard - n0) :])
    assert abs(fake.truncates[0]["audio_end_ms"] - len(played) * 20) <= 40
    # Held: what the model says is not played (and the model is told none was heard) ...
    up_held = await settled(lambda: fake.heard.size, 0.3, 5, "the caller's audio sent before hold")
    async with client.app[MANAGER].events.subscribe() as sub:
        second = await fake.say(tone(880, 24_000, 24_000, 0.25), transcript="while held")
        told = await next_event(sub, "agent.transcript")
    assert (told.data["role"], told.data["text"]) == ("agent", "while held")
    await until(lambda: len(fake.truncates) == 2, timeout=3)
    assert fake.truncates[1] == {**fake.truncates[1], "item_id": second, "audio_end_ms": 0}
    await asyncio.sleep(0.6)
    assert len(loud(list(sc.heard)[-(sc.frames_heard - held_at) :])) <= 2
    # ... and the caller (still talking: 200 Hz) does not reach the model.
    assert fake.heard.size == up_held
    # Off hold: the caller is heard again and the model's voice plays.
    assert (await client.post("/call/hold", json={"callID": cid, "held": False})).status == 200
    await until(lambda: fake.heard.size >= up_held + 12_000, timeout=5)
    assert dominant_frequency(fake.heard[-12_000:], 24_000) == pytest.approx(200, abs=3)
    n1 = sc.frames_heard
    await fake.say(tone(660, 24_000, 24_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n1) :])) >= 45, timeout=5)
    pcm = np.concatenate(loud(list(sc.heard)[-(sc.frames_heard - n1) :])[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(660, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(660, 16_000, 16_000, 0.25)), abs=0.5)
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})  # the agent leaves with the call
    await until(lambda: fake.ws is not None and fake.ws.closed, timeout=3)


async def test_a_dropped_model_socket_is_reopened_while_the_call_goes_on(
    make_client, aiohttp_server
) -> None:
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0, agent_retries=2
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    agent_id = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]
    sc = sim_call(client, cid)
    await fake.say(tone(440, 2400, 24_000, 0.25), transcript="hello there")
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        back = await next_event(sub, "agent.reconnected")
        assert back.data["agentID"] == agent_id and back.data["resumed"] is False
        assert fake.connections == 2 and len(fake.sessions) == 2  # configured again
        # The new session is told what was said on the old one.
        await until(lambda: any(e["type"] == "conversation.item.create" for e in fake.events))
        told = next(e for e in fake.events if e["type"] == "conversation.item.create")
        assert told["item"]["role"] == "system"
        assert "You: hello there" in told["item"]["content"][0]["text"]
        # Audio flows again both ways on the new socket.
        n0 = len(fake.chunks)
        await until(lambda: len(fake.chunks) - n0 >= 25, timeout=3)
        assert dominant_frequency(fake.heard[-12_000:], 24_000) == pytest.approx(660, abs=4)
        f0 = sc.frames_heard
        await fake.say(tone(440, 12_000, 24_000, 0.25))
        await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - f0) :])) >= 24, timeout=3)
        # Then the server goes away for good: bounded retries, agent.failed, the call stays.
        fake.refuse = True
        await fake.drop()
        failed = await next_event(sub, "agent.failed", timeout=10)
    assert failed.data["reason"] == "reconnect_failed" and failed.data["attempts"] == 2
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active"
    assert snap["agents"][0]["state"] == "failed" and snap["agents"][0]["reconnects"] == 1
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


@pytest.mark.parametrize("says_something", [False, True])
async def test_a_model_that_drops_each_session_at_once_uses_up_the_retries(
    make_client, aiohttp_server, says_something: bool
) -> None:
    """A server that takes each session and closes it straight away (``says_something``:
    after a word on each): every reopening "succeeds", yet the retries count on until a socket
    works, then agent.failed (rather than reopening it forever, a WARNING each time); the call
    goes on. Before, a word reset the retries and the next attempt came at once: the model was
    reopened forever, as fast as it answered."""
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=2
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    fake.drop_configured = True
    fake.say_before_drop = says_something
    async with client.app[MANAGER].events.subscribe() as sub:
        assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
        failed = await next_event(sub, "agent.failed", timeout=10)
    assert failed.data["attempts"] == 2 and fake.connections == 3  # the first and 2 retries
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"][0]["state"] == "failed"
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_the_agents_echo_is_no_barge_in(make_client, aiohttp_server, monkeypatch) -> None:
    # The WhatsApp user's phone is on speaker: it sends back what it hears 120 ms later,
    # 20 dB down. The model's VAD takes it for speech; the bridge knows better.
    from bridge.engines.sim import SimMediaChannel

    echo = SimMediaChannel._echo
    monkeypatch.setattr(
        SimMediaChannel, "_echo", lambda self, at: (echo(self, at) * 0.1).astype(np.int16)
    )
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="echo", sim_echo_delay=0.12
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    sc = sim_call(client, cid)
    voice = speech_24k()
    n0 = sc.frames_heard
    await fake.say(voice)
    await until(lambda: sc.frames_heard - n0 >= 60, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.speech_started()
        started = await next_event(sub, "agent.speech.started")
    assert started.data["echo"] is True and started.data["agentPlaying"] is True, str(started.data)
    assert started.data["callerDbfs"] < started.data["agentDbfs"] - 10
    await asyncio.sleep(0.3)
    assert fake.truncates == []
    runtime = client.app[MANAGER].runtime(cid)
    assert runtime.attached("agent")[0].interruptions == 0
    assert rms_dbfs(np.concatenate(list(sc.heard)[-10:])) > -40  # the agent still talks
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


def speech_24k() -> np.ndarray:
    """Four seconds of espeak-ng speech at 24 kHz (a model's voice)."""
    from bench.speech import missing_tools, speech

    if missing_tools():
        pytest.skip("espeak-ng, sox or pesq missing")
    from bridge.audio import Resampler

    return Resampler(24_000).resample_array(speech(4.0, level_dbfs=-18.0), 16_000)


async def test_gemini_live_audio_interruption_and_resumption(
    make_client, aiohttp_server, caplog
) -> None:
    from ..fakes.gemini_live import PATH, FakeGeminiLive

    fake = FakeGeminiLive(api_key="g-secret")
    server = await aiohttp_server(fake.app())
    client = await make_client(
        fork_url_allow=("127.0.0.1",),
        sim_peer="tone",
        sim_tone_hz=500.0,
        agent_gemini_api_key="g-secret",  # the configured default key
    )
    call = await active_call(client)
    cid = call["callID"]
    body = {
        "provider": "gemini-live",
        "url": f"ws://127.0.0.1:{server.port}{PATH}",
        "session": {"model": "gemini-live-test", "systemInstruction": {"parts": [{"text": "Hi"}]}},
    }
    resp = await client.post(f"/call/{cid}/agents", json=body)
    assert resp.status == 201, await resp.text()
    assert fake.setups[0]["model"] == "models/gemini-live-test"
    assert fake.setups[0]["systemInstruction"] == {"parts": [{"text": "Hi"}]}
    # The caller's 500 Hz goes up at the bus's own 16 kHz, as Gemini takes it natively.
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    assert fake.rates == {16_000}
    assert dominant_frequency(fake.heard[-16_000:], 16_000) == pytest.approx(500, abs=3)
    # The model's 24 kHz 440 Hz reaches the caller; `interrupted` cuts it within two frames.
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    await fake.say(tone(440, 3 * 24_000, 24_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 30, timeout=5)
    pcm = np.concatenate(loud(list(sc.heard)[-(sc.frames_heard - n0) :])[5:25])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.interrupt()
        cut = await next_event(sub, "agent.interrupted")
        mark = sc.frames_heard  # the cut is made where the event is published
        await asyncio.sleep(0.3)
        assert len(loud(list(sc.heard)[-(sc.frames_heard - mark) :])) <= 2
        assert cut.data["droppedMs"] >= 1000
        # goAway: the bridge reconnects with the last resumption handle; the call goes on.
        caplog.clear()
        caplog.set_level(logging.INFO, logger="bridge.agents")
        await fake.go_away()
        back = await next_event(sub, "agent.reconnected")
    assert back.data["resumed"] is True and fake.resumed == ["h1"]
    # A session's planned end (every ~10 minutes) is no failure: not said as a drop.
    said = [r.getMessage() for r in caplog.records if r.name.startswith("bridge.agents")]
    assert any("goAway" in line for line in said), said
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], said
    n1 = len(fake.chunks)
    await until(lambda: len(fake.chunks) - n1 >= 10, timeout=3)
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_tools_the_bridge_answers_and_the_apps_and_key_presses(
    make_client, aiohttp_server
) -> None:
    from .test_twilio_streams import press_on_whatsapp

    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {
        "provider": "openai-realtime",
        "url": url,
        "apiKey": KEY,
        "session": {"tools": [{"type": "function", "name": "lookup_order", "parameters": {}}]},
        "bridgeTools": ["dtmf", "hangup", "hold"],
    }
    agent_id = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]
    tools = [t["name"] for t in fake.sessions[0]["tools"]]
    # Announced only when asked for.
    assert tools == ["lookup_order", "send_dtmf", "hang_up", "hold_call"]
    async with client.app[MANAGER].events.subscribe() as sub:
        # A tool of the app's: an event, answered through the API, passed to the model.
        await fake.tool_call("lookup_order", {"order": "A12"}, "call_1")
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["toolCallID"] == "call_1" and asked.data["arguments"] == {"order": "A12"}
        path = f"/call/{cid}/agents/{agent_id}/tools"
        resp = await client.post(path, json={"toolCallID": "call_1", "output": {"status": "sent"}})
        assert resp.status == 200
        assert (await client.post(path, json={"toolCallID": "call_1", "output": 1})).status == 404
        await until(lambda: any(e["type"] == "response.create" for e in fake.events), timeout=3)
        output = next(e for e in fake.events if e["type"] == "conversation.item.create")
        assert output["item"] == {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": '{"status": "sent"}',
        }
        # The bridge's own DTMF tool: the keys go out on the call.
        await fake.tool_call("send_dtmf", {"digits": "12"}, "call_2")
        sent = await next_event(sub, "call.dtmf.sent")
        assert sent.data["digits"] == "12" and sent.data["source"] == "agent"
        # The bridge's hold tool holds the caller.
        await fake.tool_call("hold_call", {"held": True}, "call_h")
        await next_event(sub, "call.held")
        await fake.tool_call("hold_call", {"held": False}, "call_u")
        await next_event(sub, "call.unheld")
        # A key the caller pressed reaches the model as text (the call no longer held).
        press_on_whatsapp(client, "5")
        await until(
            lambda: any(
                e["type"] == "conversation.item.create"
                and e["item"].get("role") == "user"
                and "5" in e["item"]["content"][0]["text"]
                for e in fake.events
            ),
            timeout=3,
        )
        # The bridge's hang-up tool ends the call.
        await fake.tool_call("hang_up", {}, "call_3")
        ended = await next_event(sub, "call.ended")
    assert ended.call["endReason"] == "hangup"
    assert fake.errors == []


async def agent_with_a_tool(make_client, aiohttp_server):
    """An OpenAI Realtime agent on an active call, with one tool of the app's: (fake, client)."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    body = {
        "provider": "openai-realtime",
        "url": url,
        "apiKey": KEY,
        "session": {"tools": [{"type": "function", "name": "lookup_order", "parameters": {}}]},
    }
    assert (await client.post(f"/call/{call['callID']}/agents", json=body)).status == 201
    return fake, client


async def test_tool_calls_the_app_leaves_waiting_past_the_bound_are_said(
    make_client, aiohttp_server, caplog
) -> None:
    """An app that does not answer its tool calls: past MAX_PENDING waiting, the model's next
    calls are answered as failed — said once at WARNING, with why (before, silently: no
    event, no log, a model whose tools all failed)."""
    from bridge.agents.tools import MAX_PENDING

    fake, client = await agent_with_a_tool(make_client, aiohttp_server)
    async with client.app[MANAGER].events.subscribe() as sub:
        for n in range(MAX_PENDING):
            await fake.tool_call("lookup_order", {"n": n}, f"call_{n}")
        for _ in range(MAX_PENDING):
            await next_event(sub, "agent.tool_call")
    for n in range(MAX_PENDING, MAX_PENDING + 2):
        await fake.tool_call("lookup_order", {"n": n}, f"call_{n}")

    def outputs() -> list[dict]:
        items = [e["item"] for e in fake.events if e["type"] == "conversation.item.create"]
        return [i for i in items if i["type"] == "function_call_output"]

    await until(lambda: len(outputs()) == 2, timeout=3)
    assert [i["call_id"] for i in outputs()] == [f"call_{MAX_PENDING}", f"call_{MAX_PENDING + 1}"]
    assert all("too many tool calls waiting" in i["output"] for i in outputs())
    said = [r for r in caplog.records if "wait for the app's answer" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert fake.errors == []


async def test_a_tool_call_with_its_arguments_as_an_object_is_taken(
    make_client, aiohttp_server
) -> None:
    """The Realtime protocol sends a function call's ``arguments`` as JSON text; a server of
    the family that sends them as an object is understood as well. Before, ``json.loads`` of
    an object raised ``TypeError`` out of the agent's reading loop: the agent was dead from
    then on (no audio, no tools, no ``agent.failed``) while the call went on."""
    fake, client = await agent_with_a_tool(make_client, aiohttp_server)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "B7"}, "call_object", as_text=False)
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["toolCallID"] == "call_object"
        assert asked.data["arguments"] == {"order": "B7"}
        await fake.tool_call("lookup_order", {"order": "A12"}, "call_text")  # and on it goes
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["toolCallID"] == "call_text"


async def test_a_message_the_bridge_fails_on_costs_that_message_only(
    make_client, aiohttp_server, monkeypatch, caplog
) -> None:
    """A bug met on one of the model's messages (here a dialect that raises on one kind) is
    logged once and the next messages are served: before, it ended the agent's reading loop
    for the rest of the call, with no ``agent.failed`` either."""
    from bridge.agents.openai import OpenAIRealtime

    parse = OpenAIRealtime.parse

    def failing(self: OpenAIRealtime, body: dict) -> list:
        if body.get("type") == "rate_limits.updated":
            raise KeyError("rate_limits")
        return parse(self, body)

    monkeypatch.setattr(OpenAIRealtime, "parse", failing)
    fake, client = await agent_with_a_tool(make_client, aiohttp_server)
    async with client.app[MANAGER].events.subscribe() as sub:
        assert fake.ws is not None
        for _ in range(2):
            await fake._send(fake.ws, {"type": "rate_limits.updated", "rate_limits": []})
        await fake.tool_call("lookup_order", {"order": "A12"}, "call_after")
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["toolCallID"] == "call_after"
    failures = [r for r in caplog.records if "not handled" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_a_message_the_bridge_fails_on_while_a_session_opens_costs_that_message_only(
    make_client, aiohttp_server, monkeypatch, caplog
) -> None:
    """The same bug met while a session opens (here on ``session.created``, before the model
    took the configuration): the message is skipped and the session opens, at the start and
    on a reopened socket. Before, it escaped the opening: the request was answered 500, and
    a reconnection's ended the agent's runner, the agent left reconnecting for good."""
    from bridge.agents.openai import OpenAIRealtime

    parse = OpenAIRealtime.parse

    def failing(self: OpenAIRealtime, body: dict) -> list:
        if body.get("type") == "session.created":
            raise KeyError("session")
        return parse(self, body)

    monkeypatch.setattr(OpenAIRealtime, "parse", failing)
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    resp = await client.post(f"/call/{cid}/agents", json=body)
    assert resp.status == 201, await resp.text()
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        await next_event(sub, "agent.reconnected")
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["agents"][0]["state"] == "connected"
    failures = [r for r in caplog.records if "not handled" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


@pytest.mark.parametrize("where", ["opening", "context"])
async def test_a_bug_met_as_a_session_reopens_fails_the_agent_rather_than_leave_it_hanging(
    make_client, aiohttp_server, monkeypatch, caplog, where: str
) -> None:
    """A bug met while the model's socket is reopened (the dialect's set-up of a second
    session raising, or its recap of what was said once that session opened) ends in
    ``agent.failed`` and the fallback, said once with its traceback, the new socket closed:
    before, it ended the connection's runner, and the agent stayed ``reconnecting`` for the
    rest of the call, holding the call's one agent place, with no ``agent.failed``."""
    from bridge.agents.openai import OpenAIRealtime

    real = getattr(OpenAIRealtime, where)
    calls = 0

    def failing(self: OpenAIRealtime, *args: object) -> list:
        nonlocal calls
        calls += 1
        if calls > (1 if where == "opening" else 0):
            raise KeyError("a bug")
        return real(self, *args)

    monkeypatch.setattr(OpenAIRealtime, where, failing)
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        failed = await next_event(sub, "agent.failed")
    assert failed.data["reason"] == "reconnect_failed"
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"][0]["state"] == "failed"
    said = [r for r in caplog.records if "connection failed" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None
    await until(lambda: fake.ws is not None and fake.ws.closed, timeout=3)
    await client.post("/call/hangup", json={"callID": cid})


async def test_agent_events_reach_the_app_as_signed_webhooks(
    make_client, aiohttp_server, receiver
) -> None:
    from standardwebhooks import Webhook

    from .test_webhooks import SECRET, hooks

    fake = FakeOpenAIRealtime(api_key=KEY)
    server = await aiohttp_server(fake.app())
    client = await make_client(
        fork_url_allow=("127.0.0.1",),
        sim_peer="silence",
        agent_openai_api_key=KEY,  # the configured default: no key in the request
        **hooks(webhook_url=receiver.url("ok")),
    )
    call = await active_call(client)
    cid = call["callID"]
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=m"
    resp = await client.post(
        f"/call/{cid}/agents", json={"provider": "openai-realtime", "url": url}
    )
    assert resp.status == 201
    await fake.tool_call("lookup_order", {"order": "A12"}, "call_9")
    await client.post("/call/hangup", json={"callID": cid})
    await receiver.wait_for("ok", 6)
    kinds = [e["type"] for e in receiver.events("ok")]
    assert (
        kinds.index("agent.connected") < kinds.index("agent.tool_call") < kinds.index("call.ended")
    )
    for req in receiver.requests:
        assert Webhook(SECRET).verify(req["body"], req["headers"])
        assert KEY not in req["body"]
    tool = next(e for e in receiver.events("ok") if e["type"] == "agent.tool_call")
    assert (
        tool["name"] == "lookup_order"
        and tool["call"]["agents"][0]["provider"] == "openai-realtime"
    )


def test_every_agent_event_is_documented() -> None:
    from bridge.agents import events
    from bridge.api.schema import openapi_document

    schema = openapi_document()["components"]["schemas"]["CallEvent"]
    assert set(events.ALL) <= set(schema["properties"]["type"]["examples"])


async def test_with_the_models_vad_off_the_bridge_hears_the_turns(
    make_client, aiohttp_server, monkeypatch
) -> None:
    from bench.speech import missing_tools, speech
    from bridge.engines.sim import SimMediaChannel

    if missing_tools():
        pytest.skip("espeak-ng, sox or pesq missing")
    said = speech(2.0, level_dbfs=-20.0)  # a Harvard sentence between pauses, 16 kHz
    talk: list[np.ndarray] = []

    def produce(self, at: float) -> np.ndarray:  # the WhatsApp user, once told to talk
        return talk.pop(0) if talk else np.zeros(320, dtype=np.int16)

    monkeypatch.setattr(SimMediaChannel, "_produce", produce)
    fake, client, call, url = await openai_agent(make_client, aiohttp_server)
    cid = call["callID"]
    body = {
        "provider": "openai-realtime",
        "url": url,
        "apiKey": KEY,
        "session": {"turn_detection": None},
    }
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    assert fake.sessions[0]["audio"]["input"]["turn_detection"] is None
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    item = await fake.say(tone(440, 8 * 24_000, 24_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 20, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        talk.extend(said[i : i + 320] for i in range(0, said.size - 319, 320))
        started = await next_event(sub, "agent.speech.started")
        cut = await next_event(sub, "agent.interrupted")
        stopped = await next_event(sub, "agent.speech.stopped", timeout=8)
    assert started.data["by"] == "bridge" and started.data["echo"] is False
    assert cut.data["by"] == "bridge" and cut.data["itemID"] == item
    assert stopped.data["by"] == "bridge"

    def turns() -> list[str]:
        return [e["type"] for e in fake.events if e["type"] != "input_audio_buffer.append"]

    await until(lambda: turns()[-1] == "response.create", timeout=3)
    assert turns()[-3:] == [
        "conversation.item.truncate",
        "input_audio_buffer.commit",
        "response.create",
    ]
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def vad_off_agent(make_client, aiohttp_server, monkeypatch, provider: str):
    """An agent whose model's turn detection is off (the bridge hears the turns) on a call
    whose WhatsApp user says what the test puts in the returned list (20 ms frames; silence
    when it is empty). Returns the fake model, the client, the call id and that list."""
    from bridge.engines.sim import SimMediaChannel

    from ..fakes.gemini_live import PATH, FakeGeminiLive

    talk: list[np.ndarray] = []

    def produce(self, at: float) -> np.ndarray:  # the WhatsApp user, once told to talk
        return talk.pop(0) if talk else np.zeros(320, dtype=np.int16)

    monkeypatch.setattr(SimMediaChannel, "_produce", produce)
    if provider == "gemini-live":
        fake = FakeGeminiLive(api_key=KEY)
        server = await aiohttp_server(fake.app())
        client = await make_client(fork_url_allow=("127.0.0.1",))
        cid = (await active_call(client))["callID"]
        url = f"ws://127.0.0.1:{server.port}{PATH}"
        session = {"realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}}
    else:
        fake, client, call, url = await openai_agent(make_client, aiohttp_server)
        cid = call["callID"]
        session = {"turn_detection": None}
    body = {"provider": provider, "url": url, "apiKey": KEY, "session": session}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    return fake, client, cid, talk


def turn_marks(fake) -> list[str]:
    """The turn markers the model was sent: Gemini's activities, OpenAI's commits and the
    ``response.create`` that asks for an answer."""
    if hasattr(fake, "activities"):
        return [mark for _, mark in fake.activities]
    marks = ("input_audio_buffer.commit", "response.create")
    return [e["type"].rsplit(".", 1)[1] for e in fake.events if e["type"] in marks]


@pytest.mark.parametrize("provider", ["gemini-live", "openai-realtime"])
async def test_a_hold_in_the_callers_turn_ends_the_turn_the_model_was_told_of(
    make_client, aiohttp_server, monkeypatch, provider: str
) -> None:
    """With the model's turn detection off, a hold in the middle of the caller's turn ends it
    on the model (Gemini ``activityEnd``; OpenAI the buffer committed, no answer asked for:
    nobody would hear it) and the caller's talking after the hold is a turn of its own, its
    start and end told. Before, the hold left Gemini's ``activityStart`` open for ever (the
    model waiting for the turn's end) and the first turn after the hold was never ended, on
    either (no ``activityEnd``, no commit: never answered)."""
    from bench.speech import GAP, missing_tools, speech

    if missing_tools():
        pytest.skip("espeak-ng, sox or pesq missing")
    said = speech(1.0, level_dbfs=-20.0)[int(GAP * 16_000) :]  # a sentence, 16 kHz
    fake, client, cid, talk = await vad_off_agent(
        make_client, aiohttp_server, monkeypatch, provider
    )
    end_unanswered = ["activityStart", "activityEnd"] if provider == "gemini-live" else ["commit"]
    async with client.app[MANAGER].events.subscribe() as sub:
        talk.extend(said[i : i + 320] for i in range(0, said.size - 319, 320))
        assert (await next_event(sub, "agent.speech.started")).data["by"] == "bridge"
        assert (await client.post("/call/hold", json={"callID": cid, "held": True})).status == 200
        talk.clear()  # (the caller stops while held: what they say after is a new turn)
        await until(lambda: turn_marks(fake) == end_unanswered, timeout=3)
        assert (await next_event(sub, "agent.speech.stopped")).data["by"] == "bridge"
        assert (await client.post("/call/hold", json={"callID": cid, "held": False})).status == 200
        talk.extend(said[i : i + 320] for i in range(0, 16_000, 320))  # a second of it
        assert (await next_event(sub, "agent.speech.started")).data["by"] == "bridge"
        assert (await next_event(sub, "agent.speech.stopped")).data["by"] == "bridge"
    gemini = provider == "gemini-live"
    answered = ["activityStart", "activityEnd"] if gemini else ["commit", "create"]
    await until(lambda: turn_marks(fake) == end_unanswered + answered, timeout=3)
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_turn_open_when_geminis_socket_drops_is_started_on_the_new_one(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """The caller talking when the model's socket drops (the bridge hearing the turns): the
    new connection is told the activity started before its end comes to it. Before, the end
    went to a connection that never had the start (an ``activityEnd`` with no activity)."""
    from bench.speech import GAP, missing_tools, speech

    if missing_tools():
        pytest.skip("espeak-ng, sox or pesq missing")
    said = speech(1.0, level_dbfs=-20.0)[int(GAP * 16_000) :]
    fake, client, cid, talk = await vad_off_agent(
        make_client, aiohttp_server, monkeypatch, "gemini-live"
    )
    async with client.app[MANAGER].events.subscribe() as sub:
        talk.extend(said[i : i + 320] for i in range(0, said.size - 319, 320))
        await next_event(sub, "agent.speech.started")
        await until(lambda: fake.activities == [(1, "activityStart")], timeout=3)
        await fake.drop()
        await next_event(sub, "agent.reconnected")
        talk.clear()
        await next_event(sub, "agent.speech.stopped")
    await until(lambda: len(fake.activities) == 3, timeout=3)
    assert fake.activities == [(1, "activityStart"), (2, "activityStart"), (2, "activityEnd")]
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_caller_audio_a_slow_model_socket_cannot_take_is_said_and_counted(
    make_client, caplog
) -> None:
    """A model that stops reading its socket while the WhatsApp side sends 12 s of audio (an
    engine's burst): what the socket's buffers and the bounded queue cannot hold is dropped,
    the oldest first — said once at WARNING with why, and counted in the agent's snapshot, the
    call's stats and the metrics. Before, the drops were counted in the socket's queue alone
    (a count nobody read, lost with the queue at a reconnect) and never said, and came only
    once the socket's autotuned kernel buffer (megabytes: over a minute of the caller, which
    the model would hear ever later) was full: none of these 12 s was dropped. The model's
    socket has a small kernel send buffer now, as a media fork's."""
    from aiohttp.test_utils import TestServer

    from bridge.agents import connection

    from ..fakes.openai_realtime import small_receive_buffer
    from .test_metrics import scrape, value

    fake = FakeOpenAIRealtime(api_key=KEY)
    server = TestServer(fake.app(), socket_factory=small_receive_buffer)
    await server.start_server()
    client = await make_client(fork_url_allow=("127.0.0.1",), sim_peer="silence")
    cid = (await active_call(client))["callID"]
    url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime"
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    await until(lambda: fake.heard.size > 0, timeout=3)
    fake.stall()
    bus = client.app[MANAGER].runtime(cid).bus
    frame = tone(300, 320, 16_000, 0.25)
    with caplog.at_level(logging.WARNING, logger=connection.__name__):
        for _ in range(60):  # 600 frames, 10 at a time: the socket's sender drains between
            for _ in range(10):
                bus.push_downlink(frame)
            await asyncio.sleep(0.002)
    snap = await (await client.get(f"/call/{cid}")).json()
    dropped_ms = snap["agents"][0]["callerAudioDroppedMs"]
    assert 0 < dropped_ms < 12_000
    said = [r for r in caplog.records if "too slow to take the caller's audio" in r.getMessage()]
    assert [r.levelname for r in said] == ["WARNING"]
    assert "1000 ms" in said[0].getMessage()
    fake.stall(False)
    await client.post("/call/hangup", json={"callID": cid})
    stats = await (await client.get(f"/call/{cid}/stats")).json()
    frames = stats["bus"]["agentFramesDropped"]  # (the call's own silence, since, as well)
    assert frames * 20 >= dropped_ms
    samples = await scrape(client)
    dropped = value(
        samples,
        "bridge_bus_frames_dropped_total",
        reason="agent_backpressure",
        direction="downlink",
    )
    assert dropped == frames
    assert fake.errors == []
    await server.close()


async def test_agent_requests_are_checked(make_client, aiohttp_server, caplog) -> None:
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    cases = [
        ({"provider": "llama", "url": url}, 400, "bad_request"),
        ({"provider": "openai-realtime", "url": "http://127.0.0.1/x"}, 400, "bad_request"),
        ({"provider": "openai-realtime", "url": "wss://evil.example/v1"}, 403, "url_not_allowed"),
        ({"provider": "openai-realtime", "url": url, "session": []}, 400, "bad_request"),
        ({"provider": "openai-realtime", "url": url, "bridgeTools": ["fly"]}, 400, "bad_request"),
        # A key no header can carry (a 500 before: aiohttp refused it as the socket opened).
        ({"provider": "openai-realtime", "url": url, "apiKey": "sk\r\nX: 1"}, 400, "bad_request"),
        ({"provider": "openai-realtime", "url": url, "apiKey": "sk-a\x00b"}, 400, "bad_request"),
        (
            {
                "provider": "openai-realtime",
                "url": url,
                "apiKey": KEY,
                "session": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}},
            },
            400,
            "bad_request",
        ),
        # Tools the bridge's would be added to that are no list (a 500 before: the socket
        # opened, then the session could not be written).
        (
            {
                "provider": "openai-realtime",
                "url": url,
                "apiKey": KEY,
                "session": {"tools": 5},
                "bridgeTools": ["hangup"],
            },
            400,
            "bad_request",
        ),
        # A wrong key: the model refuses the handshake.
        (
            {"provider": "openai-realtime", "url": url, "apiKey": "sk-wrong"},
            400,
            "agent_connect_failed",
        ),
        # The model refuses the session (a field it does not know): answered at once.
        (
            {
                "provider": "openai-realtime",
                "url": url,
                "apiKey": KEY,
                "session": {"colour": "red"},
            },
            400,
            "agent_connect_failed",
        ),
    ]
    for body, status, code in cases:
        resp = await client.post(f"/call/{cid}/agents", json=body)
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"]["code"] == code, body
    assert fake.errors == ["unknown session fields ['colour']"]
    assert (await client.delete(f"/call/{cid}/agents/ag_nope")).status == 404
    valid = {"provider": "openai-realtime", "url": url}
    assert (await client.post("/call/nope/agents", json=valid)).status == 404
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["agents"] == [] and snap["state"] == "active"
    assert "sk-wrong" not in caplog.text and KEY not in caplog.text


async def test_the_realtime_beta_shape_is_refused_before_any_socket_opens(
    make_client, aiohttp_server
) -> None:
    """OpenAI's Realtime API refuses the beta shape since May 2026 (the flat
    ``input_audio_format``, the ``OpenAI-Beta`` header): ``beta_api_shape_disabled``, the
    socket closed with 4000. A ``session`` written in it is a 400 naming the field, before any
    socket opens; a GA one with ``gpt-realtime-2``'s reasoning fields is taken as given."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    for field in ("input_audio_format", "output_audio_format"):
        body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
        resp = await client.post(f"/call/{cid}/agents", json={**body, "session": {field: "pcm16"}})
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
        assert error["code"] == "bad_request" and field in error["message"]
    assert fake.connections == 0
    session = {"reasoning": {"effort": "low"}, "parallel_tool_calls": True}
    await attach_agent(
        client,
        cid,
        {"provider": "openai-realtime", "url": url, "apiKey": KEY, "session": session},
    )
    (taken,) = fake.sessions
    assert taken["reasoning"] == {"effort": "low"} and taken["parallel_tool_calls"] is True
    assert "OpenAI-Beta" not in fake.headers[0]
    assert fake.errors == []
    # (The fake refuses a beta client as the service does: an error, then 4000.)
    beta = {"Authorization": f"Bearer {KEY}", "OpenAI-Beta": "realtime=v1"}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=beta) as ws:
        codes = [m.json()["error"]["code"] async for m in ws if "error" in m.json()]
    assert codes == ["beta_api_shape_disabled"] and ws.close_code == 4000


async def test_the_fallback_runs_when_the_model_is_gone(
    make_client, aiohttp_server, tmp_path
) -> None:
    import wave

    media = tmp_path / "media"
    media.mkdir()
    with wave.open(str(media / "sorry.wav"), "wb") as w:  # what the caller hears instead
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16_000)
        w.writeframes(tone(550, 16_000, 16_000, 0.3).astype("<i2").tobytes())
    fake, client, call, url = await openai_agent(
        make_client,
        aiohttp_server,
        sim_peer="silence",
        agent_retries=0,
        agent_fallback="message",
        agent_fallback_file="sorry.wav",
        media_dir=str(media),
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    sc = sim_call(client, cid)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        failed = await next_event(sub, "agent.failed")
        await next_event(sub, "playback.finished")
    assert failed.data["attempts"] == 0
    heard = np.concatenate(loud(list(sc.heard)[-60:]))
    assert dominant_frequency(heard, 16_000) == pytest.approx(550, abs=3)
    assert (await (await client.get(f"/call/{cid}")).json())["state"] == "active"
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_human_takes_the_call_when_the_model_is_gone(make_client, aiohttp_server) -> None:
    from .test_participants import join

    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=0, agent_fallback="human"
    )
    cid = call["callID"]
    human = await join(client, cid, "maria", "listen", 0.0)  # a supervisor listening in
    try:
        body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
        assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
        async with client.app[MANAGER].events.subscribe() as sub:
            await fake.drop()
            await next_event(sub, "agent.failed")
            moved = await next_event(sub, "call.transferred")
        assert moved.data["participantID"] == "maria"
        snap = await (await client.get(f"/call/{cid}")).json()
        assert [(p["participantID"], p["role"]) for p in snap["participants"]] == [
            ("maria", "agent")
        ]
    finally:
        await human.close()
        await client.post("/call/hangup", json={"callID": cid})


def test_the_agents_bench_has_a_row_for_every_provider() -> None:
    """Every provider ``POST /call/{callID}/agents`` takes is measured by ``bench.agents``
    against a strict fake (so the smoke test below runs it too)."""
    from bridge.agents.service import PROVIDERS

    assert sorted(a.provider for a in AGENT_BENCH if a.available()) == sorted(PROVIDERS)


@pytest.mark.parametrize("provider", [a.provider for a in AGENT_BENCH if a.available()])
async def test_the_agents_bench_still_runs(provider: str) -> None:
    """``python -m bench.agents`` at one call, one turn, per provider: every measure has its
    samples and the strict fake saw no protocol error (nothing here asserts on speed)."""
    from bench.agents import caller_speech, run_provider

    (adapter,) = [a for a in AGENT_BENCH if a.provider == provider]
    talk = caller_speech() if adapter.bridge_hears else None
    row = await run_provider(adapter, 1, 1, 0.2, talk)
    assert row["protocol_errors"] == []
    for key in ("up_ms", "down_ms", "barge_in_stop_ms"):
        assert row[key]["n"] >= 1, (key, row)
    if adapter.truncates:
        assert row["audio_end_error_ms"]["n"] >= 1, row
    if talk is not None:
        assert row["cancel_after_caller_began_ms"]["n"] == 1, row
    assert row["socket_dropped_to_audio_back_ms"]["n"] == 1


async def test_hold_between_two_deltas_of_an_answer_truncates_it_where_the_caller_stopped(
    make_client, aiohttp_server
) -> None:
    """The hold comes while the answer's queue has just run dry (the model streams slower
    than real time); more of the same answer arrives while held. The model is told what the
    caller heard of it (about 300 ms), not 0 ms, and none of the rest plays."""
    fake, client, cid, sc = await agent_on_a_talking_call(make_client, aiohttp_server)
    n0 = sc.frames_heard
    item = await fake.say(tone(440, 7_200, 24_000, 0.25))  # 300 ms
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 12, timeout=5)
    await asyncio.sleep(0.2)  # played out: nothing queued
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.post("/call/hold", json={"callID": cid, "held": True})
        assert resp.status == 200
        held_at = sc.frames_heard
        await fake.late_delta(item, tone(440, 24_000, 24_000, 0.25))
        cut = await next_event(sub, "agent.interrupted")
    assert cut.data["by"] == "hold" and cut.data["itemID"] == item
    await until(lambda: len(fake.truncates) == 1, timeout=3)
    assert fake.truncates[0]["item_id"] == item
    assert 260 <= fake.truncates[0]["audio_end_ms"] <= 340, fake.truncates
    await asyncio.sleep(0.5)
    assert len(loud(list(sc.heard)[-(sc.frames_heard - held_at) :])) <= 2
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_bridge_tool_the_app_did_not_ask_for_is_the_apps(
    make_client, aiohttp_server
) -> None:
    """A tool call named like one of the bridge's tools that the request's ``bridgeTools`` did
    not ask for is the app's (an ``agent.tool_call``), and the call is left alone. Before,
    the bridge ran it anyway: a model calling ``hang_up`` (an app's own tool of that name, or
    a name it made up) ended the call the app never let it end."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY, "bridgeTools": ["dtmf"]}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("hang_up", {}, "call_not_granted")
        asked = await next_event(sub, "agent.tool_call")
    assert asked.data["toolCallID"] == "call_not_granted" and asked.data["name"] == "hang_up"
    assert (await (await client.get(f"/call/{cid}")).json())["state"] == "active"
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_key_pressed_on_hold_does_not_reach_the_model(make_client, aiohttp_server) -> None:
    """A held caller is not heard: a key they press while held is not told to the model (it
    would answer it, to nobody), one pressed once the call is taken off hold is. Before, the
    held caller's key went up as a turn of the conversation."""
    from .test_twilio_streams import press_on_whatsapp

    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201

    def keys() -> list[str]:
        return [
            e["item"]["content"][0]["text"]
            for e in fake.events
            if e["type"] == "conversation.item.create" and e["item"].get("role") == "user"
        ]

    async with client.app[MANAGER].events.subscribe() as sub:
        assert (await client.post("/call/hold", json={"callID": cid, "held": True})).status == 200
        press_on_whatsapp(client, "7")
        await next_event(sub, "call.dtmf")  # (the model is told, or not, as it is published)
        assert (await client.post("/call/hold", json={"callID": cid, "held": False})).status == 200
        press_on_whatsapp(client, "3")
        await next_event(sub, "call.dtmf")
    await until(lambda: len(keys()) >= 1, timeout=3)  # in order: the first would be there
    assert keys() == ["The caller pressed the key 3."]
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_an_agent_stopped_twice_at_once_is_stopped_once(make_client, aiohttp_server) -> None:
    """Two ``DELETE``s of one agent at the same time (an app's retry): one teardown, one
    ``agent.stopped``, and neither answered before the model's socket is closed. Before, the
    second found the agent still closing, was answered at once and published its own
    ``agent.stopped``: the app was told twice."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    agent_id = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]
    path = f"/call/{cid}/agents/{agent_id}"
    async with client.app[MANAGER].events.subscribe() as sub:
        first, second = await asyncio.gather(client.delete(path), client.delete(path))
        assert fake.ws is not None and fake.ws.closed  # both answered after the teardown
        assert (first.status, second.status) == (200, 200)
        await client.post("/call/hangup", json={"callID": cid})
        kinds = []
        while not kinds or kinds[-1] != "call.ended":
            event = await sub.get(5)
            assert event is not None
            kinds.append(event.type)
    assert kinds.count("agent.stopped") == 1, kinds
    assert fake.errors == []


async def test_an_agent_whose_closing_caller_is_cancelled_still_leaves_the_call(
    make_client, aiohttp_server
) -> None:
    """The agent's close is cancelled while it stops the model connection's tasks (its caller
    went away: a request whose client left): the close runs on and the agent leaves the call.
    Before, it stayed attached to the call, its tasks running, and a second close returned at
    once (``tasks.CloseOnce``)."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    (agent,) = client.app[MANAGER].find_runtime(cid).attached("agent")
    # Cancelled as the close waits for the model connection's tasks (its socket closed).
    await cancel_mid_teardown(agent.model._tasks, agent.close)
    await until(lambda: fake.ws is not None and fake.ws.closed, 3, "the model's socket closed")
    await until(
        lambda: not client.app[MANAGER].find_runtime(cid).attached("agent"), 3, "the agent leaving"
    )
    await agent.close()  # a later close: the same teardown, over
    assert not agent._tasks and fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_the_models_hold_call_false_stops_the_hold_music(make_client, aiohttp_server) -> None:
    """The app holds the call with music; the model's ``hold_call`` (``held: false``) takes
    the caller off hold: the music stops with the hold, as ``POST /call/hold`` ``held: false``
    stops it. Before, the tool resumed the call without its music: the caller heard the hold
    music under the agent for the rest of the call."""
    from ..support.audio_files import make

    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 1000.0, 2.0), filename="hold.wav")
    asset = (await (await client.post("/call/audio-assets", data=form)).json())["assetId"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY, "bridgeTools": ["hold"]}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    sc = sim_call(client, cid)
    hold = {"callID": cid, "held": True, "music": asset}
    assert (await client.post("/call/hold", json=hold)).status == 200
    n0 = sc.frames_heard
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 10, timeout=5)
    music = np.concatenate(loud(list(sc.heard)[-(sc.frames_heard - n0) :]))
    assert dominant_frequency(music, 16_000) == pytest.approx(1000, abs=3)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("hold_call", {"held": False}, "call_unhold")
        await next_event(sub, "call.unheld")
    await asyncio.sleep(0.2)  # (a frame or two mixed before the resume may still arrive)
    n1 = sc.frames_heard
    await until(lambda: sc.frames_heard - n1 >= 25, timeout=5)
    assert loud(list(sc.heard)[-(sc.frames_heard - n1) :]) == []
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["held"] is False
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_the_caller_hears_the_goodbye_before_the_models_hang_up(
    make_client, aiohttp_server
) -> None:
    """The model says goodbye (1 s, sent faster than real time) and calls ``hang_up`` in the
    same breath, as the tool's description asks it to: the call ends once the goodbye has
    played. Before, the call ended the moment the tool call came, the goodbye still queued:
    the caller heard a few frames of it."""
    from ..support.calls import heard_since

    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY, "bridgeTools": ["hangup"]}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 24_000, 24_000, 0.25), transcript="goodbye")
        await fake.tool_call("hang_up", {}, "call_bye")
        await next_event(sub, "call.ended")
    goodbye = loud(heard_since(sc, n0))
    assert len(goodbye) >= 45  # the second of it, whole frames (an edge may be quieter)
    pcm = np.concatenate(goodbye[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)


async def test_a_model_url_with_credentials_is_a_bad_request(
    make_client, aiohttp_server, caplog
) -> None:
    """A model URL with credentials in it (``user:password@``) is a 400 naming the field,
    the credentials shown nowhere, no socket opened. Before, aiohttp refused to send them
    beside the key's ``Authorization`` header (a ``ValueError``): a 500."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    secret_url = url.replace("ws://", "ws://proxy:pw-0123456789@")
    body = {"provider": "openai-realtime", "url": secret_url, "apiKey": KEY}
    resp = await client.post(f"/call/{cid}/agents", json=body)
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "bad_request" and "'url'" in error["message"]
    assert "pw-0123456789" not in json.dumps(error) and "pw-0123456789" not in caplog.text
    assert fake.connections == 0
    assert (await (await client.get(f"/call/{cid}")).json())["agents"] == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_tool_answered_while_the_model_reconnects_is_not_taken(
    make_client, aiohttp_server
) -> None:
    """The model asks for a tool, then its socket drops and the server refuses it for a
    while: the session that asked is over, so the app's answer meanwhile is a ``404`` (as
    once the new session is open). Before, it was answered 200 "sent to the model" and went
    into the old socket's queue, thrown away at the reconnection: lost, said nowhere."""
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=5
    )
    cid = call["callID"]
    body = {
        "provider": "openai-realtime",
        "url": url,
        "apiKey": KEY,
        "session": {"tools": [{"type": "function", "name": "lookup_order", "parameters": {}}]},
    }
    agent_id = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]

    async def state() -> str:
        return (await (await client.get(f"/call/{cid}")).json())["agents"][0]["state"]

    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "A12"}, "call_old")
        await next_event(sub, "agent.tool_call")
        fake.refuse = True
        await fake.drop()
        for _ in range(100):
            if await state() == "reconnecting":
                break
            await asyncio.sleep(0.02)
        path = f"/call/{cid}/agents/{agent_id}/tools"
        resp = await client.post(path, json={"toolCallID": "call_old", "output": "late"})
        assert await state() == "reconnecting"  # (still: the answer came while it was)
        assert resp.status == 404, await resp.text()
        fake.refuse = False
        await next_event(sub, "agent.reconnected", timeout=10)
    assert not any(e["type"] == "conversation.item.create" for e in fake.events)
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_new_agent_may_take_over_from_one_that_failed(make_client, aiohttp_server) -> None:
    """An app that meets ``agent.failed`` (the fallback ``keep``) starts another agent on the
    call: it is taken (201) and talks, the failed one still listed as failed. Before, the failed
    agent, which holds nothing, counted against the one agent a call may have: a 409 until the
    app deleted it."""
    fake, client, call, url = await openai_agent(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=0
    )
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    first = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        await next_event(sub, "agent.failed")
    resp = await client.post(f"/call/{cid}/agents", json=body)
    assert resp.status == 201, await resp.text()
    second = (await resp.json())["agentID"]
    snap = await (await client.get(f"/call/{cid}")).json()
    assert [(a["agentID"], a["state"]) for a in snap["agents"]] == [
        (first, "failed"),
        (second, "connected"),
    ]
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    await fake.say(tone(440, 12_000, 24_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 20, timeout=5)
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 409  # still one
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_the_model_that_hands_the_call_to_a_human_leaves_it(
    make_client, aiohttp_server
) -> None:
    """The model's ``transfer_to_human``: the supervisor listening in takes the call, and the
    model leaves it (``agent.stopped`` ``reason: "transferred"``, its socket closed), as a
    participant that hands the call over leaves. Before, it stayed on: it kept hearing the
    caller and answered each turn over the human who had the call."""
    from .test_participants import join

    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    human = await join(client, cid, "maria", "listen", 0.0)
    try:
        body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
        body["bridgeTools"] = ["transfer"]
        agent_id = (await (await client.post(f"/call/{cid}/agents", json=body)).json())["agentID"]
        async with client.app[MANAGER].events.subscribe() as sub:
            await fake.tool_call("transfer_to_human", {}, "call_human")
            moved = await next_event(sub, "call.transferred")
            stopped = await next_event(sub, "agent.stopped")
        assert moved.data["participantID"] == "maria"
        assert stopped.data == {**stopped.data, "agentID": agent_id, "reason": "transferred"}
        await until(lambda: fake.ws is not None and fake.ws.closed, timeout=3)
        snap = await (await client.get(f"/call/{cid}")).json()
        assert snap["agents"] == [] and snap["state"] == "active"
        assert fake.errors == []
    finally:
        await human.close()
        await client.post("/call/hangup", json={"callID": cid})


async def test_a_hold_call_whose_held_is_no_boolean_is_answered_as_failed(
    make_client, aiohttp_server
) -> None:
    """``hold_call`` declares ``held`` a boolean; a model that sends ``"false"`` (text) is
    answered that the tool failed, with why, and the call is left as it was. Before, any
    value but a false one held the call: the text ``"false"`` put the caller on hold."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY, "bridgeTools": ["hold"]}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    await fake.tool_call("hold_call", {"held": "false"}, "call_text")

    def outputs() -> list[dict]:
        return [
            json.loads(e["item"]["output"])
            for e in fake.events
            if e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"
        ]

    await until(lambda: outputs() != [], timeout=3)
    (answer,) = outputs()
    assert answer["ok"] is False and "held" in answer["error"]
    assert (await (await client.get(f"/call/{cid}")).json())["held"] is False
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_a_bridge_tool_that_fails_is_said_with_its_call_and_reason(
    make_client, aiohttp_server, caplog
) -> None:
    """The model's ``transfer_to_human`` on a call with no human to take it: the model is
    answered that it failed and why, and the failure, one the caller meets (they asked for a
    person), is logged once at WARNING naming the call and the reason. Before, at INFO and
    without the call."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY, "bridgeTools": ["transfer"]}
    assert (await client.post(f"/call/{cid}/agents", json=body)).status == 201
    await fake.tool_call("transfer_to_human", {}, "call_nobody")
    await until(
        lambda: any(e["type"] == "conversation.item.create" for e in fake.events), timeout=3
    )
    output = next(e for e in fake.events if e["type"] == "conversation.item.create")
    assert json.loads(output["item"]["output"])["ok"] is False
    said = [r for r in caplog.records if "transfer_to_human" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]
    assert cid in said[0].getMessage() and "no human participant" in said[0].getMessage()
    assert (await (await client.get(f"/call/{cid}")).json())["agents"][0]["state"] == "connected"
    await client.post("/call/hangup", json={"callID": cid})


async def test_the_gaps_audio_of_a_goaway_goes_after_the_turn_is_opened_again(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """Gemini with the bridge hearing the turns: the caller talks as the model says
    ``goAway``. The next session is told the turn started (``activityStart``) before the
    caller's audio of the gap goes to it, so that audio is the turn's (before, it went first,
    outside any activity, and the activity started after it)."""
    from bench.speech import GAP, missing_tools, speech

    if missing_tools():
        pytest.skip("espeak-ng, sox or pesq missing")
    said = speech(1.5, level_dbfs=-20.0)[int(GAP * 16_000) :]
    fake, client, cid, talk = await vad_off_agent(
        make_client, aiohttp_server, monkeypatch, "gemini-live"
    )
    fake.setup_s = 0.2  # the next session's set-up: the caller talks on meanwhile
    async with client.app[MANAGER].events.subscribe() as sub:
        talk.extend(said[i : i + 320] for i in range(0, said.size - 319, 320))
        await next_event(sub, "agent.speech.started")
        await until(lambda: fake.activities == [(1, "activityStart")], timeout=3)
        await fake.go_away()
        await next_event(sub, "agent.reconnected")
    await until(lambda: len(fake.setups) == 2 and len(fake.activities) == 2, timeout=3)
    second = [i for i, m in enumerate(fake.messages) if "setup" in m][1]
    after = [m["realtimeInput"] for m in fake.messages[second + 1 :] if "realtimeInput" in m]
    assert "activityStart" in after[0], list(after[0])
    assert fake.activities == [(1, "activityStart"), (2, "activityStart")]
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_an_ended_calls_agents_are_shown_as_they_ended(make_client, aiohttp_server) -> None:
    """A call hung up with a model agent on it: its ``call.ended`` (event, webhook) and its
    snapshot after showed ``agents: []``, as if it never had one, while its participants are
    shown as they ended. The agents it had at its end are shown too, in their final state."""
    fake, client, call, url = await openai_agent(make_client, aiohttp_server, sim_peer="silence")
    cid = call["callID"]
    ended: list[dict] = []
    client.app[MANAGER].events.observe(
        lambda event, call: ended.append(event.call) if event.type == "call.ended" else None
    )
    body = {"provider": "openai-realtime", "url": url, "apiKey": KEY}
    resp = await client.post(f"/call/{cid}/agents", json=body)
    assert resp.status == 201, await resp.text()
    agent_id = (await resp.json())["agentID"]
    assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
    snapshot = await (await client.get(f"/call/{cid}")).json()
    assert snapshot["state"] == "ended"
    for shown in (ended[0], snapshot):
        agents = [(a["agentID"], a["provider"], a["state"]) for a in shown["agents"]]
        assert agents == [(agent_id, "openai-realtime", "stopped")], shown["agents"]
        assert shown["agents"][0]["url"] == url.split("?")[0]
    assert fake.errors == []
