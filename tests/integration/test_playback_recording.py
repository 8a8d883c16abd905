"""Playback into calls and recording out of them, over real calls."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from bridge.api.keys import ENGINE, MANAGER, PLAYBACK, RECORDINGS
from bridge.attachments.wav import repair_wav, wav_header
from bridge.audio import rms_dbfs

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..support.audio_files import encode, make
from ..support.calls import wait_state, webrtc_call
from ..support.spectrum import band_energy
from ..support.waits import until_passes


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


@pytest.fixture
def media_client(make_client, tmp_path):
    async def factory(**kw):
        (tmp_path / "media").mkdir(exist_ok=True)
        opts = dict(data_dir=str(tmp_path / "data"), media_dir=str(tmp_path / "media"))
        opts.update(kw)
        return await make_client(**opts)

    return factory


@pytest.mark.parametrize("kind", ["wav", "mp3", "opus"])
async def test_file_is_mixed_with_the_microphone(media_client, tmp_path, kind) -> None:
    client = await media_client(sim_peer="silence")
    (tmp_path / "media" / f"prompt.{kind}").write_bytes(make(kind, 1000.0, 3.0))
    events = await client.get("/call/events")
    call, rtc = await webrtc_call(client)
    await asyncio.sleep(0.5)
    resp = await client.post(
        "/call/play", json={"callID": call["callID"], "file": f"prompt.{kind}"}
    )
    assert resp.status == 201, await resp.text()
    playback_id = (await resp.json())["playbackId"]
    sim_call = next(iter(client.app[ENGINE].calls.values()))

    def hears_both() -> None:
        # The WhatsApp side hears both: the browser's 440 Hz and the file's 1000 Hz (the last
        # second, once the file's decoded start has reached the mix: a loaded host gets there
        # later than a fixed sleep allowed).
        heard = np.concatenate(list(sim_call.heard)[-50:])
        assert band_energy(heard, 16_000, 440) > 0.25
        assert band_energy(heard, 16_000, 1000) > 0.25

    await asyncio.sleep(1.2)
    await until_passes(hears_both, timeout=5)
    # The 3 s file finishes: its events, in order, the last one waited for (bounded).
    types: list[str] = []
    deadline = time.monotonic() + 10
    while "playback.finished" not in types and time.monotonic() < deadline:
        try:
            line = (await asyncio.wait_for(events.content.readline(), 0.5)).decode()
        except TimeoutError:
            continue
        if line.startswith("data: "):
            d = json.loads(line[6:])
            if d["type"].startswith("playback."):
                assert d["playbackId"] == playback_id
                types.append(d["type"])
    assert types == ["playback.started", "playback.finished"]

    def only_the_microphone() -> None:
        # Finished: the last 500 ms WhatsApp heard hold no file, once the file's end has been
        # mixed and heard (waited for, bounded: a loaded host hears it later than 0.6 s on).
        heard = np.concatenate(list(sim_call.heard)[-25:])
        assert band_energy(heard, 16_000, 1000) < 0.05

    await asyncio.sleep(0.6)
    await until_passes(only_the_microphone, timeout=5)
    events.close()
    await rtc.close()


async def test_target_both_and_stop(media_client, tmp_path) -> None:
    client = await media_client(sim_peer="silence")
    (tmp_path / "media" / "long.wav").write_bytes(make("wav", 1000.0, 10.0))
    call, rtc = await webrtc_call(client)
    resp = await client.post(
        "/call/play", json={"callID": call["callID"], "file": "long.wav", "target": "both"}
    )
    playback_id = (await resp.json())["playbackId"]
    await rtc.recorder.tone_arrives(1000.0)
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    heard = rtc.recorder.since(t0)
    assert band_energy(heard, rtc.recorder.rate, 1000) > 0.5  # the browser hears it too
    resp = await client.post("/call/play/stop", json={"callID": call["callID"]})
    assert (await resp.json())["stopped"] == [playback_id]
    await asyncio.sleep(0.8)
    t0 = time.monotonic()
    await asyncio.sleep(0.6)
    assert rms_dbfs(rtc.recorder.since(t0) / 32768) < -50
    await rtc.close()


async def test_play_without_a_browser_and_from_asset_base64_url(
    media_client, tmp_path, aiohttp_server
) -> None:
    clip = make("mp3", 1400.0, 3.0, amplitude=0.25)

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=clip, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/clip", serve)
    server = await aiohttp_server(app)
    client = await media_client(sim_peer="silence", play_url_allow=("127.0.0.1",))
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    form = aiohttp.FormData()
    form.add_field("audio", make("opus", 600.0, 3.0, amplitude=0.25), filename="hello.opus")
    resp = await client.post("/call/audio-assets", data=form)
    asset = await resp.json()
    assert resp.status == 201 and asset["format"] == "ogg"
    assert asset["durationMs"] == pytest.approx(3000, abs=60)
    listed = (await (await client.get("/call/audio-assets")).json())["assets"]
    assert [a["assetId"] for a in listed] == [asset["assetId"]]
    for body in (
        {"assetId": asset["assetId"]},
        {"audioBase64": base64.b64encode(make("wav", 1000.0, 3.0, amplitude=0.25)).decode()},
        {"audioUrl": str(server.make_url("/clip"))},
    ):
        resp = await client.post("/call/play", json={"callID": call["callID"], **body})
        assert resp.status == 201, await resp.text()
    # No browser at all: the playbacks alone open the engine leg and, clocked by the bus,
    # reach the WhatsApp side.
    await asyncio.sleep(1.0)
    sim_call = next(iter(client.app[ENGINE].calls.values()))
    heard = np.concatenate(list(sim_call.heard)[-25:])
    # Each source is heard: the asset at 600 Hz, base64 at 1000 Hz, the URL at 1400 Hz.
    for freq in (600, 1000, 1400):
        assert band_energy(heard, 16_000, freq) > 0.15, freq
    assert {f.size for f in sim_call.heard} == {320}
    resp = await client.delete(f"/call/audio-assets/{asset['assetId']}")
    assert resp.status == 200
    assert (await (await client.get("/call/audio-assets")).json())["assets"] == []


async def test_bad_media_requests_are_clear_4xx(media_client, tmp_path) -> None:
    client = await media_client(play_url_max_bytes=4096)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    (tmp_path / "secret.wav").write_bytes(make("wav", 1000.0, 0.2))
    cases = [
        ({"callID": cid, "file": "../secret.wav"}, 400, "bad_path"),
        ({"callID": cid, "file": "/etc/passwd"}, 400, "bad_path"),
        ({"callID": cid, "file": "missing.wav"}, 404, "not_found"),
        ({"callID": cid, "audioUrl": "http://169.254.169.254/latest"}, 403, "url_not_allowed"),
        ({"callID": cid, "audioUrl": "file:///etc/passwd"}, 400, "bad_request"),
        (
            {"callID": cid, "audioBase64": base64.b64encode(b"not audio at all" * 10).decode()},
            400,
            "undecodable_audio",
        ),
        ({"callID": cid, "audioBase64": "%%%"}, 400, "bad_request"),
        ({"callID": cid, "file": "a.wav", "assetId": "as_x"}, 400, "bad_request"),
        ({"callID": cid, "assetId": "as_nope"}, 404, "not_found"),
        # An id longer than a file name may be: it was a 500 (the store asked the disk).
        ({"callID": cid, "assetId": "as_" + "a" * 300}, 404, "not_found"),
        ({"callID": "nope", "file": "a.wav"}, 404, "call_not_found"),
    ]
    for body, status, code in cases:
        resp = await client.post("/call/play", json=body)
        got = await resp.json()
        assert (resp.status, got["error"]["code"]) == (status, code), (body, got)
    form = aiohttp.FormData()
    form.add_field("audio", b"\x00" * 5000, filename="big.wav")
    resp = await client.post("/call/audio-assets", data=form)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    form = aiohttp.FormData()
    form.add_field("audio", b"this is text, not audio", filename="x.mp3")
    resp = await client.post("/call/audio-assets", data=form)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "undecodable_audio"
    resp = await client.post("/call/record", json={"callID": cid, "path": "../../etc/evil"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_path"
    resp = await client.get("/call/recordings/rec_nope")
    assert resp.status == 404
    resp = await client.delete("/call/audio-assets/as_" + "a" * 300)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_play_takes_audio_as_large_as_its_setting_says(media_client) -> None:
    """``BRIDGE_PLAY_URL_MAX_BYTES`` above 48 MiB: ``/call/play`` takes ``audioBase64`` that
    large (a body past 48 MiB), and a body larger than the setting allows is refused from its
    length. The body's limit was a fixed 48 MiB whatever the setting said: 413 ``too_large``
    for audio the setting allowed."""
    limit = 40 * 1024 * 1024
    client = await media_client(sim_peer="silence", play_url_max_bytes=limit)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    size = 37 * 1024 * 1024  # 49.3 MiB of base64
    audio = wav_header(size) + np.full(size // 2, 1000, dtype="<i2").tobytes()
    body = json.dumps({"callID": cid, "audioBase64": base64.b64encode(audio).decode()})
    del audio
    assert len(body) > 48 * 1024 * 1024
    resp = await client.post("/call/play", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    assert client.app[MANAGER].runtime(cid).attached("playback")
    over = " " * (limit * 4 // 3 + 128 * 1024)  # larger than any body the setting allows
    resp = await client.post("/call/play", data=over, headers={"Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    await client.post("/call/hangup", json={"callID": cid})


async def test_an_upload_that_stops_decoding_past_its_start_is_a_400_and_leaves_nothing(
    media_client, tmp_path
) -> None:
    """A FLAC cut from a stream (its header says no length) and cut short: its start decodes,
    so it passes the check, and its length is measured by decoding it all, which fails at the
    cut. That failure was a 500 and left the file in the asset store; now it is a 400
    ``undecodable_audio`` and nothing is kept."""
    client = await media_client()
    flac = encode("flac", "flac", 440.0, 2.0, 16_000, streamed=True)
    form = aiohttp.FormData()
    form.add_field("audio", flac[: len(flac) // 2], filename="cut.flac")
    resp = await client.post("/call/audio-assets", data=form)
    body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "undecodable_audio"), body
    assert (await (await client.get("/call/audio-assets")).json())["assets"] == []
    assert list(client.app[PLAYBACK].assets.root.iterdir()) == []
    form = aiohttp.FormData()  # the whole stream is an asset, its length measured
    form.add_field("audio", flac, filename="whole.flac")
    resp = await client.post("/call/audio-assets", data=form)
    assert resp.status == 201 and (await resp.json())["durationMs"] == 2000
    # A NUT file's header says a length of 0: measured too, not an asset of 0 ms.
    form = aiohttp.FormData()
    form.add_field("audio", encode("nut", "pcm_s16le", 440.0, 2.0, 16_000), filename="a.nut")
    resp = await client.post("/call/audio-assets", data=form)
    assert resp.status == 201 and (await resp.json())["durationMs"] == 2000


async def test_recording_three_tracks(media_client, tmp_path) -> None:
    client = await media_client(sim_peer="tone", sim_tone_hz=660.0)
    call, rtc = await webrtc_call(client, freq=440.0)
    await asyncio.sleep(1.0)
    resp = await client.post("/call/record", json={"callID": call["callID"]})
    assert resp.status == 201
    t0 = time.monotonic()
    await asyncio.sleep(2.5)
    resp = await client.post("/call/record/stop", json={"callID": call["callID"]})
    elapsed_ms = (time.monotonic() - t0) * 1000
    recordings = {r["kind"]: r for r in (await resp.json())["recordings"]}
    assert set(recordings) == {"inbound", "outbound", "mixed"}
    for kind, rec in recordings.items():
        assert rec["path"] == f"files/calls/{call['callID']}-{kind}.wav"
        # The wall clock brackets it loosely (a loaded runner's clock can resync past a stall).
        assert rec["durationMs"] == pytest.approx(elapsed_ms, abs=300)
        resp = await client.get(f"/call/recordings/{rec['recordingId']}")
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
        path = tmp_path / "data" / rec["path"]
        assert len(await resp.read()) == rec["sizeBytes"] == path.stat().st_size
        pcm, rate = read_wav(path)
        assert rate == 16_000
        assert pcm.size * 1000 / rate == pytest.approx(rec["durationMs"], abs=20)
        tail = pcm[8000:]  # skip the first half second
        if kind == "inbound":
            assert band_energy(tail, rate, 660) > 0.8 and band_energy(tail, rate, 440) < 0.02
        elif kind == "outbound":
            assert band_energy(tail, rate, 440) > 0.8 and band_energy(tail, rate, 660) < 0.02
        else:
            assert band_energy(tail, rate, 440) > 0.25 and band_energy(tail, rate, 660) > 0.25
    assert recordings["inbound"]["expiresAt"] > recordings["inbound"]["createdAt"]
    await rtc.close()


async def test_record_all_and_ready_event(media_client) -> None:
    """Every recording event names its segment, the first's too (``1``: before, its
    ``recording.started`` had none, where a moved call's next segments' had theirs)."""
    client = await media_client(record_all=True)
    events = await client.get("/call/events")
    call, rtc = await webrtc_call(client)
    await asyncio.sleep(1.0)
    await client.post("/call/hangup", json={"callID": call["callID"]})
    seen: dict[str, dict] = {}
    while "recording.ready" not in seen:
        line = (await asyncio.wait_for(events.content.readline(), 3)).decode()
        if line.startswith("data: ") and '"recording.' in line:
            event = json.loads(line[6:])
            seen[event["type"]] = event
    started, ready = seen["recording.started"], seen["recording.ready"]
    assert started["segment"] == ready["segment"] == 1, (started, ready)
    assert {r["kind"] for r in ready["recordings"]} == {"inbound", "outbound", "mixed"}
    assert "pcm" not in line and all("recordingId" in r for r in ready["recordings"])
    events.close()
    await rtc.close()


async def test_crash_repair_and_retention_sweeper(media_client, tmp_path) -> None:
    calls = tmp_path / "data" / "files" / "calls"
    calls.mkdir(parents=True)
    crashed = calls / "crashed-inbound.wav"
    crashed.write_bytes(wav_header(0) + np.zeros(16000, dtype="<i2").tobytes())
    client = await media_client()
    service = client.app[RECORDINGS]
    assert service.repaired == 1
    with wave.open(str(crashed)) as w:
        assert w.getnframes() == 16000  # the header now says what the file holds
    assert not repair_wav(crashed)
    call, rtc = await webrtc_call(client)
    await client.post("/call/record", json={"callID": call["callID"]})
    await asyncio.sleep(0.5)
    fresh = await (await client.post("/call/record/stop", json={"callID": call["callID"]})).json()
    old = service.index[fresh["recordings"][0]["recordingId"]]
    old.expires_at = time.time() - 1  # as if recorded 31 days ago
    assert service.sweep() == 1
    assert not old.path.exists() and not old.path.with_suffix(".json").exists()
    for rec in fresh["recordings"][1:]:
        assert (tmp_path / "data" / rec["path"]).exists()
        assert (await client.get(f"/call/recordings/{rec['recordingId']}")).status == 200
    await rtc.close()


async def test_playback_reaches_a_zuckzapgo_engine(make_client, tmp_path) -> None:
    fake = FakeZuckZapGo(tone_hz=700.0)
    await fake.start()
    try:
        (tmp_path / "media").mkdir()
        (tmp_path / "media" / "p.wav").write_bytes(make("wav", 1000.0, 5.0))
        client = await make_client(
            engine="zuckzapgo",
            engine_url=fake.url,
            engine_token="ztok",
            engine_poll_interval=0.2,
            media_dir=str(tmp_path / "media"),
            data_dir=str(tmp_path / "data"),
        )
        call, rtc = await webrtc_call(client, freq=440.0)
        await asyncio.sleep(0.8)
        await client.post("/call/play", json={"callID": call["callID"], "file": "p.wav"})
        await asyncio.sleep(1.5)
        pcm = next(iter(fake.calls.values())).heard()[-16000:]
        assert band_energy(pcm, 16_000, 440) > 0.25 and band_energy(pcm, 16_000, 1000) > 0.25
        await rtc.close()
    finally:
        await fake.stop()


async def test_recording_paths_stay_under_files_and_are_not_reused(make_client, tmp_path) -> None:
    client = await make_client(data_dir=str(tmp_path / "data"))
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    for bad in (".", "", "../x", "/abs/x"):
        resp = await client.post("/call/record", json={"callID": call["callID"], "path": bad})
        assert resp.status == 400, bad
    resp = await client.post("/call/record", json={"callID": call["callID"], "path": "mine/one"})
    assert resp.status == 201
    assert (tmp_path / "data" / "files" / "mine" / "one-inbound.wav").exists()
    resp = await client.post("/call/record/stop", json={"callID": call["callID"]})
    assert resp.status == 200
    resp = await client.post("/call/record", json={"callID": call["callID"], "path": "mine/one"})
    assert resp.status == 409


async def test_a_call_recorded_again_after_a_stop_records_into_files_of_its_own(
    make_client, tmp_path
) -> None:
    """Recording stopped and started again on the same call without a ``path`` (a pause while
    the caller reads a card number): the second recording gets ``{callID}-2`` and the first's
    files stay as they were. The default path was taken, and the restart was a 409: no way to
    record the rest of the call but to invent a path."""
    client = await make_client(sim_peer="tone", data_dir=str(tmp_path / "data"))
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = call["callID"]
    await wait_state(client, cid, "active")
    calls = tmp_path / "data" / "files" / "calls"
    seen = []
    for n in ("", "-2", "-3"):
        resp = await client.post("/call/record", json={"callID": cid})
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["path"] == f"files/calls/{cid}{n}"
        await asyncio.sleep(0.3)
        stopped = await (await client.post("/call/record/stop", json={"callID": cid})).json()
        paths = sorted(r["path"] for r in stopped["recordings"])
        assert paths == [f"files/calls/{cid}{n}-{k}.wav" for k in ("inbound", "mixed", "outbound")]
        seen.append({p: (tmp_path / "data" / p).stat().st_size for p in paths})
    for files in seen:  # none overwritten by a later one
        for path, size in files.items():
            assert (tmp_path / "data" / path).stat().st_size == size > 44
    assert len(list(calls.glob(f"{cid}*.json"))) == 9  # each file's sidecar: all indexed
    resp = await client.post("/call/record", json={"callID": cid, "path": f"calls/{cid}-2"})
    assert resp.status == 409  # a path given is never reused


async def test_a_call_never_plays_more_than_its_limit_of_files_at_once(media_client) -> None:
    """``MAX_PER_CALL`` playbacks mixed into one call: checked before the audio was opened (in
    a thread), so requests that came together all passed the check and all played — a dozen
    at once made a dozen loops mixed into the call. Those past the limit are 409."""
    from bridge.api.keys import MANAGER
    from bridge.attachments.playback import MAX_PER_CALL

    client = await media_client(sim_peer="silence")
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    clip = base64.b64encode(make("wav", 1000.0, 1.0, amplitude=0.05)).decode()
    body = {"callID": call["callID"], "audioBase64": clip, "loop": True}
    answers = await asyncio.gather(
        *(client.post("/call/play", json=body) for _ in range(MAX_PER_CALL + 4))
    )
    statuses = sorted(r.status for r in answers)
    assert statuses == [201] * MAX_PER_CALL + [409] * 4, statuses
    refused = [await r.json() for r in answers if r.status == 409]
    assert all(b["error"]["code"] == "invalid_call_state" for b in refused), refused
    playing = client.app[MANAGER].runtime(call["callID"]).attached("playback")
    assert len(playing) == MAX_PER_CALL


async def test_an_unreadable_asset_record_costs_that_asset_only(media_client, caplog) -> None:
    """An asset's JSON record cut short (the process killed while it was written, or another
    worker sharing ``BRIDGE_DATA_DIR`` writing it as this one lists): every ``GET
    /call/audio-assets`` was a 500 from then on, and that id's requests too. The others are
    listed, that one is 404, said once at WARNING."""
    client = await media_client()
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 1000.0, 0.5), filename="ok.wav")
    good = await (await client.post("/call/audio-assets", data=form)).json()
    store = client.app[PLAYBACK].assets.root
    (store / "as_0123456789abcdef.json").write_text('{"assetId": "as_0123456789abcdef", "dura')
    (store / "as_0123456789abcdef.audio").write_bytes(make("wav", 500.0, 0.5))
    for _ in range(3):
        resp = await client.get("/call/audio-assets")
        assert resp.status == 200, await resp.text()
        assert [a["assetId"] for a in (await resp.json())["assets"]] == [good["assetId"]]
    resp = await client.delete("/call/audio-assets/as_0123456789abcdef")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    said = [r for r in caplog.records if "as_0123456789abcdef" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING", [r.getMessage() for r in said]


def test_a_segment_a_crashed_worker_left_is_finished_whole(tmp_path) -> None:
    """The segment a crashed worker left (its adopter finishes it): one track whose header
    still says empty, the other killed before even its header reached the disk. Both come out
    whole WAVs, mixed, with their sidecars; an empty file once read as -2 ms long."""
    from bridge.attachments.left_open import seal_left
    from bridge.attachments.recorded import Recording

    calls = tmp_path / "files" / "calls"
    calls.mkdir(parents=True)
    inbound, outbound = calls / "c1-inbound.wav", calls / "c1-outbound.wav"
    pcm = (8000 * np.sin(2 * np.pi * 700 * np.arange(16000) / 16000)).astype("<i2")
    inbound.write_bytes(wav_header(0) + pcm.tobytes())
    outbound.write_bytes(b"")
    made = seal_left("c1", [inbound, outbound], tmp_path, 86400.0)
    assert [(r.kind, r.duration_ms) for r in made] == [
        ("inbound", 1000),
        ("outbound", 0),
        ("mixed", 1000),
    ]
    mixed, rate = read_wav(calls / "c1-mixed.wav")
    assert rate == 16000 and band_energy(mixed, 16000, 700) > 0.9
    assert read_wav(outbound)[0].size == 0
    for rec in made:
        assert Recording.from_sidecar(rec.path.with_suffix(".json")).id == rec.id


def _open_on(path: Path) -> int:
    """How many of the process's file descriptors are open on ``path``."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += fd.readlink() == path
        except OSError:
            continue  # closed meanwhile
    return count


async def test_a_play_refused_as_the_call_ends_leaves_no_file_open(
    media_client, tmp_path, monkeypatch
) -> None:
    """A play whose call ends while its file is being opened (in a thread): 409, and the file
    it opened is closed by then. Its decoder, open on the file, was left for whatever dropped
    the last reference to it (here the test keeps one, as a logged traceback would): a file
    descriptor a refused play."""
    import threading

    from bridge.attachments import playback

    client = await media_client(sim_peer="silence")
    prompt = (tmp_path / "media" / "prompt.wav").resolve()
    prompt.write_bytes(make("wav", 1000.0, 2.0))
    call, rtc = await webrtc_call(client)
    opened, stalled = playback._opened, threading.Event()
    kept: list[object] = []

    def stalled_open(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        stalled.wait(5.0)  # a disk slow to open the file, till the call has ended
        kept.append(opened(*args, **kwargs))  # type: ignore[arg-type]
        return kept[-1]

    monkeypatch.setattr(playback, "_opened", stalled_open)
    playing = asyncio.ensure_future(
        client.post("/call/play", json={"callID": call["callID"], "file": "prompt.wav"})
    )
    await asyncio.sleep(0.1)  # the file is opening
    try:
        assert (await client.post("/call/hangup", json=call)).status == 200
    finally:
        stalled.set()
    resp = await asyncio.wait_for(playing, 5)
    assert resp.status == 409, await resp.text()
    assert len(kept) == 1
    assert _open_on(prompt) == 0
    await rtc.close()
