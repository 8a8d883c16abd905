"""``ultravox`` on ``POST /call/{callID}/agents``, against a strict fake written from Ultravox's
public documents, on a real (simulated) call: the call created over REST with a 16 kHz
``serverWebSocket`` medium and ``X-API-Key``, its ``joinUrl`` joined, binary s16le both ways,
``playback_clear_buffer`` flushing the voice, client tools, ``maxDuration`` renewed with
``priorCallId``, refusals, the key never shown."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
import pytest

from bridge.agents import ultravox, upkeep
from bridge.api.keys import MANAGER
from bridge.audio import rms_dbfs, tone

from ..fakes.ultravox import FakeUltravox
from ..support.agents import attach_agent, served_beside_a_call
from ..support.calls import heard_since, sim_call
from ..support.loops import LoopLag
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_agents import loud, next_event

KEY = "uv-secret-0123456789abcdef"
SESSION = {"systemPrompt": "Be brief.", "voice": "Mark", "firstSpeaker": "FIRST_SPEAKER_AGENT"}


async def on_a_call(make_client, aiohttp_server, **settings):
    fake = FakeUltravox(api_key=KEY)
    client, cid, port = await served_beside_a_call(fake, make_client, aiohttp_server, **settings)
    return fake, client, cid, f"http://127.0.0.1:{port}/api"


async def start(client, cid: str, url: str, **body) -> dict:
    body = {"provider": "ultravox", "url": url, "apiKey": KEY, "session": SESSION, **body}
    return await attach_agent(client, cid, body)


async def test_ultravox_call_created_over_rest_binary_16k_both_ways_key_never_shown(
    make_client, aiohttp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    async with client.app[MANAGER].events.subscribe() as sub:
        started = await start(client, cid, url)
        await next_event(sub, "agent.connected")
    assert started["provider"] == "ultravox" and started["state"] == "connected"
    (created,) = fake.created
    assert created["headers"]["X-API-Key"] == KEY and created["priorCallId"] is None
    assert created["body"] == {
        **SESSION,
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 16000,
                "outputSampleRate": 16000,
                "clientBufferSizeMs": ultravox.CLIENT_BUFFER_MS,
            }
        },
        "maxDuration": "3600s",
    }
    assert fake.joins[0]["apiVersion"] == "1"
    # The caller's 660 Hz goes up as binary frames of 20 ms at 16 kHz, nothing resampled.
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    assert {len(c) for c in fake.chunks} == {640}
    up = fake.heard[-16_000:]
    assert dominant_frequency(up, 16_000) == pytest.approx(660, abs=3)
    assert rms_dbfs(up) == pytest.approx(rms_dbfs(tone(660, 16_000, 16_000, 0.3)), abs=0.5)
    # The agent's 440 Hz (binary frames, one odd-sized) reaches the caller whole; its
    # transcript, sent in deltas, is told once final.
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 16_000, 16_000, 0.25), chunk=1921)
        said = await next_event(sub, "agent.transcript")
    assert (said.data["role"], said.data["text"]) == ("agent", "a tone")
    await until(lambda: sc.frames_heard - n0 >= 70, timeout=5)
    down = loud(heard_since(sc, n0))
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


async def test_ultravox_playback_clear_buffer_flushes_the_voice(
    make_client, aiohttp_server
) -> None:
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    await start(client, cid, url)
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    await fake.say(tone(440, 5 * 16_000, 16_000, 0.25))
    await until(lambda: len(loud(heard_since(sc, n0))) >= 40, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        n1 = sc.frames_heard
        await fake.clear_buffer()
        cut = await next_event(sub, "agent.interrupted")
    assert cut.data["by"] == "model" and cut.data["cancelled"] is False
    assert cut.data["droppedMs"] >= 3000
    await until(lambda: sc.frames_heard - n1 >= 25, timeout=3)
    # Gone within 60 ms of the signal (three 20 ms frames), then silence.
    assert len(loud(heard_since(sc, n1)[3:])) == 0
    # The next reply plays.
    n2 = sc.frames_heard
    await fake.say(tone(880, 8000, 16_000, 0.25))
    await until(lambda: len(loud(heard_since(sc, n2))) >= 20, timeout=3)
    pcm = np.concatenate(loud(heard_since(sc, n2))[2:-2])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(880, abs=3)
    # Ultravox stops by itself: nothing is sent back.
    assert fake.events == [] and fake.errors == []


async def test_ultravox_a_reply_the_caller_cuts_is_told_as_far_as_it_came_once(
    make_client, aiohttp_server
) -> None:
    """The caller barges in on a reply whose transcript never became final: what the agent
    had said so far is told at the interruption (as the other providers report a cut reply),
    and not again when its ``final`` comes late. Before, it was never told."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    await start(client, cid, url)
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 3 * 16_000, 16_000, 0.25), text="It left today.", final=False)
        await until(lambda: len(loud(heard_since(sc, n0))) >= 10, timeout=5)
        await fake.clear_buffer()
        await next_event(sub, "agent.interrupted")
        said = await next_event(sub, "agent.transcript")
        assert (said.data["role"], said.data["text"]) == ("agent", "It left")
        await fake.late_final()
        await fake.heard_user("Wait.")
        said = await next_event(sub, "agent.transcript")
        assert (said.data["role"], said.data["text"]) == ("caller", "Wait.")
    await client.post("/call/hangup", json={"callID": cid})
    assert fake.errors == []


async def test_ultravox_client_tools_and_the_bridges_own(make_client, aiohttp_server) -> None:
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    mine = {
        "temporaryTool": {"modelToolName": "lookup_order", "description": "an order", "client": {}}
    }
    session = {**SESSION, "selectedTools": [mine]}
    started = await start(client, cid, url, session=session, bridgeTools=["hangup", "dtmf"])
    tools = fake.created[0]["body"]["selectedTools"]
    assert [t["temporaryTool"]["modelToolName"] for t in tools] == [
        "lookup_order",
        "hang_up",
        "send_dtmf",
    ]
    assert tools[2]["temporaryTool"]["dynamicParameters"][0]["name"] == "digits"
    assert tools[2]["temporaryTool"]["dynamicParameters"][0]["required"] is True
    path = f"/call/{cid}/agents/{started['agentID']}/tools"
    results = lambda: [e for e in fake.events if e["type"] == "client_tool_result"]  # noqa: E731
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "A12"}, "inv_1")
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["arguments"] == {"order": "A12"} and asked.data["toolCallID"] == "inv_1"
        resp = await client.post(path, json={"toolCallID": "inv_1", "output": "shipped"})
        assert resp.status == 200
        await until(lambda: len(results()) == 1)
        assert results()[0] == {
            "type": "client_tool_result",
            "invocationId": "inv_1",
            "result": "shipped",
            "responseType": "tool-response",
        }
        await fake.tool_call("send_dtmf", {"digits": "4"}, "inv_2")
        await until(lambda: len(results()) == 2)
        assert json.loads(results()[1]["result"])["digits"] == "4"
        await fake.tool_call("hang_up", {}, "inv_3")
        ended = await next_event(sub, "call.ended")
    assert ended.call["endReason"] == "hangup"
    assert fake.errors == []


async def test_ultravox_max_duration_renewed_with_prior_call_id(
    make_client, aiohttp_server, monkeypatch
) -> None:
    monkeypatch.setattr(ultravox, "MAX_DURATION_S", 3)  # the fake ends the call after 3 s
    monkeypatch.setattr(upkeep, "RENEW_MARGIN_S", 2.0)  # renewed after 1 s
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url)
    assert fake.created[0]["body"]["maxDuration"] == "3s"
    async with client.app[MANAGER].events.subscribe() as sub:
        again = await next_event(sub, "agent.reconnected", timeout=5)
    assert again.data["resumed"] is True  # the new call continues the old one's conversation
    assert len(fake.created) == 2 and fake.created[1]["priorCallId"] == "call-1"
    assert fake.created[1]["body"]["firstSpeaker"] == "FIRST_SPEAKER_USER"  # no second hello
    assert fake.call_id == "call-2" and fake.errors == []
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"][0]["state"] == "connected"
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")


async def test_ultravox_the_agents_hang_up_stops_it_and_no_call_is_created_again(
    make_client, aiohttp_server
) -> None:
    """Ultravox ends a call by closing its socket normally (the agent's hang-up tool): the
    bridge's agent stops (``agent.stopped``, ``ended_by_model``) rather than creating a new
    Ultravox call, and the WhatsApp call stays up."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.hang_up()
        stopped = await next_event(sub, "agent.stopped")
    assert stopped.data["agentID"] == started["agentID"]
    assert stopped.data["reason"] == "ended_by_model"
    await asyncio.sleep(1.0)
    assert len(fake.created) == 1 and fake.connections == 1 and fake.errors == []
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"] == []


async def test_ultravox_refusals(make_client, aiohttp_server, caplog) -> None:
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    cases = [
        ({"apiKey": "wrong-key"}, 400, "agent_connect_failed"),  # 401 at the creation
        ({"url": url.replace("http://", "ws://")}, 400, "bad_request"),  # the REST base
        ({"session": {"medium": {"twilio": {}}}}, 400, "bad_request"),
        ({"session": {"maxDuration": 60}}, 400, "bad_request"),
        ({"session": {"systemPrompt": "x", "colour": "red"}}, 400, "agent_connect_failed"),
    ]
    for extra, status, code in cases:
        body = {"provider": "ultravox", "url": url, "apiKey": KEY, **extra}
        resp = await client.post(f"/call/{cid}/agents", json=body)
        assert resp.status == status, (extra, await resp.text())
        assert (await resp.json())["error"]["code"] == code, extra
    assert len(fake.errors) == 1 and "unknown fields" in fake.errors[0]
    assert fake.joins == []  # a refused creation is never joined
    resp = await client.post(f"/call/{cid}/agents", json={"provider": "ultravox", "apiKey": KEY})
    assert resp.status == 403 and "api.ultravox.ai" in (await resp.json())["error"]["message"]
    assert KEY not in caplog.text


async def test_ultravox_a_failed_tool_in_its_error_form_and_the_call_ended_with_hang_up(
    make_client, aiohttp_server
) -> None:
    """A tool's answer that says it failed goes in Ultravox's error form (``errorType``
    ``implementation-error`` with the ``errorMessage``; before, as a ``result`` the agent took
    for a success). A session the bridge ends gets ``hang_up``, which ends the Ultravox call
    (before, the socket was only closed: the call ran on until its ``maxDuration``), both
    when the agent is stopped and when the WhatsApp call ends through the bridge's ``hangup``
    tool."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url, bridgeTools=["hangup"])
    path = f"/call/{cid}/agents/{started['agentID']}/tools"
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "Z9"}, "inv_1")
        await next_event(sub, "agent.tool_call")
    resp = await client.post(path, json={"toolCallID": "inv_1", "output": {"error": "no order Z9"}})
    assert resp.status == 200
    await until(lambda: any(e["type"] == "client_tool_result" for e in fake.events))
    (result,) = [e for e in fake.events if e["type"] == "client_tool_result"]
    assert result == {
        "type": "client_tool_result",
        "invocationId": "inv_1",
        "errorType": "implementation-error",
        "errorMessage": "no order Z9",
        "responseType": "tool-response",
    }
    resp = await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    assert resp.status == 200
    assert fake.hung_up == ["call-1"]
    started = await start(client, cid, url, bridgeTools=["hangup"])
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("hang_up", {}, "inv_2")
        await next_event(sub, "call.ended")
    await until(lambda: fake.hung_up == ["call-1", "call-2"], timeout=3)
    assert fake.errors == []


async def test_ultravox_a_tool_called_as_the_agent_is_stopped_is_not_run(
    make_client, aiohttp_server, monkeypatch
) -> None:
    """The model calls the bridge's ``hold_call`` just as the app takes the agent off the
    call (its invocation crosses the bridge's ``hang_up`` on the wire, and the bridge reads
    on while it gives the server its time to end the call): the stopped agent acts on the
    call no more. Before, the tool ran while the agent closed: the caller was left on hold
    by an agent that was gone."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url, bridgeTools=["hold"])
    answer = fake._message

    async def crossing(ws, body) -> None:
        if body.get("type") == "hang_up":
            await fake.tool_call("hold_call", {"held": True}, "inv_late")
        await answer(ws, body)

    monkeypatch.setattr(fake, "_message", crossing)
    async with client.app[MANAGER].events.subscribe() as sub:
        resp = await client.delete(f"/call/{cid}/agents/{started['agentID']}")
        assert resp.status == 200
        await next_event(sub, "agent.stopped")
    assert fake.hung_up == ["call-1"]
    await asyncio.sleep(0.1)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["held"] is False
    await client.post("/call/hangup", json={"callID": cid})


async def test_ultravox_a_base_url_with_a_query_keeps_it_after_calls(
    make_client, aiohttp_server
) -> None:
    """A base ``url`` with a query string (a proxy's, a region's) is created on
    ``{base path}/calls`` with that query, ``priorCallId`` beside it on a reopened call (before,
    ``/calls`` was glued after the query: ``…/api?region=eu/calls``, a creation on the base
    path itself, refused)."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url + "/?region=eu")
    assert fake.created[0]["query"] == {"region": "eu"}
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        again = await next_event(sub, "agent.reconnected", timeout=5)
    assert again.data["resumed"] is True
    assert fake.created[1]["query"] == {"region": "eu", "priorCallId": "call-1"}
    assert fake.errors == []
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")


async def test_ultravox_a_refused_prior_call_is_a_new_call_told_what_was_said(
    make_client, aiohttp_server, caplog
) -> None:
    """A reopened call whose ``priorCallId`` Ultravox refuses (the old call's history gone) is
    a new call: ``agent.reconnected`` says ``resumed: false`` (before, ``true``: the new call's
    own id was taken for a resumption), the new call greets not again, and it is told what
    was said as a ``user_text_message`` it does not answer at once (before, nothing)."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    async with client.app[MANAGER].events.subscribe() as sub:
        await start(client, cid, url)
        await fake.heard_user("Where is my order?")
        await next_event(sub, "agent.transcript")
        await fake.say(tone(440, 1600, 16_000, 0.25), text="On its way.")
        await next_event(sub, "agent.transcript")
        fake.forget("call-1")
        await fake.drop()
        again = await next_event(sub, "agent.reconnected", timeout=5)
    assert again.data["resumed"] is False
    assert len(fake.created) == 2 and fake.created[1]["priorCallId"] is None
    assert fake.created[1]["body"]["firstSpeaker"] == "FIRST_SPEAKER_USER"
    await until(lambda: any(e["type"] == "user_text_message" for e in fake.events), timeout=2)
    (told,) = [e for e in fake.events if e["type"] == "user_text_message"]
    assert told["urgency"] == "later"
    assert "Caller: Where is my order?\nYou: On its way." in told["text"]
    refused = [r for r in caplog.records if "refused to resume" in r.getMessage()]
    assert [r.levelname for r in refused] == ["WARNING"] and fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_ultravox_a_held_call_keeps_its_ultravox_call(make_client, aiohttp_server) -> None:
    """Nothing of a held caller goes up, and an Ultravox call needs no keep-alive only while
    audio flows (the fake ends one that hears none for ``idle_s``). The bridge sends silence
    in the caller's place: the call outlives the hold, on the same socket, and the model
    hears nothing of the caller meanwhile (before, the call ended: ``agent.stopped``)."""
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    fake.idle_s = 0.5
    started = await start(client, cid, url)
    await until(lambda: len(fake.chunks) >= 10, timeout=5)
    resp = await client.post("/call/hold", json={"callID": cid, "held": True})
    assert resp.status == 200, await resp.text()
    held = time.monotonic() + 0.1  # (a frame already on its way)
    async with LoopLag() as lag:  # (the fake, the bridge and the sim share this loop)
        await asyncio.sleep(1.2)  # the call's idle limit, twice over
    unheld = time.monotonic()
    resp = await client.post("/call/hold", json={"callID": cid, "held": False})
    assert resp.status == 200, await resp.text()
    during = [c for c, t in zip(fake.chunks, fake.arrived, strict=True) if held < t < unheld]
    # A frame of silence a 20 ms tick (55 in the window, a few at its edges aside).
    assert len(during) >= 50 - lag.frames
    assert not any(np.frombuffer(b"".join(during), dtype="<i2"))  # nothing of the caller
    assert fake.ended_idle == 0 and fake.connections == 1 and fake.errors == []
    snap = await (await client.get(f"/call/{cid}")).json()
    assert [a["agentID"] for a in snap["agents"]] == [started["agentID"]]
    assert snap["agents"][0]["state"] == "connected"
    await client.post("/call/hangup", json={"callID": cid})


async def test_ultravox_a_reply_cut_off_by_a_drop_is_told_and_carried_into_the_next_call(
    make_client, aiohttp_server
) -> None:
    """The socket drops in the middle of a reply whose transcript came in deltas (its
    ``final`` never comes): what it said so far is told (``agent.transcript``) and a new call
    that cannot continue the old one is told it with the rest of what was said. Before, it
    was lost with the socket."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    async with client.app[MANAGER].events.subscribe() as sub:
        await start(client, cid, url)
        await fake.heard_user("Where is my order?")
        await next_event(sub, "agent.transcript")
        await fake.say(tone(440, 1600, 16_000, 0.25), text="It left today.", final=False)
        fake.forget("call-1")
        await fake.drop()
        told = []
        while (event := await sub.get(5)) is not None and event.type != "agent.reconnected":
            told += [(event.data["role"], event.data["text"])] if "transcript" in event.type else []
    assert event is not None and event.data["resumed"] is False
    assert told == [("agent", "It left")]  # the half of it that came
    await until(lambda: any(e["type"] == "user_text_message" for e in fake.events), timeout=2)
    (recap,) = [e["text"] for e in fake.events if e["type"] == "user_text_message"]
    assert "Caller: Where is my order?\nYou: It left" in recap
    assert fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})
