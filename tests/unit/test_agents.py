"""The agents' pure parts: the resampling pair's quality on speech, the echo guard on real
speech (espeak-ng) with its echo, and the two protocols' messages."""

from __future__ import annotations

import base64
import json
import logging
from functools import cache

import numpy as np
import pytest

from bench.agent_resample import round_trip
from bench.scoring import pesq_wb
from bench.speech import frames, missing_tools, speech
from bridge.agents import EchoGuard, GeminiLive, OpenAIRealtime
from bridge.agents.wire import Audio, GoAway, Interrupted, Resumable, SpeechStarted, ToolCall
from bridge.errors import BadRequest
from bridge.media import BusFrame

needs_speech = pytest.mark.skipif(bool(missing_tools()), reason="espeak-ng, sox or pesq missing")


@cache
def talk() -> np.ndarray:
    return speech(12.0, level_dbfs=-20.0)


@needs_speech
def test_the_16_24_16_khz_pair_keeps_speech_whole() -> None:
    ref = talk()
    assert pesq_wb(ref, round_trip(ref)) >= 4.4


def echo_of(played: np.ndarray, lag_ms: int, down_db: float) -> np.ndarray:
    lag = lag_ms * 16
    out = np.zeros_like(played, dtype=np.float64)
    out[lag:] = played[: played.size - lag] * 10 ** (-down_db / 20)
    return out.astype(np.int16)


def verdicts(played: np.ndarray, heard: np.ndarray, every: int = 1) -> list[tuple[int, bool]]:
    """(frame, echo?) at every ``every``-th frame, as if the model reported speech then."""
    guard = EchoGuard()
    out = []
    for i, (p, h) in enumerate(zip(frames(played), frames(heard), strict=True)):
        guard.played(BusFrame(p, 0.0))
        guard.heard(BusFrame(h, 0.0))
        if i % every == 0:
            out.append((i, guard.decide().echo))
    return out


@needs_speech
@pytest.mark.parametrize("down_db", [20.0, 15.0, 10.0])
def test_the_agents_own_echo_is_never_taken_for_the_caller(down_db: float) -> None:
    rng = np.random.default_rng(7)
    agent = talk()
    for trial in range(20):
        lag = int(rng.integers(60, 251))
        start = int(rng.integers(0, agent.size // 2)) // 320 * 320
        played = agent[start : start + 16_000 * 4]
        heard = echo_of(played, lag, down_db)
        # A speech start at any moment (every 100 ms) of four seconds of speech: never a
        # barge-in.
        false = [i for i, echo in verdicts(played, heard, every=5) if not echo]
        assert false == [], (trial, lag)


@needs_speech
def test_a_voice_over_the_echo_is_the_caller() -> None:
    agent = talk()
    played = agent[: 16_000 * 4]
    caller = np.zeros_like(played)
    voice = agent[16_000 * 6 : 16_000 * 8]  # another sentence, at the agent's level
    caller[16_000 : 16_000 + voice.size] = voice
    heard = np.clip(echo_of(played, 120, 20).astype(np.int32) + caller, -32768, 32767).astype(
        np.int16
    )
    result = verdicts(played, heard)
    onset = next(i for i, f in enumerate(frames(caller)) if np.abs(f).max() > 300)
    # Within 200 ms of the caller's first word the guard says it is the caller.
    assert any(not echo for i, echo in result if onset <= i <= onset + 10)
    before = [i for i, echo in result if i < onset - 5 and not echo and i > 15]
    assert before == []


def test_a_caller_steadily_as_loud_as_the_agent_is_no_echo_path() -> None:
    """A caller talking steadily over the agent at its level or louder (here two tones, the
    caller 3 dB above) follows the agent's level as steadily as an echo would, but no echo
    comes back that loud: after seconds of both, a speech start is still the caller's."""
    t = np.arange(16_000 * 3) / 16_000
    played = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    heard = (np.sin(2 * np.pi * 200 * t) * 11_300).astype(np.int16)
    result = verdicts(played, heard, every=25)
    assert [i for i, echo in result if echo and i >= 25] == [], result


def test_openai_session_is_merged_and_the_formats_are_the_bridges() -> None:
    dialect = OpenAIRealtime({"instructions": "hi", "voice": "marin", "tools": []})
    (update,) = dialect.opening([], None)
    session = update["session"]
    assert update["type"] == "session.update"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
    }
    assert "voice" not in session and session["instructions"] == "hi"
    with pytest.raises(BadRequest):
        OpenAIRealtime({"audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    assert dialect.connect("wss://x.openai.azure.com/r", "k")[1] == {"api-key": "k"}
    assert dialect.connect("wss://api.openai.com/v1/realtime", "k")[1] == {
        "Authorization": "Bearer k"
    }
    pcm = np.arange(10, dtype="<i2").tobytes()
    delta = {
        "type": "response.output_audio.delta",
        "item_id": "i",
        "delta": base64.b64encode(pcm).decode(),
    }
    assert dialect.parse(delta) == [Audio(pcm, "i")]
    assert dialect.parse({"type": "input_audio_buffer.speech_started", "item_id": "u"}) == [
        SpeechStarted("u")
    ]
    (truncate,) = dialect.truncate("i", 740)
    assert (truncate["type"], truncate["audio_end_ms"], truncate["content_index"]) == (
        "conversation.item.truncate",
        740,
        0,
    )


def test_gemini_setup_audio_and_server_messages() -> None:
    dialect = GeminiLive(
        {"model": "gemini-live-x", "systemInstruction": {"parts": [{"text": "hi"}]}}
    )
    (first,) = dialect.opening([], "h1")
    setup = first["setup"]
    assert setup["model"] == "models/gemini-live-x"
    assert setup["sessionResumption"] == {"handle": "h1"}
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert dialect.connect("wss://g/ws", "k") == ("wss://g/ws", {"x-goog-api-key": "k"})
    up = json.loads(dialect.audio(b"\0\0"))
    assert up["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"
    pcm = b"\1\0\2\0"
    data = base64.b64encode(pcm).decode()
    part = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
    assert dialect.parse({"serverContent": {"modelTurn": {"parts": [part]}}}) == [
        Audio(pcm, "turn0")
    ]
    events = dialect.parse({"serverContent": {"interrupted": True}})
    assert Interrupted() in events
    assert dialect.parse({"goAway": {"timeLeft": "10s"}}) == [GoAway("10s")]
    assert dialect.parse({"sessionResumptionUpdate": {"newHandle": "h2", "resumable": True}}) == [
        Resumable("h2")
    ]
    call = {"toolCall": {"functionCalls": [{"id": "c1", "name": "f", "args": {"a": 1}}]}}
    assert dialect.parse(call) == [ToolCall("c1", "f", {"a": 1})]


async def test_a_continuous_uplink_whose_tick_raised_fills_on_and_one_that_always_raises_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full-duplex model's silence filler on the real worker clock: a tick that raises (the
    send failed: a bug) is dropped by the clock, and the filler is back on it from the next
    tick, the caller's gap still filled. Before, it was off the clock for good and the model
    heard nothing in every gap. One that raises every tick is given up after three in a row,
    said once."""
    from bridge.agents.uplink import ContinuousUplink
    from bridge.media.clock import worker_clock
    from tests.support.waits import until

    sent: list[bytes] = []
    raising = 0

    def send(pcm: bytes) -> None:
        nonlocal raising
        if raising:
            raising -= 1
            raise RuntimeError("a bug")
        sent.append(pcm)

    uplink = ContinuousUplink(send, 24_000, "call c: agent a")
    raising = 1
    uplink.start()  # the caller says nothing: silence stands in, from the fourth tick
    await until(lambda: len(sent) >= 10)
    assert all(frame == bytes(960) for frame in sent)
    raising = 10**6
    await until(lambda: uplink._unregister is None)
    clock = worker_clock()
    for _ in range(5):
        await clock.next_tick()
    assert raising == 10**6 - 3 and uplink._unregister is None  # given up after three
    said = [r for r in caplog.records if "continuous uplink failed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert said[0].getMessage().startswith("call c: agent a:")
    uplink.stop()


async def test_a_pong_goes_ahead_of_the_callers_audio_waiting_for_the_socket() -> None:
    """ElevenLabs drops a socket whose pings go unanswered: a ``pong`` (the dialect's
    ``Answer``) is queued ahead of the caller's audio waiting for a slow socket, in its own
    order (before, behind up to a second of that audio)."""
    from bridge.agents import ElevenLabsAgent
    from bridge.agents.connection import ModelConnection

    async def nothing(event: object) -> None:
        raise AssertionError(f"not the agent's: {event}")

    model = ModelConnection(
        ElevenLabsAgent(),
        "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=a",
        None,
        tools=[],
        retries=0,
        where="call c: agent a",
        handle=nothing,
    )
    said = {"type": "user_message", "text": "The caller pressed the key 1."}
    for _ in range(3):
        model.send_audio(bytes(640))
    model.send([said])  # behind that audio, as sent: a control message keeps its place
    for _ in range(10):
        model.send_audio(bytes(640))
    await model._message(json.dumps({"type": "ping", "ping_event": {"event_id": 7}}))
    await model._message(json.dumps({"type": "ping", "ping_event": {"event_id": 8}}))
    sent: list[str | bytes] = []

    async def send(message: str | bytes) -> None:
        sent.append(message)

    await model.out.queue.run(send, lambda: len(sent) >= 16)
    kinds = [json.loads(m).get("type", "audio") for m in sent]
    assert kinds == ["audio"] * 3 + ["user_message", "pong", "pong"] + ["audio"] * 10
    assert [json.loads(m).get("event_id") for m in sent[4:6]] == [7, 8]


@pytest.mark.parametrize("cap", [60.0, 120.0, 200.0])
async def test_a_short_session_is_not_renewed_at_once_each_time(monkeypatch, cap: float) -> None:
    """A session capped under RENEW_MARGIN_S (an Ultravox ``maxDuration`` of a minute or
    two, a short GPT-Live ``expires_at``) is renewed no sooner than half-way through: before,
    1 s after it opened, and so was each new one, a new session every second or two while
    nobody spoke. A long one is renewed 2 minutes before its cap, as ever."""
    from bridge.agents import upkeep

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(upkeep.asyncio, "sleep", sleep)
    await upkeep.renewal_due(cap, lambda: True)
    assert cap / 2 <= slept[0] < cap - upkeep.RENEW_LEEWAY_S + 1e-9
    slept.clear()
    await upkeep.renewal_due(3600.0, lambda: True)
    assert slept == [3600.0 - upkeep.RENEW_MARGIN_S]


def test_control_messages_past_the_queues_bound_are_said_and_counted(caplog) -> None:
    """A socket that takes nothing fills the control queue: the next messages are dropped,
    counted (the snapshot's ``modelMessagesDropped``) and said once a session at WARNING
    (before, dropped without a word or a count)."""
    from bridge.agents.outbox import MAX_CONTROL, Outbox

    caplog.set_level(logging.INFO, logger="bridge.agents.outbox")
    out = Outbox("call c: agent a")
    out.control([{"type": "response.create"}] * MAX_CONTROL)
    assert out.control_dropped == 0 and not caplog.records
    out.control([{"type": "conversation.item.create"}] * 3)
    assert out.control_dropped == 3
    (said,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "conversation.item.create" in said.getMessage()
    out.renew()  # a new session's queue: room again, and a new session's drop said again
    out.control([{"type": "response.create"}] * (MAX_CONTROL + 1))
    assert out.control_dropped == 4
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
