"""A looping playback (hold music) whose asset is deleted while it plays: its end said."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

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
