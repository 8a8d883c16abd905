"""A client resuming ``GET /call/events`` with ``Last-Event-ID`` while Redis is away: what it
missed comes from the worker's ring of events when the ring reaches back to its id; when it does
not, the stream says ``replay.unavailable`` (no id) and ends, said once in the log. Before, the
replay's failure was silent: the stream went on live, and the client believed it missed
nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp.test_utils import TestClient

from ..support.waits import until

SECRET = "internal-secret-for-tests-0123456789"


async def events(client: TestClient, last_id: str | None, until_type: str) -> list[dict[str, str]]:
    """The stream's events (``{id?, event, data}``) until one of ``until_type`` or its end."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    got: list[dict[str, str]] = []
    async with client.get("/call/events", headers=headers) as resp:
        assert resp.status == 200
        fields: dict[str, str] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if "event" in fields:
                got.append(fields)
                if fields["event"] == until_type:
                    return got
            fields = {}
    got.append({"event": "(the stream ended)"})
    return got


async def test_a_replay_with_redis_away_comes_from_the_ring_or_says_it_cannot(
    make_client: Any, redis: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.cluster")
    client = await make_client(directory=redis.url, internal_secret=SECRET)
    live = asyncio.ensure_future(events(client, None, "call.ended"))
    await asyncio.sleep(0.3)  # the worker's reader is at the stream's end
    made = await client.post("/call/make", json={"phone": "5521999999999"})
    call_id = (await made.json())["callID"]

    async def active() -> bool:
        return (await (await client.get(f"/call/{call_id}")).json())["state"] == "active"

    await until(active, timeout=5)
    await client.post("/call/hangup", json={"callID": call_id})
    mine = [e for e in await asyncio.wait_for(live, 5) if call_id in e["data"]]
    assert mine[0]["event"] == "call.created" and mine[-1]["event"] == "call.ended"

    await redis.stop()
    # The ring reaches back to the client's id: the events after it, from the ring.
    resumed = await asyncio.wait_for(events(client, mine[0]["id"], "call.ended"), 5)
    assert [e["id"] for e in resumed] == [e["id"] for e in mine[1:]]
    # It does not (an id older than the worker's ring): said, no id, and the stream ends.
    for _ in range(2):
        told = await asyncio.wait_for(events(client, "1-0", "(none: to its end)"), 5)
        assert [e["event"] for e in told] == ["replay.unavailable", "(the stream ended)"]
        assert "id" not in told[0]
        body = json.loads(told[0]["data"])
        assert body["lastEventId"] == "1-0" and body["code"] == "replay_unavailable"
    said = [r for r in caplog.records if "replay.unavailable" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING", [r.getMessage() for r in said]


async def test_a_replay_the_events_log_no_longer_reaches_says_it_cannot(
    make_client: Any, redis: Any
) -> None:
    """Redis up, but the client's id is no longer in the events stream (it fell more than
    ``BRIDGE_EVENT_BACKLOG`` events behind: trimmed; or Redis restarted empty) and the worker's
    ring does not reach back to it either. The replay read what the stream still had after
    the id, the client never told of the events trimmed between; it is told now, as with
    Redis away (and as one process tells it)."""
    import redis.asyncio as aioredis

    from bridge.cluster.redis_writes import EVENTS

    client = await make_client(directory=redis.url, internal_secret=SECRET)
    live = asyncio.ensure_future(events(client, None, "call.ended"))
    await asyncio.sleep(0.3)  # the worker's reader is at the stream's end
    made = await client.post("/call/make", json={"phone": "5521999999999"})
    call_id = (await made.json())["callID"]
    await client.post("/call/hangup", json={"callID": call_id})
    mine = [e for e in await asyncio.wait_for(live, 5) if call_id in e["data"]]
    assert len(mine) >= 3, mine
    # A resume from an id the stream holds: exactly what followed it.
    resumed = await asyncio.wait_for(events(client, mine[0]["id"], "call.ended"), 5)
    assert [e["id"] for e in resumed] == [e["id"] for e in mine[1:]]
    # The stream trimmed to its last event, asked of a worker started since (its ring holds
    # none of the call's events).
    direct = aioredis.from_url(redis.url, decode_responses=True)
    try:
        await direct.xtrim(EVENTS, maxlen=1, approximate=False)
    finally:
        await direct.aclose()
    client = await make_client(directory=redis.url, internal_secret=SECRET)
    told = await asyncio.wait_for(events(client, mine[0]["id"], "(none: to its end)"), 5)
    assert [e["event"] for e in told] == ["replay.unavailable", "(the stream ended)"], told


async def test_an_id_that_is_none_or_newer_than_the_log_says_it_cannot(
    make_client: Any, redis: Any
) -> None:
    """A ``Last-Event-ID`` that is no event id, or one newer than any event logged (another
    deployment's, a log lost since), with Redis up and with Redis away: where the client left
    off is unknown, and it is told ``replay.unavailable``. Before, a malformed id streamed
    from now, and so did a future id while Redis was away (the ring "reached" it): the
    client believed it missed nothing."""
    client = await make_client(directory=redis.url, internal_secret=SECRET)
    live = asyncio.ensure_future(events(client, None, "call.created"))
    await asyncio.sleep(0.3)  # the worker's reader is at the stream's end
    made = await client.post("/call/make", json={"phone": "5521999999999"})
    (created,) = await asyncio.wait_for(live, 5)
    ms = int(created["id"].split("-")[0])  # a stream id: milliseconds-seq
    for away in (False, True):
        if away:
            await redis.stop()
        for last in ("x-y", "12", "1-²", f"{ms + 10**9}-0", f"{ms * 1000}-7"):
            told = await asyncio.wait_for(events(client, last, "(none: to its end)"), 5)
            assert [e["event"] for e in told] == ["replay.unavailable", "(the stream ended)"], (
                away,
                last,
                told,
            )
            assert json.loads(told[0]["data"])["lastEventId"] == last
        # An id it holds still resumes (from the stream, or from the ring with Redis away).
        resumed = await asyncio.wait_for(events(client, created["id"], "call.ringing"), 5)
        assert (await made.json())["callID"] in resumed[0]["data"], resumed
