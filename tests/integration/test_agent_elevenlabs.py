"""``elevenlabs`` (ElevenLabs Agents) on ``POST /call/{callID}/agents``, against a strict fake
written from ElevenLabs' public client-events reference, on a real (simulated) call: the
signed-URL flow with ``xi-api-key``, the agent's formats read from its metadata, audio both
ways, every ``ping`` answered, ``interruption`` dropping the voice and the cut reply's late
chunks, client tools, refusals, the key never shown."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest

from bridge.api.keys import MANAGER
from bridge.audio import rms_dbfs, tone

from ..fakes.elevenlabs_agent import FakeElevenLabs
from ..support.agents import attach_agent, served_beside_a_call
from ..support.calls import heard_since, sim_call
from ..support.spectrum import dominant_frequency
from ..support.waits import until
from .test_agents import loud, next_event

KEY = "xi-secret-0123456789abcdef"
AGENT = "agent_0123"
SESSION = {
    "conversation_config_override": {"agent": {"first_message": "Hi!", "language": "en"}},
    "dynamic_variables": {"caller_number": "+5521999999999"},
}


async def on_a_call(make_client, aiohttp_server, api_key: str | None = KEY, **settings):
    fake = FakeElevenLabs(AGENT, api_key=api_key)
    client, cid, port = await served_beside_a_call(fake, make_client, aiohttp_server, **settings)
    return fake, client, cid, f"ws://127.0.0.1:{port}/v1/convai/conversation?agent_id={AGENT}"


async def start(client, cid: str, url: str, **body) -> dict:
    body = {"provider": "elevenlabs", "url": url, "apiKey": KEY, "session": SESSION, **body}
    if body["apiKey"] is None:
        del body["apiKey"]
    return await attach_agent(client, cid, body)


async def test_elevenlabs_signed_url_audio_both_ways_pings_and_key_never_shown(
    make_client, aiohttp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    async with client.app[MANAGER].events.subscribe() as sub:
        started = await start(client, cid, url)
        await next_event(sub, "agent.connected")
    assert started["provider"] == "elevenlabs" and started["state"] == "connected"
    # A private agent: a signed URL asked for with the key, the socket opened without it.
    assert fake.signed_asked[0]["xi-api-key"] == KEY
    assert "xi-api-key" not in fake.handshakes[0] and "Authorization" not in fake.handshakes[0]
    assert fake.inits == [{"type": "conversation_initiation_client_data", **SESSION}]
    # The caller's 660 Hz goes up as user_audio_chunk, 20 ms at 16 kHz, nothing resampled.
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    assert {len(c) for c in fake.chunks} == {640}
    up = fake.heard[-16_000:]
    assert dominant_frequency(up, 16_000) == pytest.approx(660, abs=3)
    assert rms_dbfs(up) == pytest.approx(rms_dbfs(tone(660, 16_000, 16_000, 0.3)), abs=0.5)
    # Every ping answered with its pong, at once.
    for event_id in (1, 2, 3):
        await fake.ping(event_id)
    await until(lambda: len(fake.pongs) == 3, timeout=2)
    assert max(fake.pongs.values()) < 0.2
    # The agent's 440 Hz (audio events of 125 ms) reaches the caller whole.
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.say(tone(440, 16_000, 16_000, 0.25))
        said = await next_event(sub, "agent.transcript")
    assert (said.data["role"], said.data["text"]) == ("agent", "a tone")
    await until(lambda: sc.frames_heard - n0 >= 70, timeout=5)
    down = loud(heard_since(sc, n0))
    assert 49 <= len(down) <= 51 and {f.size for f in down} == {320}
    pcm = np.concatenate(down[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(440, 16_000, 16_000, 0.25)), abs=0.5)
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["agents"][0]["url"] == url.split("?")[0]
    resp = await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    assert resp.status == 200
    assert fake.errors == []
    assert KEY not in caplog.text and KEY not in json.dumps(snap)


async def test_elevenlabs_interruption_drops_the_voice_and_the_cut_replys_late_chunks(
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
        cut_at = await fake.interrupt()
        # Late chunks of the cut reply (event_id up to the interruption's) are never played.
        await fake.audio(tone(440, 8000, 16_000, 0.25).astype("<i2").tobytes(), cut_at)
        cut = await next_event(sub, "agent.interrupted")
    assert cut.data["by"] == "model" and cut.data["cancelled"] is False
    assert cut.data["droppedMs"] >= 3000
    await until(lambda: sc.frames_heard - n1 >= 25, timeout=3)
    after = heard_since(sc, n1)
    # Gone within 60 ms of the signal (three 20 ms frames), then silence.
    assert len(loud(after[3:])) == 0
    # The next reply (later event ids) plays.
    n2 = sc.frames_heard
    await fake.say(tone(880, 8000, 16_000, 0.25))
    await until(lambda: len(loud(heard_since(sc, n2))) >= 20, timeout=3)
    pcm = np.concatenate(loud(heard_since(sc, n2))[2:-2])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(880, abs=3)
    # There is no cancel: nothing is sent back but the opening.
    assert [e["type"] for e in fake.events] == ["conversation_initiation_client_data"]
    assert fake.errors == []


async def test_elevenlabs_a_drop_reconnects_and_its_end_call_stops_the_agent(
    make_client, aiohttp_server
) -> None:
    """A dropped socket (1011) is reconnected with a new signed URL; the agent's own goodbye
    (its ``end_call`` tool: a normal close, 1000) is not a drop: the agent stops
    (``agent.stopped``, ``ended_by_model``), nothing is opened again, the caller's audio no
    longer goes up, the call stays up, and another agent can be put on it."""
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="tone", sim_tone_hz=660.0
    )
    started = await start(client, cid, url)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        again = await next_event(sub, "agent.reconnected")
    assert again.data["resumed"] is False and fake.connections == 2
    assert len(fake.signed_asked) == 2  # a signature serves one socket: a new one asked for
    await until(lambda: fake.heard.size >= 16_000, timeout=5)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.end_call()
        stopped = await next_event(sub, "agent.stopped")
    assert stopped.data == {
        "agentID": started["agentID"],
        "provider": "elevenlabs",
        "reason": "ended_by_model",
    }
    heard = fake.heard.size
    snap = await (await client.get(f"/call/{cid}")).json()
    assert snap["state"] == "active" and snap["agents"] == []
    await asyncio.sleep(1.0)
    assert fake.connections == 2 and len(fake.signed_asked) == 2  # not reopened
    assert fake.heard.size == heard  # nothing goes up to a closed conversation
    resp = await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    assert resp.status == 404  # it is gone, not failed and kept
    await start(client, cid, url)  # the call takes another agent
    assert fake.connections == 3 and fake.errors == []


async def test_elevenlabs_client_tools_and_the_bridges_own(make_client, aiohttp_server) -> None:
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    started = await start(client, cid, url, bridgeTools=["hangup", "dtmf"])
    path = f"/call/{cid}/agents/{started['agentID']}/tools"
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.tool_call("lookup_order", {"order": "A12"}, "tc_1")
        asked = await next_event(sub, "agent.tool_call")
        assert asked.data["arguments"] == {"order": "A12"} and asked.data["toolCallID"] == "tc_1"
        resp = await client.post(path, json={"toolCallID": "tc_1", "output": {"status": "sent"}})
        assert resp.status == 200
        await until(lambda: any(e["type"] == "client_tool_result" for e in fake.events))
        answer = next(e for e in fake.events if e["type"] == "client_tool_result")
        assert answer == {
            "type": "client_tool_result",
            "tool_call_id": "tc_1",
            "result": '{"status": "sent"}',
            "is_error": False,
        }
        await fake.tool_call("send_dtmf", {"digits": "12#"}, "tc_2")  # the bridge's own
        await until(lambda: len([e for e in fake.events if e["type"] == "client_tool_result"]) == 2)
        dtmf = [e for e in fake.events if e["type"] == "client_tool_result"][1]
        assert dtmf["tool_call_id"] == "tc_2" and json.loads(dtmf["result"])["digits"] == "12#"
        await fake.tool_call("hang_up", {}, "tc_3")
        ended = await next_event(sub, "call.ended")
    assert ended.call["endReason"] == "hangup"
    assert fake.errors == []


async def test_elevenlabs_formats_from_the_agents_metadata_public_agent_and_refusals(
    make_client, aiohttp_server, caplog
) -> None:
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, api_key=None, sim_peer="tone", sim_tone_hz=660.0
    )
    # A public agent at 8 kHz in, 24 kHz out: no key, no signed URL, resampled both ways.
    fake.input_format, fake.output_format = "pcm_8000", "pcm_24000"
    started = await start(client, cid, url, apiKey=None)
    assert fake.signed_asked == [] and fake.connections == 1
    await until(lambda: fake.heard.size >= 8000, timeout=5)
    assert {len(c) for c in fake.chunks[1:]} == {320}  # 20 ms at 8 kHz (the first: less, the
    # resampler's delay)
    assert dominant_frequency(fake.heard[-8000:], 8000) == pytest.approx(660, abs=3)
    sc = sim_call(client, cid)
    n0 = sc.frames_heard
    await fake.say(tone(440, 24_000, 24_000, 0.25), chunk=4800)
    await until(lambda: sc.frames_heard - n0 >= 70, timeout=5)
    down = loud(heard_since(sc, n0))
    assert 48 <= len(down) <= 51
    pcm = np.concatenate(down[5:-5])
    assert dominant_frequency(pcm, 16_000) == pytest.approx(440, abs=3)
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(tone(440, 16_000, 16_000, 0.25)), abs=0.5)
    await client.delete(f"/call/{cid}/agents/{started['agentID']}")
    fake.errors.clear()
    fake.api_key = KEY
    fake.input_format = fake.output_format = "pcm_16000"
    bad_url = url.split("?")[0]
    cases = [
        ({"apiKey": "wrong-key"}, 400, "agent_connect_failed"),  # 401 at get-signed-url
        ({"url": bad_url}, 400, "bad_request"),  # no agent named
        ({"session": {"audio": "pcm_16000"}}, 400, "bad_request"),
        ({"session": {"dynamic_variables": "x"}}, 400, "bad_request"),
        *(
            ({"session": {"user_activity_interval_ms": bad}}, 400, "bad_request")
            for bad in (99, 60_001, "2000", True)
        ),
        (  # an override the agent's security settings do not enable: refused
            {"session": {"conversation_config_override": {"tts": {"voice_id": "v"}}}},
            400,
            "agent_connect_failed",
        ),
    ]
    for extra, status, code in cases:
        resp = await client.post(
            f"/call/{cid}/agents",
            json={"provider": "elevenlabs", "url": url, "apiKey": KEY, **extra},
        )
        assert resp.status == status, (extra, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == code, extra
        if "user_activity_interval_ms" in extra.get("session", {}):  # said why
            assert "whole number of ms from 100 to 60000" in error["message"], error
    assert len(fake.errors) == 1 and "override not enabled" in fake.errors[0]
    fake.errors.clear()
    fake.output_format = "ulaw_8000"  # not a format the bridge plays: refused, said why
    resp = await client.post(
        f"/call/{cid}/agents", json={"provider": "elevenlabs", "url": url, "apiKey": KEY}
    )
    assert (await resp.json())["error"]["code"] == "agent_connect_failed"
    assert "unsupported_audio_format" in caplog.text
    resp = await client.post(
        f"/call/{cid}/agents",
        json={"provider": "elevenlabs", "url": "wss://api.elevenlabs.io/v1/convai/conversation"},
    )
    assert resp.status == 403 and "api.elevenlabs.io" in (await resp.json())["error"]["message"]
    assert KEY not in caplog.text and fake.errors == []


async def test_elevenlabs_a_ping_while_the_conversation_starts_is_answered(
    make_client, aiohttp_server
) -> None:
    """A ``ping`` that comes before ``conversation_initiation_metadata`` (the session still
    opening) is answered with its ``pong`` at once, on the first conversation and on a
    reopened one: before, it was queued for the session, and a reopened session's queue is
    new, so that ``pong`` never went and ElevenLabs dropped the socket."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    fake.ping_on_start = True
    fake.PONG_S = 1.0
    await start(client, cid, url)
    await until(lambda: 1001 in fake.pongs, timeout=3)
    async with client.app[MANAGER].events.subscribe() as sub:
        await fake.drop()
        await next_event(sub, "agent.reconnected", timeout=5)
    await until(lambda: 1002 in fake.pongs, timeout=3)
    await asyncio.sleep(fake.PONG_S + 0.2)  # no ping left unanswered, no drop
    assert fake.connections == 2 and fake.errors == []
    await client.post("/call/hangup", json={"callID": cid})


async def test_elevenlabs_a_billing_stop_fails_the_agent(make_client, aiohttp_server) -> None:
    """ElevenLabs stops a conversation it will not bill with close code 1002: ``agent.failed``
    ``model_error`` (``close_1002``), no new conversation asked for (before, it was reopened
    until the retries were spent)."""
    fake, client, cid, url = await on_a_call(
        make_client, aiohttp_server, sim_peer="silence", agent_retries=4
    )
    await start(client, cid, url)
    async with client.app[MANAGER].events.subscribe() as sub:
        assert fake.ws is not None
        await fake.ws.close(code=1002, message=b"payment required")
        failed = await next_event(sub, "agent.failed", timeout=5)
    assert failed.data["reason"] == "model_error" and failed.data["code"] == "close_1002"
    await asyncio.sleep(0.3)
    assert fake.connections == 1 and len(fake.signed_asked) == 1
    await client.post("/call/hangup", json={"callID": cid})


async def test_elevenlabs_a_held_call_keeps_its_conversation(make_client, aiohttp_server) -> None:
    """Nothing of a held caller goes up, so the agent would time the silence out and end the
    conversation (its turn and silence timeouts are its settings: the fake's ``idle_s``).
    The bridge sends ``user_activity`` while no audio goes up: the conversation outlives the
    hold, on the same socket (before, it ended: ``agent.stopped``, ``ended_by_model``) — also
    for an agent whose timeout is shorter than the bridge's 2 s, whose session says how often
    (before, a session could not: ``user_activity_interval_ms`` was refused, ``400``)."""
    fake, client, cid, url = await on_a_call(make_client, aiohttp_server, sim_peer="silence")
    fake.idle_s = 0.6
    session = {**SESSION, "user_activity_interval_ms": 200}
    started = await start(client, cid, url, session=session)
    assert fake.inits == [{"type": "conversation_initiation_client_data", **SESSION}]
    resp = await client.post("/call/hold", json={"callID": cid, "held": True})
    assert resp.status == 200, await resp.text()
    await asyncio.sleep(1.5)  # the agent's idle limit, twice over
    resp = await client.post("/call/hold", json={"callID": cid, "held": False})
    assert resp.status == 200, await resp.text()
    assert fake.ended_idle == 0 and fake.connections == 1 and fake.errors == []
    assert len([e for e in fake.events if e["type"] == "user_activity"]) >= 3
    snap = await (await client.get(f"/call/{cid}")).json()
    assert [a["agentID"] for a in snap["agents"]] == [started["agentID"]]
    assert snap["agents"][0]["state"] == "connected"
    await client.post("/call/hangup", json={"callID": cid})
