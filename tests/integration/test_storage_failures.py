"""Files the API writes or reads on a request's word (recordings, audio assets, playback files):
a path the disk cannot take is a 400 naming it, a disk that fails is a 503 with the error body
(never a 500), and a call's end that cannot finish its recording says so once at WARNING."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.api.keys import MANAGER, RECORDINGS
from bridge.attachments import left_open, recorder, recording, wav
from bridge.attachments.assets import AssetStore
from bridge.errors import CallStateError

from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.waits import until


def _error(body: dict[str, Any]) -> str:
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    code: str = body["error"]["code"]
    return code


def _tasks_named(prefix: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]


def _disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def stall_track_files(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """A recording's track files, from now on, wait to be made (on the recordings' threads)
    until the first event is set (5 s at most); the second is set once one waits."""
    stalled, entered = threading.Event(), threading.Event()
    make_track = wav.WavTrack.__init__

    def stalling_track(self: wav.WavTrack, *args: Any) -> None:
        entered.set()
        stalled.wait(5.0)
        make_track(self, *args)

    monkeypatch.setattr(wav.WavTrack, "__init__", stalling_track)
    return stalled, entered


@pytest.fixture
async def call(make_client, tmp_path) -> tuple[Any, str]:
    media = tmp_path / "media"
    media.mkdir()
    client = await make_client(data_dir=str(tmp_path / "data"), media_dir=str(media))
    made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, made["callID"], "active")
    return client, made["callID"]


async def test_paths_the_disk_cannot_take_are_400(call, caplog) -> None:
    client, cid = call
    caplog.set_level(logging.ERROR)
    started = await client.post("/call/record", json={"callID": cid, "path": "first"})
    assert started.status == 201
    assert (await client.post("/call/record/stop", json={"callID": cid})).status == 200
    for path in (
        "first-inbound.wav/next",  # through a file the first recording wrote
        "n" * 300,  # a name longer than the file system takes
    ):
        resp = await client.post("/call/record", json={"callID": cid, "path": path})
        assert resp.status == 400, (path, await resp.text())
        assert _error(await resp.json()) == "bad_path"
    resp = await client.post("/call/play", json={"callID": cid, "file": "p" * 300 + ".wav"})
    assert resp.status == 400, await resp.text()
    assert _error(await resp.json()) == "bad_path"
    # Nothing was left attached: a good path records.
    again = await client.post("/call/record", json={"callID": cid, "path": "second"})
    assert again.status == 201, await again.text()
    assert not caplog.records, caplog.text


async def test_a_full_disk_is_503_storage_failed(call, monkeypatch, caplog) -> None:
    client, cid = call
    caplog.set_level(logging.ERROR)
    monkeypatch.setattr(wav.WavTrack, "__init__", _disk_full)
    resp = await client.post("/call/record", json={"callID": cid})
    assert resp.status == 503, await resp.text()
    assert _error(await resp.json()) == "storage_failed"
    monkeypatch.undo()

    monkeypatch.setattr(Path, "write_bytes", _disk_full)
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 600.0, 0.5, amplitude=0.25), filename="hello.wav")
    resp = await client.post("/call/audio-assets", data=form)
    assert resp.status == 503, await resp.text()
    assert _error(await resp.json()) == "storage_failed"
    monkeypatch.undo()

    assert (await client.post("/call/record", json={"callID": cid})).status == 201
    monkeypatch.setattr(recorder, "mix_files", _disk_full)
    resp = await client.post("/call/record/stop", json={"callID": cid})
    assert resp.status == 503, await resp.text()
    assert _error(await resp.json()) == "storage_failed"
    assert not caplog.records, caplog.text


async def test_a_recording_a_calls_end_cannot_finish_is_said_once(
    call, monkeypatch, caplog
) -> None:
    client, cid = call
    assert (await client.post("/call/record", json={"callID": cid})).status == 201
    monkeypatch.setattr(recorder, "mix_files", _disk_full)
    caplog.set_level(logging.WARNING)
    ended = await client.post("/call/hangup", json={"callID": cid})
    assert ended.status == 200
    await wait_state(client, cid, "ended")
    said = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert said[0].exc_info is None, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def stall_the_disk(monkeypatch) -> threading.Event:
    """Every recording's writes wait for the disk (a network volume that hangs) until the
    returned event is set; the writers' queues hold 10 frames, so they fill at once."""
    stalled = threading.Event()
    write_at = wav.WavTrack.write_at

    def stalling_write(self: wav.WavTrack, *args: Any) -> None:
        stalled.wait()
        write_at(self, *args)

    monkeypatch.setattr(recorder, "WRITE_QUEUE_FRAMES", 10)
    monkeypatch.setattr(wav.WavTrack, "write_at", stalling_write)
    return stalled


async def test_a_stalled_disk_never_holds_the_event_loop(call, monkeypatch) -> None:
    """A disk that stalls under a recording (a network volume that hangs): its writer thread
    falls behind, frames are dropped (counted), and the recording's stop waits for the disk
    off the event loop, which serves every other request meanwhile. The stop's end-of-file
    marker was queued from the loop, which waited for room behind the stalled frames: the
    whole worker froze (every call's media) until the disk came back."""
    client, cid = call
    stalled = stall_the_disk(monkeypatch)  # set: the disk answers again
    listener = await client.ws_connect(f"/call/{cid}/stream?role=listen")  # the audio flows
    assert (await client.post("/call/record", json={"callID": cid})).status == 201
    recorder = client.app[MANAGER].runtime(cid).attached("recorder")[0]
    await until(lambda: recorder.dropped_frames > 0, 5, "frames dropped behind the stall")
    comeback = threading.Timer(3.0, stalled.set)  # a bound, should the loop be held anyway
    comeback.start()
    try:
        stop = asyncio.ensure_future(client.post("/call/record/stop", json={"callID": cid}))
        await asyncio.sleep(0.1)  # the stop is under way, waiting for the disk
        assert (await client.get("/healthz")).status == 200
        assert not stalled.is_set(), "the event loop was held until the disk came back"
        assert not stop.done()
        stalled.set()
        resp = await asyncio.wait_for(stop, 10)
        assert resp.status == 200, await resp.text()
        kinds = {r["kind"] for r in (await resp.json())["recordings"]}
        assert kinds == {"inbound", "outbound", "mixed"}
    finally:
        stalled.set()
        comeback.cancel()
        await listener.close()


async def test_recordings_stuck_behind_a_stalled_disk_hold_up_no_playback(
    make_client, tmp_path, monkeypatch
) -> None:
    """Two calls' recordings stop while the disk stalls under them: their finishing waits for
    the disk, and a playback asked meanwhile still starts (its audio opened off the loop).
    The finishing ran on the loop's default thread pool (here two threads, six on two
    cores): recordings stuck behind the disk held every thread of it, and the playback's
    opening (any disk work of the worker's: reports, assets, sidecars) waited for the disk."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="default")
    loop.set_default_executor(pool)
    stalled = stall_the_disk(monkeypatch)  # set: the disk answers again
    client = await make_client(data_dir=str(tmp_path / "data"))
    calls, listeners, stops = [], [], []
    comeback = threading.Timer(4.0, stalled.set)  # a bound, should the playback wait anyway
    try:
        for _ in range(2):
            made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
            await wait_state(client, made["callID"], "active")
            calls.append(made["callID"])
            listeners.append(await client.ws_connect(f"/call/{made['callID']}/stream?role=listen"))
            assert (
                await client.post("/call/record", json={"callID": made["callID"]})
            ).status == 201
        recorders = [client.app[MANAGER].runtime(c).attached("recorder")[0] for c in calls]
        await until(
            lambda: all(r.dropped_frames for r in recorders), 5, "both writers stuck on the disk"
        )
        comeback.start()
        for cid in calls:
            stops.append(
                asyncio.ensure_future(client.post("/call/record/stop", json={"callID": cid}))
            )
        await asyncio.sleep(0.2)  # the stops are under way, waiting for the disk
        audio = base64.b64encode(make("wav", 600.0, 0.5)).decode()
        play = client.post("/call/play", json={"callID": calls[0], "audioBase64": audio})
        resp = await asyncio.wait_for(play, 10)
        assert resp.status == 201, await resp.text()
        assert not stalled.is_set(), "the playback waited for the disk to come back"
        assert not any(stop.done() for stop in stops)
        stalled.set()
        for stop in stops:
            assert (await asyncio.wait_for(stop, 10)).status == 200
    finally:
        stalled.set()
        comeback.cancel()
        for listener in listeners:
            await listener.close()


def test_the_asset_store_leaves_no_half_written_asset(tmp_path, monkeypatch) -> None:
    store = AssetStore(tmp_path / "assets")
    monkeypatch.setattr(Path, "write_text", _disk_full)
    with pytest.raises(Exception, match="No space left"):
        store.add(make("wav", 600.0, 0.5, amplitude=0.25), "a.wav")
    monkeypatch.undo()
    assert list((tmp_path / "assets").iterdir()) == []


def open_files(fragment: str) -> list[str]:
    """This process's open files whose path holds ``fragment``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if fragment in (target := os.readlink(f"/proc/self/fd/{fd}")):
                found.append(target)
    return found


async def test_a_stop_the_disk_fails_leaves_no_recording_file_open(call, monkeypatch) -> None:
    """The disk fails a recording's stop as it writes the first file's header (full): a 503,
    and neither file is left open. The first's handle stayed open and the second was never
    finished nor closed — two descriptors a call held until a garbage collection happened to
    find them (the recorder is in a cycle with the failure it raised)."""
    client, cid = call
    assert (await client.post("/call/record", json={"callID": cid})).status == 201
    await asyncio.sleep(0.2)  # some audio written
    assert len(open_files(f"{cid}-")) == 2  # inbound and outbound, being written
    header = wav.wav_header

    def full_at_the_header(data_bytes: int) -> bytes:
        if data_bytes:
            _disk_full()
        return header(data_bytes)

    monkeypatch.setattr(wav, "wav_header", full_at_the_header)
    gc.disable()  # only the recorder's own close may close them
    try:
        resp = await client.post("/call/record/stop", json={"callID": cid})
        assert resp.status == 503, await resp.text()
        assert _error(await resp.json()) == "storage_failed"
        assert open_files(f"{cid}-") == []
    finally:
        gc.enable()


async def test_a_recording_started_on_a_stalled_disk_never_holds_the_event_loop(
    call, monkeypatch
) -> None:
    """The volume stalls as a recording starts (``POST /call/record``; ``BRIDGE_RECORD_ALL``
    starts one at every answer): the start waits for the disk on the recordings' threads, and
    the worker serves every other request (and every call's media) meanwhile. Its files were
    made on the event loop: the whole worker froze until the disk came back."""
    client, cid = call
    stalled = threading.Event()
    make_track = wav.WavTrack.__init__

    def stalling_track(self: wav.WavTrack, *args: Any) -> None:
        stalled.wait()
        make_track(self, *args)

    monkeypatch.setattr(wav.WavTrack, "__init__", stalling_track)
    comeback = threading.Timer(3.0, stalled.set)  # a bound, should the loop be held anyway
    comeback.start()
    try:
        starting = asyncio.ensure_future(client.post("/call/record", json={"callID": cid}))
        again = asyncio.ensure_future(client.post("/call/record", json={"callID": cid}))
        await asyncio.sleep(0.1)  # the starts are under way, waiting for the disk
        assert (await client.get("/healthz")).status == 200
        assert not stalled.is_set(), "the event loop was held until the disk came back"
        assert not starting.done()
        stalled.set()
        answers = [await asyncio.wait_for(r, 10) for r in (starting, again)]
        assert sorted(r.status for r in answers) == [201, 409]  # one recording of the call
        resp = await client.post("/call/record/stop", json={"callID": cid})
        assert resp.status == 200, await resp.text()
        assert len((await resp.json())["recordings"]) == 3
    finally:
        stalled.set()
        comeback.cancel()


@pytest.mark.parametrize("crashed", [False, True])
async def test_a_recording_resumed_on_a_stalled_disk_never_holds_the_event_loop(
    call, monkeypatch, crashed
) -> None:
    """A recorded call moved here (a handover; ``crashed``: adopted from a worker that died,
    its segment left open) records on into its next segment while the volume stalls: its path
    is resolved and its files made (and the dead worker's segment looked for) on the
    recordings' threads, and the worker serves every other request meanwhile. They were on the
    event loop: the whole worker froze until the disk came back."""
    client, cid = call
    service, runtime = client.app[RECORDINGS], client.app[MANAGER].runtime(cid)
    pcm = np.full(16000, 4000, dtype="<i2").tobytes()
    for kind in ("inbound", "outbound"):  # segment 1, as a crashed worker left it
        (service.calls_dir / f"moved-{kind}.wav").write_bytes(wav.wav_header(0) + pcm)
    stalled = threading.Event()

    def stalling(real: Callable[..., Any]) -> Callable[..., Any]:
        def wait_then(*args: Any) -> Any:
            stalled.wait()
            return real(*args)

        return wait_then

    for module in (recording, left_open):
        monkeypatch.setattr(module, "inside", stalling(module.inside))
    monkeypatch.setattr(wav.WavTrack, "__init__", stalling(wav.WavTrack.__init__))
    comeback = threading.Timer(3.0, stalled.set)  # a bound, should the loop be held anyway
    comeback.start()
    try:
        moved = {"origin": "files/calls/moved", "segment": 1}
        resuming = asyncio.ensure_future(service.resume(runtime, moved, left_open=crashed))
        await asyncio.sleep(0.1)  # under way, waiting for the disk
        assert (await client.get("/healthz")).status == 200
        assert not stalled.is_set(), "the event loop was held until the disk came back"
        assert not resuming.done()
        stalled.set()
        recorder = await asyncio.wait_for(resuming, 10)
        assert (recorder.segment, recorder.base.name) == (2, "moved-seg2")
        resp = await client.post("/call/record/stop", json={"callID": cid})
        assert resp.status == 200, await resp.text()
        names = sorted(Path(r["path"]).name for r in (await resp.json())["recordings"])
        assert names == [f"moved-seg2-{k}.wav" for k in ("inbound", "mixed", "outbound")]
        sealed = service.calls_dir / "moved-mixed.wav"  # the dead worker's, finished here
        await until(lambda: sealed.is_file() or not crashed, 5, "the left segment finished")
        assert sealed.is_file() == crashed
    finally:
        stalled.set()
        comeback.cancel()


def stalling_path(path: Path, stalled: threading.Event, entered: threading.Event) -> Path:
    """``path``, whose file is looked for (``is_file``) and deleted (``unlink``) only once
    ``stalled`` is set (``entered``: it was asked)."""

    class Stalling(type(path)):  # type: ignore[misc]
        def is_file(self) -> bool:
            entered.set()
            stalled.wait()
            return bool(super().is_file())

        def unlink(self, missing_ok: bool = False) -> None:
            entered.set()
            stalled.wait()
            super().unlink(missing_ok)

    return Stalling(path)


def index_recording(service: Any, path: Path, expires_at: float) -> str:
    """A one-second recording at ``path``, in ``service``'s index; its id."""
    from bridge.attachments.recorded import Recording

    path.write_bytes(wav.wav_header(32000) + np.zeros(16000, "<i2").tobytes())
    relative = path.name
    service.index["rec_stalled"] = Recording(
        "rec_stalled", "c1", "inbound", path, relative, 1000, 32044, time.time(), expires_at
    )
    return "rec_stalled"


@pytest.mark.parametrize("asked", ["served", "swept"])
async def test_a_recording_served_or_swept_on_a_stalled_disk_never_holds_the_loop(
    make_client, tmp_path, asked
) -> None:
    """The volume stalls as a recording is served (``GET /call/recordings/{id}`` looks for
    its file) or deleted past its retention (the sweep): the worker serves every other request
    meanwhile, and the recording is served, or deleted, once the disk is back. Both asked the
    disk on the event loop: the whole worker froze until the disk came back."""
    client = await make_client(data_dir=str(tmp_path / "data"), retention_sweep_interval=1)
    service = client.app[RECORDINGS]
    stalled, entered = threading.Event(), threading.Event()
    path = stalling_path(service.calls_dir / "c1-inbound.wav", stalled, entered)
    expires = time.time() + (-1 if asked == "swept" else 3600)
    rec_id = index_recording(service, path, expires)
    comeback = threading.Timer(4.0, stalled.set)  # a bound, should the loop be held anyway
    comeback.start()
    try:
        served = None
        if asked == "served":
            served = asyncio.ensure_future(client.get(f"/call/recordings/{rec_id}"))
        await until(entered.is_set, 3, "the disk asked")  # the next sweep: within a second
        assert (await client.get("/healthz")).status == 200
        assert not stalled.is_set(), "the event loop was held until the disk came back"
        stalled.set()
        if served is not None:
            resp = await asyncio.wait_for(served, 10)
            assert resp.status == 200 and (await resp.read())[:4] == b"RIFF"
        else:
            await until(lambda: rec_id not in service.index, 5, "the recording swept")
            assert not path.exists()
    finally:
        stalled.set()
        comeback.cancel()


async def test_a_recording_record_all_cannot_start_is_said_not_a_task_failure(
    make_client, tmp_path, monkeypatch, caplog
) -> None:
    """``BRIDGE_RECORD_ALL`` on a full disk: each answered call goes on unrecorded, which is
    said at WARNING with the reason and to the app (``recording.failed``, segment 1). It was
    the app's task failing: an ERROR with a traceback, and nothing to the app."""
    client = await make_client(data_dir=str(tmp_path / "data"), record_all=True)
    monkeypatch.setattr(wav.WavTrack, "__init__", _disk_full)
    caplog.set_level(logging.WARNING)
    events = await client.get("/call/events")
    made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, made["callID"], "active")
    failed = None
    while failed is None:
        line = (await asyncio.wait_for(events.content.readline(), 3)).decode()
        if line.startswith("data: ") and '"recording.' in line:
            failed = json.loads(line[6:])
    events.close()
    assert failed["type"] == "recording.failed", failed
    assert failed["segment"] == 1 and failed["reason"] == "storage_failed", failed
    assert "No space left" in failed["message"], failed
    said = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert said[0].exc_info is None, caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("asked", ["record_all", "api"])
async def test_a_call_that_ends_as_its_recording_starts_leaves_no_recording(
    make_client, tmp_path, monkeypatch, caplog, asked
) -> None:
    """The call ends while its recording is being started (``BRIDGE_RECORD_ALL``'s, or
    ``POST /call/record``: its files made on the recordings' threads): nothing failed, nothing
    is said above INFO, the start is a 409, and no recording is left: no files, no event after
    ``call.ended``. It was the app's task failing with ``CallStateError`` (an ERROR with a
    traceback) for ``BRIDGE_RECORD_ALL``, and in both cases a ``recording.ready`` of two empty
    files, after the call's ``call.ended`` and with no ``recording.started`` before it."""
    data = tmp_path / "data"
    client = await make_client(data_dir=str(data), record_all=asked == "record_all")
    stalled, entered = stall_track_files(monkeypatch)
    caplog.set_level(logging.WARNING)
    seen: list[str] = []
    client.app[MANAGER].events.listen(lambda type_, call: seen.append(type_))
    made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    cid = made["callID"]
    starting = None
    try:
        await wait_state(client, cid, "active")
        if asked == "api":
            starting = asyncio.ensure_future(client.post("/call/record", json={"callID": cid}))
        await until(entered.is_set)
        assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
    finally:
        stalled.set()
    if starting is not None:
        assert (await asyncio.wait_for(starting, 5)).status == 409
    await until(lambda: not _tasks_named("app:record:"), what="the recording's start to end")
    assert seen[seen.index("call.ended") + 1 :] == [], seen
    assert "recording.started" not in seen, seen
    assert not list(data.rglob(f"{cid}*.wav")), list(data.rglob("*.wav"))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_moved_call_that_ends_as_its_next_segment_starts_leaves_no_segment(
    call, monkeypatch, caplog
) -> None:
    """A recorded call moved here (a handover) ends while its next segment's files are being
    made (on the recordings' threads): the resume is refused (the call's 409) and the segment
    discarded, as a start's: no files, nothing said after ``call.ended``. It was finished and
    announced: a ``recording.ready`` of empty files after the call's end."""
    client, cid = call
    service, runtime = client.app[RECORDINGS], client.app[MANAGER].runtime(cid)
    stalled, entered = stall_track_files(monkeypatch)
    caplog.set_level(logging.WARNING)
    seen: list[str] = []
    client.app[MANAGER].events.listen(lambda type_, call: seen.append(type_))
    moved = {"origin": "files/calls/moved", "segment": 1}
    resuming = asyncio.ensure_future(service.resume(runtime, moved))
    try:
        await until(entered.is_set)
        assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
    finally:
        stalled.set()
    with pytest.raises(CallStateError):
        await asyncio.wait_for(resuming, 5)
    assert "call.ended" in seen, seen
    assert seen[seen.index("call.ended") + 1 :] == [], seen
    assert not list(service.calls_dir.glob("moved-seg2*")), list(service.calls_dir.iterdir())
    assert not service.index, service.index
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("fault", ["eio", "corrupt"])
async def test_a_stored_call_record_the_disk_cannot_give_back_is_503(
    make_client, tmp_path, monkeypatch, caplog, fault
) -> None:
    """``GET /call/{callID}/report`` of an ended call whose stored record the disk fails to
    read (an I/O error) or gives back broken (not JSON): 503 ``storage_failed`` with the error
    body, as for a recording or an asset. It was a 500 with a traceback."""
    data = tmp_path / "data"
    client = await make_client(data_dir=str(data), call_reports=True)
    reports = data / "reports"
    reports.mkdir(parents=True)
    record = reports / "c0ffee.report.json"
    record.write_text('{"summary": {' if fault == "corrupt" else "{}")
    if fault == "eio":
        read = Path.read_text

        def failing_read(self: Path, *args: Any, **kwargs: Any) -> str:
            if self == record:
                raise OSError(errno.EIO, "Input/output error")
            return read(self, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", failing_read)
    caplog.set_level(logging.ERROR)
    resp = await client.get("/call/c0ffee/report")
    assert resp.status == 503, await resp.text()
    assert _error(await resp.json()) == "storage_failed"
    assert not caplog.records, caplog.text


@pytest.mark.parametrize("fault", [errno.EIO, errno.EACCES])
async def test_a_reports_directory_the_disk_fails_is_503(
    make_client, tmp_path, monkeypatch, caplog, fault
) -> None:
    """``GET /call/reports`` on a reports directory the disk fails to list (an I/O error, a
    permission): 503 ``storage_failed`` with the error body, as a record it cannot read. It was
    a 500 with a traceback (EIO), or an empty list as if no call had ended (EACCES)."""
    data = tmp_path / "data"
    client = await make_client(data_dir=str(data), call_reports=True)
    reports = data / "reports"
    reports.mkdir(parents=True)
    (reports / "c0ffee.report.json").write_text("{}")
    scandir = os.scandir

    def failing_scandir(path: Any = ".") -> Any:
        if Path(path) == reports:
            raise OSError(fault, os.strerror(fault))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", failing_scandir)
    caplog.set_level(logging.ERROR)
    resp = await client.get("/call/reports")
    assert resp.status == 503, await resp.text()
    assert _error(await resp.json()) == "storage_failed"
    assert not caplog.records, caplog.text


async def test_the_report_sweep_on_a_directory_the_disk_fails_says_it_once_and_goes_on(
    tmp_path, monkeypatch, caplog
) -> None:
    """The call records' retention sweep meeting a directory the disk fails to list: said once
    at WARNING while it lasts, and the sweep goes on, deleting what expired once the directory
    lists again. An I/O error ended the sweep's task (its traceback an ERROR), and nothing was
    swept again until a restart."""
    from prometheus_client import CollectorRegistry

    from bridge.calls.reports import CallReports, sweep_forever

    root = tmp_path / "reports"
    root.mkdir()
    expired = root / "c0ffee.report.json"
    expired.write_text("{}")
    os.utime(expired, (0, 0))
    reports = CallReports(root, 60.0, CollectorRegistry(), 3.0)
    failing = True
    scandir = os.scandir

    def failing_scandir(path: Any = ".") -> Any:
        if failing and Path(path) == root:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", failing_scandir)
    caplog.set_level(logging.WARNING)
    sweeping = asyncio.ensure_future(sweep_forever(reports, 0.02))
    try:
        await asyncio.sleep(0.3)  # a dozen sweeps meet the failing disk
        said = [r for r in caplog.records if "cannot be listed" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], caplog.text
        assert not sweeping.done()
        failing = False
        # the sweep deletes in a worker thread: the file is gone a moment before the sweeping
        # task resumes and says the directory lists again
        await until(
            lambda: any("listed again" in r.getMessage() for r in caplog.records),
            5,
            "the directory said to list again",
        )
        assert not expired.exists()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
