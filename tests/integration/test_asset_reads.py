"""An audio asset's record is read off the event loop wherever a request, an agent or a moved
call names the asset: the data volume stalls (a network volume that hangs, a full disk's I/O
wait) and what asked waits for the disk, while the worker serves every other request (and
every call's media) meanwhile. Each case here read the record on the loop once: the whole
worker froze until the disk came back."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from bridge.api.keys import MANAGER, PLAYBACK
from bridge.attachments import playback
from bridge.attachments.assets import AssetStore
from bridge.attachments.playback import MAX_PER_CALL

from ..support.audio_files import make
from ..support.calls import wait_state
from ..support.loops import LoopLag
from .test_desk_transfer import ann_on_a_call
from .test_numbers import bearer, new_tenant, post, sim_number

T = TypeVar("T")

COMEBACK = 3.0
"""Seconds the disk stalls at most: a bound, should the loop wait for it anyway."""


def stall(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every read of an asset's record (and of a ``BRIDGE_MEDIA_DIR`` path) waits for the
    disk from now on, until the event returned is set."""
    stalled = threading.Event()
    get, inside = AssetStore.get, playback.inside

    def stalling_get(self: AssetStore, asset_id: str) -> Any:
        stalled.wait()
        return get(self, asset_id)

    def stalling_inside(base: Path, relative: str) -> Path:
        stalled.wait()
        return inside(base, relative)

    monkeypatch.setattr(AssetStore, "get", stalling_get)
    monkeypatch.setattr(playback, "inside", stalling_inside)
    return stalled


async def served_meanwhile(client: Any, stalled: threading.Event, asked: Awaitable[T]) -> T:
    """What ``asked`` gives once the disk comes back, having checked that while it waited
    for the disk the worker answered another request at once and its loop was never held."""
    comeback = threading.Timer(COMEBACK, stalled.set)  # a bound, should the loop wait anyway
    comeback.start()
    try:
        async with LoopLag() as lag:
            waiting = asyncio.ensure_future(asked)
            await asyncio.sleep(0.1)  # under way, waiting for the disk
            assert (await client.get("/healthz")).status == 200
            assert not stalled.is_set(), "the event loop was held until the disk came back"
            assert not waiting.done()
        assert lag.worst < COMEBACK / 2, lag.worst  # the loop never waited for the disk
        stalled.set()
        return await asyncio.wait_for(waiting, 10)
    finally:
        stalled.set()
        comeback.cancel()


async def upload(client: Any, headers: Any = None) -> str:
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 600.0, 0.3, amplitude=0.25), filename="a.wav")
    resp = await client.post("/call/audio-assets", data=form, headers=headers)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["assetId"])


@pytest.fixture
async def call(make_client, tmp_path) -> tuple[Any, str]:
    media = tmp_path / "media"
    media.mkdir()
    client = await make_client(data_dir=str(tmp_path / "data"), media_dir=str(media))
    made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, made["callID"], "active")
    return client, made["callID"]


@pytest.mark.parametrize("asked", ["list", "play", "delete", "file"])
async def test_assets_on_a_stalled_disk_never_hold_the_event_loop(call, monkeypatch, asked) -> None:
    """``GET /call/audio-assets``, an asset played or deleted, a file of ``BRIDGE_MEDIA_DIR``
    played (the service's key: no tenant's visibility to check)."""
    client, cid = call
    asset = await upload(client)
    (client.app[PLAYBACK].media_dir / "prompt.wav").write_bytes(make("wav", 600.0, 0.3))
    request = {
        "list": lambda: client.get("/call/audio-assets"),
        "play": lambda: client.post("/call/play", json={"callID": cid, "assetId": asset}),
        "delete": lambda: client.delete(f"/call/audio-assets/{asset}"),
        "file": lambda: client.post("/call/play", json={"callID": cid, "file": "prompt.wav"}),
    }[asked]
    resp = await served_meanwhile(client, stall(monkeypatch), request())
    assert resp.status in (200, 201), await resp.text()
    if asked == "list":
        assert [a["assetId"] for a in (await resp.json())["assets"]] == [asset]


@pytest.fixture
async def tenant_call(make_client, tmp_path) -> tuple[Any, str, dict[str, str], str]:
    """A tenant's key, its asset and its call: a request with the key checks that the tenant
    sees the asset it names (its record's owner)."""
    client = await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path / "data"))
    key = bearer((await new_tenant(client, "Acme"))["apiKey"])
    asset = await upload(client, key)
    await sim_number(client, "+15556660001", 600.0, headers=key)
    made = await post(client, "/call/make", {"phone": "5521999999999"}, headers=key)
    await wait_state(client, made["callID"], "active", headers=key)
    return client, made["callID"], key, asset


TRUNK = {"name": "pbx", "uri": "sip:127.0.0.1:5999", "keepalive": 0}


@pytest.mark.parametrize(
    "asked", ["play", "hold", "delete", "trunk", "trunk-change", "route", "transfer"]
)
async def test_a_tenants_asset_checked_on_a_stalled_disk_never_holds_the_event_loop(
    tenant_call, monkeypatch, asked
) -> None:
    """A tenant's key names its asset — played, held to, deleted, a trunk's hold music (made
    or changed), a route's ``play`` step, a transfer's music —: whether the tenant sees it is
    read from the asset's record, off the event loop, and the answer is as before once the
    disk is back (a transfer to a group with nobody in it: 409 ``nobody_available``)."""
    client, cid, key, asset = tenant_call
    trunk = await post(client, "/trunks", TRUNK, headers=key)
    asked_for = {
        "play": ("POST", "/call/play", {"callID": cid, "assetId": asset}),
        "hold": ("POST", "/call/hold", {"callID": cid, "music": asset}),
        "delete": ("DELETE", f"/call/audio-assets/{asset}", None),
        "trunk": ("POST", "/trunks", {**TRUNK, "holdMusic": asset}),
        "trunk-change": ("PATCH", f"/trunks/{trunk['trunkID']}", {"holdMusic": asset}),
        "route": (
            "POST",
            "/routes",
            {"name": "r", "numbers": "default", "steps": [{"play": {"assetId": asset}}]},
        ),
        "transfer": ("POST", "/call/transfer", {"callID": cid, "group": "sales", "music": asset}),
    }
    method, path, body = asked_for[asked]
    request = client.request(method, path, json=body, headers=key)
    resp = await served_meanwhile(client, stall(monkeypatch), request)
    if asked == "transfer":
        assert (await resp.json())["error"]["code"] == "nobody_available"
        return
    assert resp.status in (200, 201), await resp.text()
    if asked == "hold":
        assert (await resp.json())["held"] is True
    if asked.startswith("trunk"):
        assert (await resp.json())["holdMusic"] == asset


async def test_another_tenants_asset_is_still_not_found(tenant_call) -> None:
    """Read off the loop, the check answers as it did: another tenant's asset (and one there
    is not) is 404 with the error body, to play, to hold to, to delete, as a trunk's music."""
    client, _cid, _key, asset = tenant_call
    other = bearer((await new_tenant(client, "Globex"))["apiKey"])
    await sim_number(client, "+15556660002", 600.0, headers=other)
    made = await post(client, "/call/make", {"phone": "5521999999998"}, headers=other)
    await wait_state(client, made["callID"], "active", headers=other)
    for name in (asset, "as_nosuchasset"):
        for method, path, body in (
            ("POST", "/call/play", {"callID": made["callID"], "assetId": name}),
            ("POST", "/call/hold", {"callID": made["callID"], "music": name}),
            ("DELETE", f"/call/audio-assets/{name}", None),
            ("POST", "/trunks", {**TRUNK, "holdMusic": name}),
        ):
            resp = await client.request(method, path, json=body, headers=other)
            error = (await resp.json())["error"]
            assert resp.status == 404 and error["code"] == "not_found", (path, error)
            assert error["message"] == f"no audio asset {name!r}", (path, error)


async def test_an_agents_transfer_over_hold_music_on_a_stalled_disk(client, monkeypatch) -> None:
    """The agent on a call transfers it to a group over hold music (its socket's
    ``transfer {music}``): the music's record is read off the event loop, and the group rings
    once the disk is back."""
    asset = await upload(client)
    ann, bob, call_id = await ann_on_a_call(client)

    async def transfer() -> dict[str, Any]:
        await ann.send(type="transfer", callID=call_id, group="sales", music=asset)
        return await bob.next("ringing", timeout=10)

    assert (await served_meanwhile(client, stall(monkeypatch), transfer()))["callID"] == call_id
    assert (await client.get(f"/call/{call_id}")).status == 200


async def test_a_moved_playback_resumes_on_a_stalled_disk(call, monkeypatch) -> None:
    """A playback of a call moved here (a handover) goes on from where it was: its asset's
    record is read off the event loop."""
    client, cid = call
    asset = await upload(client)
    runtime = client.app[MANAGER].runtime(cid)
    moved = {"playbackId": "pb_moved", "assetId": asset, "framesPlayed": 3}
    resumed = client.app[PLAYBACK].resume(runtime, moved)
    played = await served_meanwhile(client, stall(monkeypatch), resumed)
    assert played.id == "pb_moved" and played.frames_played == 3
    assert runtime.attached("playback") == [played]


async def test_stalled_asset_reads_leave_the_process_its_default_executor(
    call, monkeypatch
) -> None:
    """More plays of an asset on a stalled disk than asyncio's default executor has threads
    (``min(32, cores + 4)``: six on two cores) wait on the directories' own threads
    (``bridge/disk.py``): host names are still resolved meanwhile (``getaddrinfo`` runs on
    the default executor: webhooks, engines and models connect through it), and every play
    starts once the disk comes back. On the default executor the plays held every thread."""
    client, call_id = call
    asset_id = await upload(client)
    reads = min(32, (os.cpu_count() or 1) + 4) + 2
    calls = [call_id]
    while len(calls) * MAX_PER_CALL < reads:  # a call plays MAX_PER_CALL files at most
        made = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
        await wait_state(client, made["callID"], "active")
        calls.append(made["callID"])
    stalled = stall(monkeypatch)
    comeback = threading.Timer(COMEBACK, stalled.set)  # a bound, should nothing give way
    comeback.start()
    loop = asyncio.get_running_loop()
    try:
        plays = [
            asyncio.ensure_future(
                client.post(
                    "/call/play",
                    json={"callID": calls[n // MAX_PER_CALL], "assetId": asset_id},
                )
            )
            for n in range(reads)
        ]
        await asyncio.sleep(0.2)  # every play under way, waiting for the disk
        await asyncio.wait_for(loop.getaddrinfo("localhost", 80), COMEBACK / 2)
        assert not stalled.is_set(), "a name was resolved only once the disk came back"
        stalled.set()
        answers = await asyncio.wait_for(asyncio.gather(*plays), 10)
        bodies = [await r.text() for r in answers]
        assert [r.status for r in answers] == [201] * reads, bodies
    finally:
        stalled.set()
        comeback.cancel()
