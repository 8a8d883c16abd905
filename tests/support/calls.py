"""Driving a call from a test: wait for a state, place a call with an aiortc peer on it."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from bridge.api.keys import ENGINE, MANAGER


async def wait_state(
    client: TestClient, call_id: str, state: str, timeout: float = 5.0, headers: Any = None
) -> dict[str, Any]:
    """Poll a call until it reaches ``state``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/call/{call_id}", headers=headers)
        body = await resp.json()
        if body.get("state") == state:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"call {call_id} never became {state}: {body}")
        await asyncio.sleep(0.05)


async def listed_calls(client: TestClient) -> list[dict[str, Any]]:
    """The calls ``GET /call/status`` lists (for ``until``: empty while there are none)."""
    calls: list[dict[str, Any]] = (await (await client.get("/call/status")).json())["calls"]
    return calls


async def webrtc_call(client: TestClient, freq: float = 440.0) -> tuple[dict[str, Any], Any]:
    """Place a call, connect an aiortc client sending ``freq`` to it, wait until it is active."""
    from .rtc_client import RtcClient

    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    rtc = RtcClient(client, call["callID"], freq=freq)
    await rtc.offer()
    await asyncio.wait_for(rtc.connected.wait(), 10)
    await wait_state(client, call["callID"], "active")
    return call, rtc


def sim_call(client, call_id: str):
    """The simulated engine's side of a call (what the WhatsApp peer hears and sends)."""
    engine_id = client.app[MANAGER].get(call_id).engine_call_id
    return client.app[ENGINE].calls[engine_id]


def heard_since(sc: Any, n: int) -> list[np.ndarray]:
    """The frames a simulated call's peer heard since it had heard ``n`` (an empty list when
    none yet: ``heard[-0:]`` would be all of them)."""
    new = sc.frames_heard - n
    return list(sc.heard)[-new:] if new > 0 else []


def peer_heard(client, call_id: str, frames: int = 50) -> np.ndarray:
    """The last ``frames`` 20 ms frames the simulated WhatsApp peer heard."""
    return np.concatenate(list(sim_call(client, call_id).heard)[-frames:]).astype(np.float64)


def participant_heard(client, call_id: str, pid: str, frames: int = 50) -> deque[np.ndarray]:
    """From now on, the last ``frames`` 20 ms frames the bridge's mix gave participant ``pid``
    (its sink's input, before its leg codes it): what the bridge sent, whatever the far end's
    playout then made of it."""
    sink = client.app[MANAGER].runtime(call_id).bus.conference.participants[pid].sink
    heard: deque[np.ndarray] = deque(maxlen=frames)
    push = sink.push

    def tap(frame: Any) -> None:
        heard.append(frame.pcm)
        push(frame)

    sink.push = tap
    return heard


def agent_sink(bus: Any) -> Any:
    """A call bus's one listener, as a browser agent is: the conference's only participant,
    to whose sink the WhatsApp peer's frames go straight (the direct path, no mixing clock)."""
    from bridge.media import Role

    return bus.conference.join("browser", Role.AGENT).sink


async def events_until_ended(
    sub: Any, call_ids: set[str] | None = None, timeout: float = 10.0, settle: float = 0.3
) -> list[Any]:
    """The call events of subscription ``sub`` until every call of ``call_ids`` (default: every
    call created meanwhile) has published ``call.ended``, then ``settle`` seconds more, to catch
    a second end or a late event. ``call.ended`` follows the call's closed legs, so it can come
    well after the snapshot says ``ended``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    settled_at: float | None = None
    events: list[Any] = []
    while loop.time() < (settled_at or deadline):
        try:
            event = await sub.get(0.05)
        except TimeoutError:
            event = None
        if event is not None and event.call:
            events.append(event)
        # Judged after every event, not once: with ``call_ids`` unset, a call created after the
        # first ones ended (its ``call.created`` read during the settle) is waited for too.
        waited = call_ids or {e.call["callID"] for e in events if e.type == "call.created"}
        ended = {e.call["callID"] for e in events if e.type == "call.ended"}
        if not (waited and waited <= ended):
            settled_at = None
        elif settled_at is None:
            settled_at = loop.time() + settle
    return events


async def events_counted(
    sub: Any, types: set[str], count: int, timeout: float = 10.0, settle: float = 0.3
) -> list[Any]:
    """The events of ``types`` on subscription ``sub`` until ``count`` of them came (or
    ``timeout``), then ``settle`` seconds more, so that one too many is seen too."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    events: list[Any] = []
    while loop.time() < deadline:
        try:
            event = await sub.get(0.05)
        except TimeoutError:
            continue
        if event is not None and event.type in types:
            events.append(event)
            if len(events) == count:
                deadline = min(deadline, loop.time() + settle)
    return events
