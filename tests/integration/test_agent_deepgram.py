"""``deepgram`` (Deepgram's Voice Agent API) on ``POST /call/{callID}/agents``, against a strict
fake written from Deepgram's public reference, on a real (simulated) call: binary linear16 at
16 kHz both ways, ``UserStartedSpeaking`` flushing the voice, client-side functions and their
cancellation, ``KeepAlive`` while nothing goes up, the two-hour cap renewed before it bites,
failures, the key never shown."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import numpy as np
import pytest

from bridge.agents import upkeep
from bridge.agents.deepgram import DeepgramVoiceAgent
from bridge.api.keys import MANAGER
from bridge.audio import rms_dbfs, tone

from ..fakes.deepgram_agent import FakeDeepgramAgent
from ..support.agents import attach_agent, served_beside_a_call
from ..support.calls import sim_call
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_agents import loud, next_event

KEY = "dg-secret-0123456789abcdef"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJicmlkZ2UifQ.c2lnbmF0dXJl"  # a temporary token
SESSION = {
    "agent": {
        "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
        "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
        "greeting": "Hello!",
    }
}


async def on_a_call(make_client, aiohttp_server, **settings):
    fake = FakeDeepgramAgent(api_key=KEY, token=TOKEN)
    client, cid, port = await served_beside_a_call(fake, make_client, aiohttp_server, **settings)
    return fake, client, cid, f"ws://127.0.0.1:{port}/v1/agent/converse"


async def start(client, cid: str, url: str, **body) -> dict:
    body = {"provider": "deepgram", "url": url, "apiKey": KEY, "session": SESSION, **body}
    return await attach_agent(client, cid, body)


async def test_deepgram_binary_16k_both_ways_settings_and_key_never_shown(
    make_client, aiohttp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    async with client.app[MANAGER].events.subscribe() as sub:
        started = await start(client, cid, url)
        await next_event(sub, "agent.connected")
    assert started["provider"] == "deepgram" and started["state"] == "connected"
    assert fake.headers[0]["Authorization"] == f"Token {KEY}"
    (settings,) = fake.settings
    assert settings["audio"] == {
        "input": {"encoding": "linear16", "sample_rate": 16000},
        "output": {"encoding": "linear16", "sample_rate": 16000, "container": "none"},
    }
    assert settings["agent"] == SESSION["agent"]
    # The caller's 660 Hz goes up as binary frames of 20 ms at 16 kHz, nothing resampled.
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    assert {len(c) for c in fake.chunks} == {640}
    up = fake.heard[-16_000:]
    assert dominant_frequency(up, 16_000) == pytest.approx(660, abs=3)
    assert rms_dbfs(up) == pytest.approx(rms_dbfs(tone(660, 16_000, 16_000, 0.3)), abs=0.5)
    # The agent's 440 Hz (binary frames of 60 ms, one odd-sized) reaches the caller whole.
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 16_000, 16_000, 0.25), chunk=1921)
        said = await next_event(sub, "agent.transcript")
    assert (said.data["role"], said.data["text"]) == ("agent", "a tone")
    await until(lambda: sc.frames_heard - n0 >= 70, timeout=5)
    down = loud(list(sc.heard)[-(sc.frames_heard - n0) :])
    assert 49 <= len(down) <= 51 and {f.size for f in down} == {320}
    pcm = np.concatenate(down[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(440, 16_000, 16_000, 0.25)), abs=0.5)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["agents"][0]["url"] == url
    resp = await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    assert resp.status == 200
    assert fake.errors == []
    assert KEY not in caplog.text and KEY not in json.dumps(snap)


async def test_deepgram_user_started_speaking_flushes_the_voice(
    make_client, aiohttp_server
) -> None:
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=200.0
    )
    await start(client, cid, url)
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    await fake.say(tone(440, 5 * 16_000, 16_000, 0.25))
    await until(lambda: len(loud(list(sc.heard)[-(sc.frames_heard - n0) :])) >= 40, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.user_started_speaking()
        cut = await next_event(sub, "agent.interrupted")
        n1 = sc.frames_heard
    assert cut.data["by"] == "model" and cut.data["cancelled"] is False
    assert cut.data["droppedMs"] >= 3000
    await until(lambda: sc.frames_heard - n1 >= 25, timeout=3)
    after = list(sc.heard)[-(sc.frames_heard - n1) :]
    # At most the frame already on its way when the signal came; then silence.
    assert len(loud(after[3:])) == 0
    # Deepgram stops by itself: nothing is sent back (no cancel, no truncate).
    assert [e["type"] for e in fake.events] == ["Settings"]
    assert fake.errors == []


async def test_deepgram_tools_answered_cancelled_ones_never(make_client, aiohttp_server) -> None:
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    session = json.loads(json.dumps(SESSION))
    mine = {"name": "lookup_order", "description": "an order", "parameters": {"type": "object"}}
    session["agent"]["think"]["functions"] = [mine]
    started = await start(client, cid, url, session=session, bridgeTools=["hangup"])
    functions = fake.settings[0]["agent"]["think"]["functions"]
    assert [f["name"] for f in functions] == ["lookup_order", "hang_up"]
    assert functions[1]["defer_until_eot"] is True
    path = f"/call/{cid}/agents/{started['agentID']}/tools"
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "A12"}, "fc_1")
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["arguments"] == {"order": "A12"} and asked.data["toolCallID"] == "fc_1"
        resp = await client.post(path, json={"toolCallID": "fc_1", "output": {"status": "sent"}})
        assert resp.status == 200
        await until(lambda: any(e["type"] == "FunctionCallResponse" for e in fake.events))
        answer = next(e for e in fake.events if e["type"] == "FunctionCallResponse")
        assert answer == {
            "type": "FunctionCallResponse",
            "id": "fc_1",
            "name": "lookup_order",
            "content": '{"status": "sent"}',
        }
        # Asked before the caller's turn was over, then withdrawn: never answered.
        await fake.tool_call("lookup_order", {"order": "B7"}, "fc_2")
        await next_event(sub, "agent.tool_call")
        await fake.cancel_calls(("fc_2", "lookup_order"))
        await fake.heard_user("no, wait")  # in order: once heard, the cancel was too
        await next_event(sub, "agent.transcript")
        resp = await client.post(path, json={"toolCallID": "fc_2", "output": "late"})
        assert resp.status == 404
        await fake.tool_call("hang_up", {}, "fc_3")  # the bridge's own tool
        ended = await next_event(sub, "call.ended")
    assert ended.call["endReason"] == "hangup"
    assert [e["id"] for e in fake.events if e["type"] == "FunctionCallResponse"][:1] == ["fc_1"]
    assert fake.errors == []


async def test_deepgram_a_function_call_whose_arguments_are_no_json_is_answered(
    make_client, aiohttp_server
) -> None:
    """The think model's arguments text is passed through by Deepgram, and a model may write
    broken JSON: the call still reaches the app (``arguments`` empty, as the Realtime family
    takes it) and its answer goes back. Before, the whole ``FunctionCallRequest`` was dropped
    as unreadable, and Deepgram's agent waited for an answer that never came."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url)
    path = f"/call/{cid}/agents/{started['agentID']}/tools"
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", '{"order": "A12"', "fc_1")  # cut short
        asked = await next_event(sub, "agent.tool_call")
    assert asked.data["toolCallID"] == "fc_1" and asked.data["arguments"] == {}
    resp = await client.post(path, json={"toolCallID": "fc_1", "output": "which order?"})
    assert resp.status == 200
    await until(lambda: any(e["type"] == "FunctionCallResponse" for e in fake.events))
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_deepgram_keepalive_while_nothing_goes_up(
    make_client, aiohttp_server, monkeypatch
) -> None:
    monkeypatch.setattr(DeepgramVoiceAgent, "keepalive_s", 0.3)
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    fake.IDLE_S = 1.0
    await start(client, cid, url)
    resp = await client.post("/call/hold", json={"callID": cid, "held": True})
    assert resp.status == 200, await resp.text()
    await until(lambda: fake.keepalives >= 4, timeout=5)
    assert fake.connections == 1 and fake.errors == []


async def test_deepgram_session_renewed_before_its_cap_with_what_was_said(
    make_client, aiohttp_server, monkeypatch
) -> None:
    monkeypatch.setattr(DeepgramVoiceAgent, "session_limit_s", 0.5)  # renewed after 1 s
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    fake.SESSION_LIMIT_S = 1.6
    started = await start(client, cid, url)
    await fake.heard_user("Where is my order?")
    async with client.app[MANAGER].events.subscribe() as sub:
        again = await next_event(sub, "agent.reconnected", timeout=5)
    assert again.data["resumed"] is False
    assert fake.connections == 2 and fake.errors == []
    second = fake.settings[1]["agent"]
    assert "greeting" not in second  # the caller is not greeted twice
    assert second["context"]["messages"] == [
        {"type": "History", "role": "user", "content": "Where is my order?"}
    ]
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"][0]["state"] == "connected"
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")


async def test_deepgram_a_moved_call_keeps_what_was_said(make_client, aiohttp_server) -> None:
    """A call moved to this worker (a handover, an adoption: ``AgentService.resume``) opens
    its Deepgram session with the lines the agent carried as ``agent.context.messages`` and
    no second greeting, as a renewal does (before, the new session knew nothing of the
    conversation: the history was thought to come too late for the ``Settings``)."""
    from bridge.api.keys import AGENTS

    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    moved = {
        "provider": "deepgram",
        "url": url,
        "apiKey": KEY,
        "session": SESSION,
        "agentID": "ag_moved",
        "resume": None,
        "context": [["caller", "Where is my order?"], ["agent", "It left this morning."]],
    }
    runtime = client.app[MANAGER].runtime(cid)
    agent = await client.app[AGENTS].resume(runtime, moved)
    assert agent.id == "ag_moved"
    (settings,) = fake.settings
    assert "greeting" not in settings["agent"]
    assert settings["agent"]["context"]["messages"] == [
        {"type": "History", "role": "user", "content": "Where is my order?"},
        {"type": "History", "role": "assistant", "content": "It left this morning."},
    ]
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_deepgram_a_renewal_is_made_once_the_callers_turn_is_over(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """Deepgram says when the caller starts speaking and, with its transcript of the turn,
    that the turn is over (``agent.speech.stopped``): a renewal that fell due meanwhile is made
    then (before, the caller counted as speaking for the rest of the session once they first
    spoke, and every renewal waited its whole 90 s, made whoever spoke)."""

    monkeypatch.setattr(upkeep, "RENEW_MARGIN_S", DeepgramVoiceAgent.session_limit_s - 1)
    monkeypatch.setattr(upkeep, "RENEW_NOT_BEFORE", 0.0)
    # Each session's renewal falls due (1 s in) only once the test lets it, and the test goes
    # on once it asks whether anyone speaks: on a loaded host it fell due before the caller
    # spoke, and the next session's a second later (three sessions where two were counted).
    let, asking = asyncio.Event(), asyncio.Event()
    renewal_due = upkeep.renewal_due

    async def renewal_due_when_let(cap: float, quiet: Callable[[], bool]) -> None:
        await let.wait()
        let.clear()

        def asked() -> bool:
            asking.set()
            return quiet()

        await renewal_due(cap, asked)

    monkeypatch.setattr(upkeep, "renewal_due", renewal_due_when_let)
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=200.0
    )
    await start(client, cid, url)
    await until(lambda: fake.heard.size >= 16_000, timeout=5)  # the caller's voice, known
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.user_started_speaking()
        started = await next_event(sub, "agent.speech.started")
        assert started.data["echo"] is False
        let.set()  # due now, while the caller speaks: it waits for the turn's end
        await asyncio.wait_for(asking.wait(), 10)
        await fake.heard_user("Where is my order?")
        stopped = await next_event(sub, "agent.speech.stopped")
        assert stopped.data["by"] == "model"
        again = await next_event(sub, "agent.reconnected", timeout=5)  # due after 1 s
    assert again.data["resumed"] is False
    assert fake.connections == 2 and fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_deepgram_refusals_and_a_model_gone_for_good(
    make_client, aiohttp_server, caplog
) -> None:
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=1
    )
    cases = [
        ({"apiKey": "wrong-key"}, 400, "agent_connect_failed"),  # 401 at the handshake
        ({"session": {"audio": {"input": {"sample_rate": 8000}}}}, 400, "bad_request"),
        ({"session": {"agent": "hi"}}, 400, "bad_request"),
        ({"session": {"agent": {"voice": "x"}}}, 400, "agent_connect_failed"),  # Deepgram's no
    ]
    for extra, status, code in cases:
        body = {"provider": "deepgram", "url": url, "apiKey": KEY, **extra}
        resp = await client.post(f"/call/{cid}/agents", json=body)
        assert resp.status == status, (extra, await resp.text())
        assert (await resp.json())["error"]["code"] == code, extra
    assert len(fake.errors) == 1 and "unknown Settings fields" in fake.errors[0]
    fake.errors.clear()
    # The default URL's host must be allowed like any.
    resp = await client.post(f"/call/{cid}/agents", json={"provider": "deepgram", "apiKey": KEY})
    assert resp.status == 403 and "agent.deepgram.com" in (await resp.json())["error"]["message"]
    started = await start(client, cid, url, apiKey=TOKEN)  # a temporary token: Bearer
    assert fake.headers[-1]["Authorization"] == f"Bearer {TOKEN}"
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    await start(client, cid, url)
    async with client.app[MANAGER].events.subscribe() as sub:
        fake.refuse = True
        await fake.drop()
        failed = await next_event(sub, "agent.failed", timeout=10)
    assert failed.data["provider"] == "deepgram" and failed.data["attempts"] == 1
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"][0]["state"] == "failed"
    assert fake.errors == []
    assert KEY not in caplog.text and TOKEN not in caplog.text
    await client.post("/call/hangup", json={"callID": cid})


async def test_deepgram_an_error_ends_the_session_and_a_new_one_opens(
    make_client, aiohttp_server
) -> None:
    """Every ``Error`` is fatal to a Deepgram session: the bridge closes it and opens a new
    one with the conversation so far, whether or not Deepgram has closed it yet (before, a
    session whose close was slow to come was left hanging, the caller unheard)."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url)
    await fake.heard_user("Where is my order?")
    async with client.app[MANAGER].events.subscribe() as sub:
        closing = asyncio.ensure_future(fake.error("INTERNAL_SERVER_ERROR", "oops", 30.0))
        again = await next_event(sub, "agent.reconnected", timeout=5)
    closing.cancel()
    assert again.data["resumed"] is False
    assert fake.connections == 2 and fake.errors == []
    assert fake.settings[1]["agent"]["context"]["messages"] == [
        {"type": "History", "role": "user", "content": "Where is my order?"}
    ]
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")


async def test_deepgram_a_start_whose_session_dropped_holds_no_renewal_back(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """The caller a session heard start speaking, dropped before it heard them stop, is not
    speaking on the next session: its renewal, due 1 s in with nobody speaking, is not held
    back for a stop that never comes (before, it waited its whole allowance, 9 s here)."""
    monkeypatch.setattr(DeepgramVoiceAgent, "session_limit_s", 10.0)
    monkeypatch.setattr(upkeep, "RENEW_MARGIN_S", 9.0)  # due 1 s in...
    monkeypatch.setattr(upkeep, "RENEW_NOT_BEFORE", 0.0)
    monkeypatch.setattr(upkeep, "RENEW_LEEWAY_S", 0.0)  # ... then up to 9 s for a quiet moment
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    async with client.app[MANAGER].events.subscribe() as sub:
        await start(client, cid, url)
        await until(lambda: len(fake.chunks) >= 10, timeout=5)  # the caller is heard, loud
        await fake.user_started_speaking()
        assert (await next_event(sub, "agent.speech.started")).data["echo"] is False
        await fake.drop()  # no UserStoppedSpeaking, no ConversationText: the turn never ends
        await next_event(sub, "agent.reconnected", timeout=5)
        renewed = await next_event(sub, "agent.reconnected", timeout=4)
    assert renewed.data["resumed"] is False and fake.connections == 3 and fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})
