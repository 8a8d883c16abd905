"""A call with a phone on a trunk at a drain (a deploy's SIGTERM): the phone's leg — its SIP
dialog, its RTP socket — lives in the worker that rang it and cannot go with the call, so the
call stays there until it ends, as a Cloud API call does.

Two workers (in-process apps) on one real Redis, the fake ZuckZapGo (its calls can move; its
voice 700 Hz) and SIPp as the PBX's phone, answering and echoing what it hears back: WhatsApp
hearing its own 700 Hz is the audio both ways through the phone."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from bridge.api.keys import HANDOVER, MANAGER
from bridge.api.schema import openapi_document

from ..fakes.zuckzapgo import FakeZuckZapGo
from ..integration.test_desk_handover import worker
from ..support.calls import wait_state
from ..support.requires import require
from ..support.sipp import Sipp, tools_missing
from ..support.spectrum import dominant_frequency
from ..support.waits import until, until_passes

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def fake() -> AsyncIterator[FakeZuckZapGo]:
    engine = FakeZuckZapGo(token="ztok")
    await engine.start()
    yield engine
    await engine.stop()


def received(sipp: Sipp) -> list[str]:
    """The requests the phone received, in order."""
    return re.findall(r"message received.*?\n\s*([A-Z]+) sip:", sipp.sent_and_received(), re.S)


def as_documented(snapshot: dict[str, Any]) -> None:
    """``snapshot`` is a ``Call`` as the OpenAPI document says (its participants too)."""
    doc = {"$ref": "#/components/schemas/Call", "components": openapi_document()["components"]}
    errors = [
        e.message for e in Draft202012Validator(doc).iter_errors(json.loads(json.dumps(snapshot)))
    ]
    assert not errors, (snapshot["participants"], errors)


def whatsapp_hears_the_phone(fake: FakeZuckZapGo, engine_id: str, since: float) -> None:
    call = fake.calls[engine_id]
    frames = [f for f, t in zip(call.received, call.received_at, strict=True) if t >= since]
    heard = np.frombuffer(b"".join(frames), dtype="<i2")
    assert len(heard) >= 16_000 * 0.4, "not enough heard yet"
    assert abs(dominant_frequency(heard, 16_000) - fake.tone_hz) < 15
    assert np.sqrt(np.mean(np.square(heard / 32768.0))) > 0.01


async def two_workers(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: Any, port: int, **extra: Any
) -> tuple[Any, Any]:
    """Two workers with a trunk listener each, and a trunk to the phone at ``port`` that both
    know (``extra``: more settings)."""
    listen = {"sip_trunk_listen": "127.0.0.1:0", **extra}
    a = await worker(aiohttp_client, redis, monkeypatch, "worker-a", fake.url, **listen)
    b = await worker(aiohttp_client, redis, monkeypatch, "worker-b", fake.url, **listen)
    body = {"name": "pbx", "uri": f"sip:127.0.0.1:{port};transport=udp", "keepalive": 0}
    resp = await a.post("/trunks", json={**body, "codecs": ["PCMU"]})
    assert resp.status == 201, await resp.text()
    trunk_id = (await resp.json())["trunkID"]

    async def known_on_b() -> bool:
        return (await b.get(f"/trunks/{trunk_id}")).status == 200

    await until(known_on_b, 5.0, "the trunk on worker B")
    return a, b


async def active_call(a: Any, b: Any, fake: FakeZuckZapGo, number: str) -> tuple[Any, ...]:
    """A call to ``number``, answered: the worker carrying it, the other, its ids."""
    resp = await a.post("/call/make", json={"phone": number})
    assert resp.status == 201, await resp.text()
    call_id = (await resp.json())["callID"]
    old, new = (a, b) if a.app[MANAGER].find_runtime(call_id) else (b, a)
    [engine_id] = fake.calls
    await wait_state(old, call_id, "active")
    return old, new, call_id, engine_id


def phone_of(call_id: str) -> dict[str, Any]:
    """The app's ``POST /call/participants`` body: the phone ``desk`` through the trunk."""
    return {"callID": call_id, "participantID": "desk", "sip": {"uri": "sip:p@127.0.0.1"}}


async def test_a_call_with_a_phone_on_a_trunk_stays_on_its_draining_worker_until_it_ends(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: FakeZuckZapGo, tmp_path: Any
) -> None:
    """The drain handed the call to the other worker as if it could move: the old worker let
    go of it and its phone was sent a BYE, and the caller was left with nobody. Now the call
    stays: the phone hears WhatsApp and WhatsApp the phone through the drain, no BYE, and the
    drain waits for the call; once the phone has left (the app takes it off) the call is still
    served here, not moved nor hung up, and the drain ends only with the call."""
    require(not tools_missing(), tools_missing(), "make system-deps (Debian sip-tester)")
    sipp = Sipp(tmp_path, "pbx_phone_answer.xml")
    echo = ("-mi", "127.0.0.1", "-rtp_echo")
    await sipp.start(remote=None, keys={}, server=True, transport="u1", extra=echo)
    a, b = await two_workers(aiohttp_client, redis, monkeypatch, fake, sipp.port)
    drain: asyncio.Task[None] | None = None
    try:
        old, _, call_id, engine_id = await active_call(a, b, fake, "5521988880011")
        resp = await old.post("/call/participants", json=phone_of(call_id))
        assert resp.status == 202, await resp.text()
        await until(lambda: received(sipp) == ["INVITE", "ACK"], 5.0, "the phone answered")
        await until_passes(
            lambda: whatsapp_hears_the_phone(fake, engine_id, time.monotonic() - 0.5), 5.0
        )
        # The phone shows in the call's snapshot as the document says (it said only browsers).
        snapshot = await (await old.get(f"/call/{call_id}")).json()
        assert [p["sip"]["state"] for p in snapshot["participants"]] == ["joined"], snapshot
        as_documented(snapshot)

        handover = old.app[HANDOVER]
        await handover.drain()  # SIGTERM's drain (resources.drain_on_sigterm), in its order
        drain = asyncio.create_task(handover.wait_unmovable())
        drained = time.monotonic()
        assert old.app[MANAGER].find_runtime(call_id) is not None  # still carried here
        await until_passes(lambda: whatsapp_hears_the_phone(fake, engine_id, drained), 5.0)
        assert received(sipp) == ["INVITE", "ACK"] and not drain.done()
        # The phone leaves while the drain waits: the call is served here to its end.
        resp = await old.post(
            "/call/webrtc/close", json={"callID": call_id, "participantID": "desk"}
        )
        assert resp.status == 200, await resp.text()
        assert await sipp.finish(10.0) == 0, sipp.report()
        await asyncio.sleep(0.3)
        assert not drain.done()
        assert old.app[MANAGER].find_runtime(call_id) is not None
        assert fake.calls[engine_id].state == "active"
        resp = await old.post("/call/hangup", json={"callID": call_id})
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(drain, 3.0)  # the worker goes once its call has ended
        ended = await wait_state(old, call_id, "ended")
        assert ended["endReason"] != "shutdown", ended
    finally:
        if drain is not None:
            drain.cancel()
        await sipp.stop()


async def test_a_phone_still_ringing_at_a_drain_keeps_its_call_and_the_app_hears_its_end(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: FakeZuckZapGo, tmp_path: Any
) -> None:
    """A phone the app rang, still ringing as the drain moved its call, was sent a CANCEL as
    the old worker let go, and the app never heard of it again (the old worker's events were
    silenced by then, the new owner never knew the phone). Its ring keeps the call here now,
    as a phone that answered does: it rings on through the drain, and the app hears its end —
    here nobody answers: ``participant.left {reason: "no_answer", sipCode: 487}`` once the
    ring times out — and the call is served here until it ends."""
    require(not tools_missing(), tools_missing(), "make system-deps (Debian sip-tester)")
    sipp = Sipp(tmp_path, "pbx_phone_no_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1")
    a, b = await two_workers(aiohttp_client, redis, monkeypatch, fake, sipp.port, ring_timeout=1)
    drain: asyncio.Task[None] | None = None
    try:
        old, _, call_id, engine_id = await active_call(a, b, fake, "5521988880012")
        events: list[Any] = []
        old.app[MANAGER].events.observe(lambda event, call: events.append(event))

        def said(kind: str) -> list[dict[str, Any]]:
            return [e.data for e in events if e.type == kind]

        resp = await old.post("/call/participants", json=phone_of(call_id))
        assert resp.status == 202, await resp.text()
        await until(lambda: said("participant.ringing"), 5.0, "the phone rings")
        handover = old.app[HANDOVER]
        await handover.drain()
        drain = asyncio.create_task(handover.wait_unmovable())
        assert old.app[MANAGER].find_runtime(call_id) is not None  # kept here
        assert received(sipp) == ["INVITE"] and not said("participant.left")  # it rings on
        await until(lambda: said("participant.left"), 5.0, "the ring's end")
        assert said("participant.left") == [
            {"participantID": "desk", "reason": "no_answer", "sipCode": 487}
        ]
        assert await sipp.finish(5.0) == 0, sipp.report()
        assert received(sipp) == ["INVITE", "CANCEL", "ACK"]
        assert not drain.done() and fake.calls[engine_id].state == "active"
        resp = await old.post("/call/hangup", json={"callID": call_id})
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(drain, 3.0)
    finally:
        if drain is not None:
            drain.cancel()
        await sipp.stop()


async def test_a_phone_added_as_its_call_moves_is_refused_409_moving(
    aiohttp_client: Any, redis: Any, monkeypatch: Any, fake: FakeZuckZapGo, tmp_path: Any
) -> None:
    """A phone the app added after the moving call's state was exported was rung by the old
    worker and hung up as it let go (a CANCEL, or a BYE had it answered): 202, then a phone
    nobody could keep. Refused now, ``409 moving`` (ask again: the new owner takes it), as a
    transfer is; the phone is never rung and the call moves."""
    require(not tools_missing(), tools_missing(), "make system-deps (Debian sip-tester)")
    sipp = Sipp(tmp_path, "pbx_phone_no_answer.xml")
    await sipp.start(remote=None, keys={}, server=True, transport="u1")
    a, b = await two_workers(aiohttp_client, redis, monkeypatch, fake, sipp.port)
    try:
        old, new, call_id, _ = await active_call(a, b, fake, "5521988880013")
        handover = old.app[HANDOVER]
        sending, go = asyncio.Event(), asyncio.Event()
        send = handover._send

        async def held(target: Any, moved: Any) -> Any:  # the call's state exported, sent
            sending.set()
            await go.wait()
            return await send(target, moved)

        handover._send = held
        drain = asyncio.create_task(handover.drain())
        await sending.wait()
        resp = await old.post("/call/participants", json=phone_of(call_id))
        assert resp.status == 409, await resp.text()
        assert (await resp.json())["error"]["code"] == "moving"
        go.set()
        await drain
        assert old.app[MANAGER].find_runtime(call_id) is None  # moved
        assert (await wait_state(new, call_id, "active"))["participants"] == []
        await asyncio.sleep(0.2)
        assert received(sipp) == []  # never rung
    finally:
        await sipp.stop()
