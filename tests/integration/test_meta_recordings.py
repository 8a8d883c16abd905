"""Meta's own recordings and transcripts of calls, and the recording policy, against the
fake Meta: asked for on ``/call/make`` and ``/call/answer`` (Graph road only), fetched when
Meta's webhook announces them (retried while the URL lives), stored with the call's
recordings (the tone of Meta's Ogg/Opus file asserted in the stored WAV), announced as
``recording.ready {source: "meta"}`` and ``transcript.ready``; and a number or tenant that
forbids recording gets none of any kind."""

from __future__ import annotations

import asyncio
import json
import logging
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.api.keys import RECORDINGS

from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.spectrum import dominant_frequency
from ..support.waits import until

PURPOSE = {"purpose": "quality assurance", "announcementLanguage": "en_US"}
TRANSCRIPT = {
    "metadata": {"audio": {"duration": 4.0, "sample_rate": 16000, "channels": 2}},
    "transcript": {
        "text": "[Business] Hello there [Customer] Hi",
        "language": "en",
        "segments": [
            {
                "id": 1,
                "speaker": "Business",
                "channel": 0,
                "start": 0.5,
                "end": 1.2,
                "words": [
                    {"word": "Hello", "start": 0.5, "end": 0.8},
                    {"word": "there", "start": 0.8, "end": 1.2},
                ],
            },
            {
                "id": 2,
                "speaker": "Customer",
                "channel": 1,
                "start": 2.0,
                "end": 2.4,
                "words": [{"word": "Hi", "start": 2.0, "end": 2.4}],
            },
        ],
    },
}


@pytest.fixture
def mclient(make_client, meta, tmp_path):
    async def factory(**kw: Any) -> Any:
        opts = {**meta.bridge_settings(), "data_dir": str(tmp_path / "data"), **kw}
        return await make_client(**opts)

    return factory


async def next_event(events, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next SSE event of type ``wanted`` (others are skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        line = await asyncio.wait_for(events.content.readline(), deadline - loop.time())
        if line.startswith(b"data: "):
            data = json.loads(line[6:])
            if data["type"] == wanted:
                return data


async def no_event(events, unwanted: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        try:
            line = await asyncio.wait_for(events.content.readline(), deadline - loop.time())
        except TimeoutError:
            return
        assert f'"type": "{unwanted}"'.encode() not in line.replace(b'":"', b'": "'), line


def wav_tone(path: Path) -> tuple[float, float]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16_000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return dominant_frequency(pcm[1600:], 16_000), pcm.size / 16_000


async def test_meta_records_a_dialled_call_the_file_is_fetched_and_stored(mclient, meta, tmp_path):
    client = await mclient()
    events = await client.get("/call/events")
    resp = await client.post(
        "/call/make",
        json={"phone": "+15550001111", "recording": PURPOSE, "transcription": PURPOSE},
    )
    call = await resp.json()
    assert resp.status == 201, call
    connect = next(a for a in meta.actions if a.get("action") == "connect")
    meta_option = {
        "status": "ENABLED",
        "purpose": "quality assurance",
        "announcement_language": "en_US",
    }
    assert connect["recording"] == meta_option and connect["transcription"] == meta_option
    [(wacid, mcall)] = meta.meta_calls.items()
    await meta.post(client, meta.envelope(meta.answer_event(mcall)))
    await wait_state(client, call["callID"], "active")
    await client.post("/call/hangup", json={"callID": call["callID"]})
    await wait_state(client, call["callID"], "ended")

    # Meta's file (Ogg/Opus, a 523 Hz tone) is announced after the call; the first download
    # fails (Meta's URL is retried while it lives).
    meta.media.fail_next = 1
    ogg = make("opus", 523.0, 3.0)
    body = meta.envelope(meta.media.recording_event(wacid, "15550001111", ogg, "audio/ogg"))
    assert (await meta.post(client, body)).status == 200
    ready = await next_event(events, "recording.ready")
    assert ready["source"] == "meta" and ready["callID"] == call["callID"]
    [rec] = ready["recordings"]
    assert rec["kind"] == "meta" and rec["callID"] == call["callID"]
    assert meta.media.downloads == 2 and meta.media.lookups == 1  # a fresh URL for the retry
    resp = await client.get(f"/call/recordings/{rec['recordingId']}")
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    assert len(await resp.read()) == rec["sizeBytes"]
    freq, seconds = wav_tone(tmp_path / "data" / rec["path"])
    assert freq == pytest.approx(523.0, abs=5) and seconds == pytest.approx(3.0, abs=0.1)
    assert rec["durationMs"] == pytest.approx(3000, abs=100)
    metrics = await (await client.get("/metrics")).text()
    assert 'bridge_engine_file_fetch_seconds_count{engine="cloudapi"} 1.0' in metrics

    body = meta.envelope(meta.media.transcription_event(wacid, "15550001111", TRANSCRIPT))
    assert (await meta.post(client, body)).status == 200
    transcript = await next_event(events, "transcript.ready")
    assert transcript["callID"] == call["callID"] and transcript["language"] == "en"
    assert [(w["word"], w["channel"]) for w in transcript["words"]] == [
        ("Hello", 0),
        ("there", 0),
        ("Hi", 1),
    ]
    # Stored with the call's recordings, at the same route, as JSON.
    resp = await client.get(f"/call/recordings/{transcript['recordingID']}")
    assert resp.status == 200 and resp.content_type == "application/json"
    stored = await resp.json()
    assert stored["language"] == "en" and len(stored["words"]) == 3
    events.close()


async def test_meta_records_an_answered_call_and_bad_options_are_named(mclient, meta):
    client = await mclient()
    mcall = await meta.user_calls(client, "15550002222")
    call = await until(lambda: _live(client), 5.0, "the ringing call")
    for bad, field in [
        ({"purpose": ""}, "recording/purpose"),
        ({"purpose": "x" * 251}, "recording/purpose"),
        ({"purpose": "qa", "announcementLanguage": "english"}, "recording/announcementLanguage"),
        ({"purpose": "qa", "colour": "red"}, "colour"),
        ("yes", "recording"),
    ]:
        resp = await client.post("/call/answer", json={"callID": call["callID"], "recording": bad})
        error = (await resp.json())["error"]
        assert resp.status == 400 and field in error["message"], (bad, error)
    resp = await client.post(
        "/call/answer", json={"callID": call["callID"], "transcription": {"purpose": "notes"}}
    )
    assert resp.status == 200, await resp.text()
    accept = next(a for a in meta.actions if a.get("action") == "accept")
    assert accept["transcription"] == {
        "status": "ENABLED",
        "purpose": "notes",
        "announcement_language": "en",
    }
    assert "recording" not in accept
    assert meta.media.asked[mcall.wacid] == {"transcription": accept["transcription"]}


async def _live(client) -> dict[str, Any] | None:
    calls = (await (await client.get("/call/status")).json())["calls"]
    return calls[0] if calls and calls[0]["state"] == "ringing" else None


async def test_meta_recording_is_refused_off_the_graph_road(make_client):
    client = await make_client()  # the simulated engine: no Meta to record
    resp = await client.post("/call/make", json={"phone": "15550001111", "recording": PURPOSE})
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "meta_recording_not_supported", error
    assert "recording" in error["message"]


async def test_a_forbidden_number_gets_no_recording_of_any_kind(mclient, meta, tmp_path, caplog):
    client = await mclient(record_all=True)
    meta.add_number("2098765432", "second-token")
    body = {
        "phone": "+15550783000",
        "engine": "cloudapi",
        "recording": "forbidden",
        "cloudapi": meta.number_fields("2098765432"),
    }
    resp = await client.post("/numbers", json=body)
    assert resp.status == 201, await resp.text()
    number_id = (await resp.json())["numberID"]
    events = await client.get("/call/events")

    # Meta's recording on a dial: refused before Meta is asked.
    resp = await client.post(
        "/call/make", json={"phone": "15550001111", "from": number_id, "recording": PURPOSE}
    )
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "recording_forbidden", error
    assert not [a for a in meta.actions if a.get("action") == "connect"]

    # Meta's on an answer: refused, the call still rings; answered without, it is active.
    mcall = await meta.user_calls(client, "15550003333", number="2098765432")
    call = await until(lambda: _live(client), 5.0, "the ringing call")
    resp = await client.post("/call/answer", json={"callID": call["callID"], "recording": PURPOSE})
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "recording_forbidden"
    assert (await (await client.get(f"/call/{call['callID']}")).json())["state"] == "ringing"
    resp = await client.post("/call/answer", json={"callID": call["callID"]})
    assert resp.status == 200
    # The bridge's own: refused; BRIDGE_RECORD_ALL did not start one either.
    resp = await client.post("/call/record", json={"callID": call["callID"]})
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "recording_forbidden", error
    assert f"number {number_id}" in error["message"]
    await asyncio.sleep(0.5)
    assert not client.app[RECORDINGS].index
    # A Meta recording announced anyway (asked for elsewhere) is discarded, said once.
    caplog.set_level(logging.WARNING)
    ogg = make("opus", 523.0, 1.0)
    item = meta.media.recording_event(mcall.wacid, "15550003333", ogg, "audio/ogg")
    await meta.post(client, meta.envelope(item, number="2098765432"))
    await until(lambda: meta.media.downloads == 1 or None, 5.0, "Meta's file fetched")
    await no_event(events, "recording.ready", 1.0)
    said = [r for r in caplog.records if f"recording forbidden by number {number_id}" in r.message]
    assert len(said) == 1
    assert not client.app[RECORDINGS].index
    assert not list((tmp_path / "data").glob("files/**/*.wav"))
    events.close()


async def test_a_tenant_that_forbids_recording_forbids_its_numbers(make_client, tmp_path):
    admin = {"Authorization": "Bearer admin-token"}
    client = await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path))
    tenant = await (await client.post("/tenants", json={"name": "clinic"}, headers=admin)).json()
    number = {"phone": "+15550783999", "engine": "sim", "tenantID": tenant["tenantID"]}
    number = await (await client.post("/numbers", json=number, headers=admin)).json()
    resp = await client.patch(
        f"/tenants/{tenant['tenantID']}", json={"recording": "forbidden"}, headers=admin
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        "/call/make", json={"phone": "5521999999999", "from": number["numberID"]}, headers=admin
    )
    call = await resp.json()
    assert resp.status == 201, call
    resp = await client.post("/call/record", json={"callID": call["callID"]}, headers=admin)
    error = (await resp.json())["error"]
    assert resp.status == 403 and error["code"] == "recording_forbidden", error
    assert f"tenant {tenant['tenantID']}" in error["message"]
    # Allowed again: the same call records.
    await client.patch(
        f"/tenants/{tenant['tenantID']}", json={"recording": "allowed"}, headers=admin
    )
    resp = await client.post("/call/record", json={"callID": call["callID"]}, headers=admin)
    assert resp.status == 201, await resp.text()


async def test_a_recording_stored_on_a_stalled_disk_holds_up_no_other_call(
    mclient, meta, monkeypatch
):
    """Meta's recording of an ended call is stored (decoded, written) while the disk stalls:
    another call's answer meanwhile is taken at once. The engine's one reader of events
    awaited the store, so every call of the worker waited for that disk: rung, answered and
    ended by nobody until it came back."""
    import threading

    from bridge.attachments import imported

    client = await mclient()
    first = await (await client.post("/call/make", json={"phone": "+15550001111"})).json()
    [(wacid, mcall)] = meta.meta_calls.items()
    await meta.post(client, meta.envelope(meta.answer_event(mcall)))
    await wait_state(client, first["callID"], "active")
    await client.post("/call/hangup", json={"callID": first["callID"]})
    await wait_state(client, first["callID"], "ended")
    second = await (await client.post("/call/make", json={"phone": "+15550003333"})).json()
    other = next(c for w, c in meta.meta_calls.items() if w != wacid)

    stalled, storing = threading.Event(), threading.Event()
    write = imported._write

    def stalled_write(*args: Any) -> Any:
        storing.set()
        stalled.wait(10.0)  # a volume that hangs (bounded, should the test fail)
        return write(*args)

    monkeypatch.setattr(imported, "_write", stalled_write)
    events = await client.get("/call/events")
    try:
        ogg = make("opus", 523.0, 1.0)
        body = meta.envelope(meta.media.recording_event(wacid, "15550001111", ogg, "audio/ogg"))
        assert (await meta.post(client, body)).status == 200
        await until(storing.is_set, 5.0, "the recording being stored")
        await meta.post(client, meta.envelope(meta.answer_event(other)))
        await wait_state(client, second["callID"], "active", timeout=3.0)
    finally:
        stalled.set()
    ready = await next_event(events, "recording.ready")
    assert ready["callID"] == first["callID"]
    events.close()
