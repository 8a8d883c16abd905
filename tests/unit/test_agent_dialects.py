"""The Realtime-like dialects without a network: which header a key goes in, which errors are
races, when a barge-in cancels and what of a cut response is still played; the caller's audio
as every JSON dialect writes it."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from bridge.agents import (
    AzureVoiceLive,
    DeepgramVoiceAgent,
    ElevenLabsAgent,
    GeminiLive,
    OpenAILive,
    OpenAIRealtime,
    XaiGrokVoice,
)
from bridge.agents.azure import auth
from bridge.agents.realtime import RealtimeFamily
from bridge.agents.tools import BRIDGE_TOOLS
from bridge.agents.wire import Audio, ModelError
from bridge.errors import BadRequest

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def test_azure_sends_a_key_as_api_key_and_an_entra_token_as_bearer() -> None:
    assert auth("0123abcd") == {"api-key": "0123abcd"}
    assert auth(JWT) == {"Authorization": f"Bearer {JWT}"}
    assert auth("Bearer tok") == {"Authorization": "Bearer tok"}


@pytest.mark.parametrize(
    "error,benign",
    [
        ({"code": "response_cancel_not_active", "message": "x"}, True),
        ({"code": "invalid_request", "message": "Cancellation failed: no active response"}, True),
        ({"code": "item_already_truncated", "message": ""}, True),
        ({"code": "invalid_api_key", "message": "Incorrect API key"}, False),
    ],
)
def test_the_known_races_are_benign(error: dict, benign: bool) -> None:
    (event,) = XaiGrokVoice().parse({"type": "error", "error": error})
    assert isinstance(event, ModelError) and event.benign is benign


def delta(response: str, item: str = "i1") -> dict:
    pcm = base64.b64encode(b"\0\0" * 160).decode()
    return {"type": "response.audio.delta", "response_id": response, "item_id": item, "delta": pcm}


def test_a_barge_in_cancels_only_a_response_in_progress_that_nobody_else_stops() -> None:
    openai = OpenAIRealtime({"turn_detection": None})
    assert openai.cancel("bridge") == []  # nothing in progress
    openai.parse({"type": "response.created", "response": {"id": "r1"}})
    assert openai.cancel("hold") == []
    assert [m["type"] for m in openai.cancel("bridge")] == ["response.cancel"]
    assert openai.parse(delta("r1")) == []  # generated before the server took it: not played
    assert isinstance(openai.parse(delta("r2"))[0], Audio)
    # OpenAI's VAD stops its own response; xAI's does not.
    openai.parse({"type": "response.created", "response": {"id": "r3"}})
    assert openai.cancel("model") == [] and openai.parse(delta("r3")) == []
    xai = XaiGrokVoice()
    xai.parse({"type": "response.created", "response": {"id": "r1"}})
    assert [m["type"] for m in xai.cancel("model")] == ["response.cancel"]
    xai.parse({"type": "response.done", "response": {"id": "r1"}})
    assert xai.cancel("model") == []


def test_azure_follows_its_own_interrupt_and_truncate_settings() -> None:
    auto = AzureVoiceLive({"turn_detection": {"type": "server_vad", "auto_truncate": True}})
    assert auto.truncate("i1", 300, "model") == [] and auto.truncate("i1", 300, "hold") != []
    manual = AzureVoiceLive({"turn_detection": {"type": "server_vad", "interrupt_response": False}})
    manual.parse({"type": "response.created", "response": {"id": "r1"}})
    assert [m["type"] for m in manual.cancel("model")] == ["response.cancel"]
    off = AzureVoiceLive({"turn_detection": None})
    assert off.model_detects_speech is False
    assert off.session_object([])["turn_detection"] is None  # sent as null: omitted keeps VAD


@pytest.mark.parametrize(
    "dialect,session",
    [
        (XaiGrokVoice, {"model": "grok-voice-latest"}),
        (XaiGrokVoice, {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}),
        (AzureVoiceLive, {"output_audio_format": "pcm16"}),
        (AzureVoiceLive, {"input_audio_sampling_rate": 24000}),
    ],
)
def test_what_the_bridge_decides_is_refused_in_session(dialect, session) -> None:
    with pytest.raises(BadRequest):
        dialect(session)


@pytest.mark.parametrize(
    "dialect,session",
    [
        (OpenAIRealtime, {"tools": 5}),
        (XaiGrokVoice, {"tools": {"type": "function"}}),
        (AzureVoiceLive, {"tools": "lookup"}),
        (GeminiLive, {"tools": 5}),
        (DeepgramVoiceAgent, {"agent": {"think": {"functions": 5}}}),
        (DeepgramVoiceAgent, {"agent": {"think": [{"functions": {}}]}}),
        (DeepgramVoiceAgent, {"agent": {"context": [{"role": "user", "content": "hi"}]}}),
        (DeepgramVoiceAgent, {"agent": {"context": {"messages": "hi"}}}),
        (OpenAILive, {"delegation": {"type": "responses", "responses": {"tools": 5}}}),
        (OpenAILive, {"input": "hi"}),
    ],
)
def test_a_session_field_the_bridge_adds_to_must_be_a_list(dialect, session) -> None:
    """The bridge's tools join the app's, a new session's history joins its given one: what
    is no list is refused with the request (before: a 500 as the session was written, or a
    reconnection that died with the agent left reconnecting)."""
    with pytest.raises(BadRequest):
        dialect(session)
    tools = [BRIDGE_TOOLS["hangup"]]
    allowed = {"type": "responses", "responses": {"model": "gpt-5.5"}}
    fine = dialect({"delegation": allowed} if dialect is OpenAILive else {})
    assert fine.opening(tools, None)


def test_elevenlabs_drops_the_cut_replys_late_chunks_and_reads_its_formats() -> None:
    from bridge.agents import ElevenLabsAgent
    from bridge.agents.wire import Answer, Interrupted, Ready

    dialect = ElevenLabsAgent()
    meta = {
        "type": "conversation_initiation_metadata",
        "conversation_initiation_metadata_event": {
            "conversation_id": "c1",
            "user_input_audio_format": "pcm_16000",
            "agent_output_audio_format": "pcm_24000",
        },
    }
    assert dialect.parse(meta) == [Ready()] and (dialect.rate_in, dialect.rate_out) == (
        16000,
        24000,
    )

    def audio(event_id: int) -> dict:
        chunk = base64.b64encode(b"\x01\x00" * 4).decode()
        return {"type": "audio", "audio_event": {"audio_base_64": chunk, "event_id": event_id}}

    assert [type(e) for e in dialect.parse(audio(7))] == [Audio]
    cut = {"type": "interruption", "interruption_event": {"event_id": 7}}
    assert dialect.parse(cut) == [Interrupted()]
    assert dialect.parse(audio(6)) == [] and dialect.parse(audio(7)) == []
    (later,) = dialect.parse(audio(8))
    assert isinstance(later, Audio) and later.item_id == "el1"
    ping = {"type": "ping", "ping_event": {"event_id": 3, "ping_ms": 50}}
    assert dialect.parse(ping) == [Answer(({"type": "pong", "event_id": 3},))]
    # A reconnection to an agent whose formats changed is refused, said why.
    meta["conversation_initiation_metadata_event"]["agent_output_audio_format"] = "pcm_16000"
    (refused,) = dialect.parse(meta)
    assert isinstance(refused, ModelError) and refused.code == "audio_format_changed"


def test_ultravox_puts_transcript_deltas_together_and_declares_client_tools() -> None:
    from bridge.agents import UltravoxCall
    from bridge.agents.tools import BRIDGE_TOOLS
    from bridge.agents.wire import Transcript

    dialect = UltravoxCall({"maxDuration": "600s"})
    assert dialect.session_limit_s == 600.0
    parts = [("Hel", False), ("lo", True)]
    said = [
        dialect.parse({"type": "transcript", "role": "agent", "delta": d, "final": f, "ordinal": 1})
        for d, f in parts
    ]
    assert said == [[], [Transcript("agent", "Hello")]]
    # The socket closes in a reply (its final never came): what came of it is told then; not
    # an older reply the caller cut off, which never was final.
    for role, delta, final, ordinal in [
        ("agent", "Sor", False, 2),
        ("user", "Wait", True, 3),
        ("agent", "It left", False, 4),
    ]:
        dialect.parse(
            {"type": "transcript", "role": role, "delta": delta, "final": final, "ordinal": ordinal}
        )
    assert dialect.finish() == [Transcript("agent", "It left")] and dialect.finish() == []
    ask = dialect.preflight("https://api.ultravox.ai/api/", "k", [BRIDGE_TOOLS["dtmf"]], "call-1")
    assert ask.url == "https://api.ultravox.ai/api/calls?priorCallId=call-1"
    assert ask.headers == {"X-API-Key": "k"} and ask.expect == 201
    assert ask.body is not None and ask.body["firstSpeaker"] == "FIRST_SPEAKER_USER"
    (tool,) = ask.body["selectedTools"]
    assert tool["temporaryTool"]["client"] == {}
    assert tool["temporaryTool"]["dynamicParameters"][0]["required"] is True
    url, headers = dialect.joined({"joinUrl": "wss://voice.example/calls/1?x=1"})
    assert url == "wss://voice.example/calls/1?x=1&apiVersion=1" and headers == {}


def test_ultravox_a_reply_cut_on_one_socket_mutes_no_message_of_the_next() -> None:
    """A reply cut by the caller is told at ``playback_clear_buffer``, and its late ``final``
    is not told again; but the socket it came on closes (a renewal, a reconnection: the
    dialect is the agent's for the whole call) and the next call's messages have ordinals of
    their own (one whose ``priorCallId`` was refused starts over). Before, the cut one's
    ordinal stayed marked: the next call's agent message under it was never told."""
    from bridge.agents import UltravoxCall
    from bridge.agents.wire import Interrupted, Transcript

    dialect = UltravoxCall({})

    def said(delta: str, final: bool, ordinal: int) -> list[Any]:
        body = {"role": "agent", "delta": delta, "final": final, "ordinal": ordinal}
        return dialect.parse({"type": "transcript", **body})

    assert said("It le", False, 2) == []
    cut = dialect.parse({"type": "playback_clear_buffer"})
    assert cut == [Interrupted(), Transcript("agent", "It le")]
    assert said("ft.", True, 2) == []  # its late final: told already
    assert said("Sorry", False, 4) == []
    cut = dialect.parse({"type": "playback_clear_buffer"})
    assert cut == [Interrupted(), Transcript("agent", "Sorry")]
    assert dialect.finish() == []  # the socket closes: that reply's final never comes
    # The next call (no history: its ordinals start over) says its fourth message.
    assert said("Hello again.", True, 4) == [Transcript("agent", "Hello again.")]


def _realtime(b64: str, n: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "event_id": f"evt_bridge_{n}", "audio": b64}


@pytest.mark.parametrize(
    "make,message",
    [
        (OpenAIRealtime, _realtime),
        (XaiGrokVoice, _realtime),
        (AzureVoiceLive, _realtime),
        (
            GeminiLive,
            lambda b64, n: {
                "realtimeInput": {"audio": {"data": b64, "mimeType": "audio/pcm;rate=16000"}}
            },
        ),
        (OpenAILive, lambda b64, n: {"type": "session.input_audio.append", "audio": b64}),
        (ElevenLabsAgent, lambda b64, n: {"user_audio_chunk": b64}),
    ],
)
def test_the_callers_audio_is_the_text_json_dumps_writes(make: Any, message: Any) -> None:
    """Written from a template (``wire.MessageText``), not by ``json.dumps`` each frame: the
    very same text, frame after frame, the Realtime family's event ids counted on between the
    control messages."""
    dialect = make()
    rng = np.random.default_rng(5)
    for n in range(1, 4):
        pcm = rng.integers(-32768, 32768, 320).astype("<i2").tobytes()
        text = dialect.audio(pcm)
        b64 = base64.b64encode(pcm).decode()
        assert text == json.dumps(message(b64, 2 * n - 1))
        if isinstance(dialect, RealtimeFamily):  # the next control message takes the next id
            (cancel,) = dialect.truncate("item", 20)
            assert cancel["event_id"] == f"evt_bridge_{2 * n}"
