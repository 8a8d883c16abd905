"""The desk's loops on a real Redis outlive what can happen to them while the bridge runs:
Redis restarting (a failover, a deploy) and a message the bus's handler cannot take. Before,
either ended the loop for good while the process went on: the bus's listener (no other
worker's ring, claim or lent leg reached this worker again) and the agents' presence lease
(redis' ``ConnectionError`` is no builtin ``ConnectionError``: every agent on this worker
turned ``away`` for the others a few seconds later, for good)."""

from __future__ import annotations

import dataclasses
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import RedisError

from bridge.desk import AgentClaims, AgentSession, AgentTokens, Desk
from bridge.desk.redis_store import RedisDeskStore

from ..support.waits import until


async def _published_until_heard(
    sender: RedisDeskStore, heard: list[dict[str, Any]], message: dict[str, Any]
) -> None:
    """Publish ``message`` again until the listener has it (a reconnecting listener misses
    what was published before it subscribed again: the bus is at most once)."""

    async def delivered() -> bool:
        if message in heard:
            return True
        try:
            await sender.publish(message)
        except (RedisError, OSError) as exc:  # Redis still starting
            logging.getLogger(__name__).info("publish: %s", exc)
        return False

    await until(delivered, timeout=30.0, every=0.2, what=f"the listener to hear {message}")


async def test_the_listener_hears_the_bus_again_after_redis_restarts(redis, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bridge.desk.redis_store")
    heard: list[dict[str, Any]] = []
    listener, sender = RedisDeskStore(redis.url), RedisDeskStore(redis.url)
    await listener.start(heard.append)
    try:
        await _published_until_heard(sender, heard, {"op": "before"})
        await redis.stop()
        # The listener has met the outage: it said so (or, before the fix, its task ended).
        await until(
            lambda: (
                len(listener._tasks) == 0
                or any("desk bus" in r.getMessage() for r in caplog.records)
            ),
            timeout=30.0,
            what="the listener to notice Redis is gone",
        )
        await redis.start()  # the same port, empty (no persistence)
        await _published_until_heard(sender, heard, {"op": "after"})
        assert len(listener._tasks) == 1  # still listening
    finally:
        await sender.close()
        await listener.close()


async def test_a_message_the_handler_cannot_take_stops_no_other(redis, caplog) -> None:
    heard: list[dict[str, Any]] = []

    def handle(message: dict[str, Any]) -> None:
        if message.get("op") == "bad":
            raise KeyError("callID")  # a handler's bug on one message (a newer worker's op)
        heard.append(message)

    listener, sender = RedisDeskStore(redis.url), RedisDeskStore(redis.url)
    await listener.start(handle)
    try:
        await _published_until_heard(sender, heard, {"op": "first"})
        with caplog.at_level(logging.ERROR, logger="bridge.desk.redis_store"):
            await sender.publish({"op": "bad"})
            await _published_until_heard(sender, heard, {"op": "after"})
        assert [r.levelno for r in caplog.records if "bad" in r.getMessage()] == [logging.ERROR]
    finally:
        await sender.close()
        await listener.close()


async def _write(text: str) -> None:
    pass


async def test_agents_presence_is_renewed_again_after_redis_restarts(redis, caplog) -> None:
    caplog.set_level(logging.WARNING)
    store = RedisDeskStore(redis.url)
    # The lease is the desk's and the store's alone: no call reaches the desk here.
    manager = SimpleNamespace(events=SimpleNamespace(listen=print, observe=print))
    desk = Desk(store, AgentTokens(b"k" * 32), manager, None, None, worker_id="w")  # type: ignore[arg-type]
    await desk.start()
    session = AgentSession(AgentClaims(None, "ann", ("sales",), time.time() + 600), _write)
    try:
        first = await desk.connect(session)
        await until(lambda: renewed_after(store, first.alive_until), what="the first renewal")
        await redis.stop()
        await until(
            lambda: any("presence" in r.getMessage() for r in caplog.records),
            timeout=30.0,
            what="the lease to meet the outage",
        )
        await redis.start()  # empty: the agent's record is written again, as a reconnect would

        async def written() -> bool:
            try:
                again = dataclasses.replace(first, alive_until=time.time())
                await store.update_agent(None, "ann", lambda _: again)
            except (RedisError, OSError):
                return False
            return True

        await until(written, timeout=30.0, every=0.2, what="Redis back")
        await until(
            lambda: renewed_after(store, time.time() + 0.5),
            timeout=30.0,
            every=0.2,
            what="the agent's presence renewed again",
        )
    finally:
        await session.close()
        await desk.close()


async def renewed_after(store: RedisDeskStore, when: float) -> bool:
    try:
        record = await store.agent(None, "ann")
    except (RedisError, OSError):
        return False
    return record is not None and record.alive_until > when


pytestmark = pytest.mark.timeout(90)


async def test_a_desk_command_that_meets_redis_away_tells_the_lease() -> None:
    """The desk's store asks the directory's lease before each command; its own command that
    failed told the lease nothing, so, first to meet a stalled Redis, it waited the client's
    2 s and the next desk and directory commands waited as long again. Now the lease is told
    (Redis marked down, said once): the next command fails at once."""
    from bridge.cluster.redis import RedisDirectory
    from bridge.errors import DirectoryUnavailable

    from ..support.cluster import worker_directory

    directory: RedisDirectory = worker_directory("redis://127.0.0.1:1/0")  # nobody listens
    directory._lease.up = True  # up until a command finds otherwise
    store = RedisDeskStore("redis://127.0.0.1:1/0", directory.check)
    try:
        with pytest.raises(DirectoryUnavailable):
            await store.route("sales")
        assert not directory.available and "Connect" in directory.detail, directory.detail
        with pytest.raises(DirectoryUnavailable):
            directory.check()
    finally:
        await store.close()
