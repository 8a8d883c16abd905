"""A looping playback (hold music) whose asset is deleted while it plays: its end said; a
stopped one's file closed at its stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp

from bridge.api.keys import PLAYBACK
from bridge.resources import CALL_EVENTS

from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.waits import until


async def looping(make_client, tmp_path, seconds: float):
    (tmp_path / "media").mkdir(exist_ok=True)
    client = await make_client(
        sim_peer="silence", data_dir=str(tmp_path / "data"), media_dir=str(tmp_path / "media")
    )
    seen: list = []
    client.app[CALL_EVENTS].observe(lambda event, call: seen.append(event))
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 600.0, seconds, amplitude=0.1), filename="music.wav")
    asset = await (await client.post("/call/audio-assets", data=form)).json()
    body = {"callID": call["callID"], "assetId": asset["assetId"], "loop": True}
    resp = await client.post("/call/play", json=body)
    assert resp.status == 201, await resp.text()
    return client, call["callID"], asset["assetId"], (await resp.json())["playbackId"], seen


async def test_a_loop_whose_asset_was_deleted_ends_with_its_error_said_once(
    make_client, tmp_path, caplog
) -> None:
    """Hold music's asset is deleted while it loops: the pass playing (its file open) plays to
    its end, then the playback ends — ``playback.finished`` with reason ``error`` and the
    error — and the error is said once at WARNING, naming the call and the playback. It was
    said only in the event: the operator's log had nothing of music that stopped."""
    caplog.set_level(logging.INFO, logger="bridge")
    client, cid, asset_id, playback_id, seen = await looping(make_client, tmp_path, 0.4)
    await asyncio.sleep(0.1)  # its next pass is opened (and open) while the first plays
    assert (await client.delete(f"/call/audio-assets/{asset_id}")).status == 200
    finished = await until(
        lambda: [e for e in seen if e.type == "playback.finished"], 5, "the music's end"
    )
    assert [(e.data["playbackId"], e.data["reason"]) for e in finished] == [(playback_id, "error")]
    assert asset_id in finished[0].data["error"]
    assert finished[0].data["framesPlayed"] >= 40  # two passes of 20
    said = [r for r in caplog.records if playback_id in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert cid in said[0].getMessage() and asset_id in said[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def _open_on(path: Path) -> int:
    """How many of the process's file descriptors are open on ``path``."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink() == path
        except OSError:
            continue  # closed meanwhile
    return count


async def test_stopped_hold_music_closes_its_file_at_the_stop_and_the_call_end(
    make_client, tmp_path
) -> None:
    """Hold music stopped (``POST /call/play/stop`` stops every playback, the music too) while
    the call stays held: its file is closed at the stop, and music held again is closed when
    the call ends. Its decoder stayed open on the file as long as the playback object lived,
    and the hold keeps the music it started until it is asked again."""
    client, cid, asset_id, _playback_id, _seen = await looping(make_client, tmp_path, 0.4)
    assert (await client.post("/call/play/stop", json={"callID": cid})).status == 200
    path = (await client.app[PLAYBACK].assets.find(asset_id)).path.resolve()
    music = {"callID": cid, "held": True, "music": asset_id}
    assert (await client.post("/call/hold", json=music)).status == 200
    assert _open_on(path) >= 1  # the music plays: its file is open
    assert (await client.post("/call/play/stop", json={"callID": cid})).status == 200
    await until(lambda: _open_on(path) == 0, 2, "the stopped music's file closed")
    assert (await client.post("/call/hold", json=music)).status == 200
    assert _open_on(path) >= 1
    assert (await client.post("/call/hangup", json={"callID": cid})).status == 200
    await until(lambda: _open_on(path) == 0, 2, "the ended call's music file closed")
