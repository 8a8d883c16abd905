"""A worker's event loop held up, and what depends on it: the heartbeat in the call directory
(``cluster/redis_lease.py``), which says so once, at WARNING, when it comes late (a survivor
would take this live worker for dead at the TTL and end its calls), but not for a gap Redis's
absence made; and what once held a fresh worker's loop in its first request (the API
document's parsing), now done before it listens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge.cluster import redis_lease

from ..support.cluster import worker_lease


class Pipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: str, px: int) -> None:
        self.redis.beats.append((key, px))

    def sadd(self, key: str, member: str) -> None: ...

    def exists(self, key: str) -> None: ...

    async def execute(self) -> list[Any]:
        self.redis.answered()
        return [self.redis.held, True, 1, 0]  # held, written, registered, not reaped


class FakeRedis:
    def __init__(self) -> None:
        self.beats: list[tuple[str, int]] = []
        self.held = 1
        """Whether the worker's heartbeat was there when a beat looked."""
        self.answered: Callable[[], None] = lambda: None
        """What passes as a beat waits for its answer (the clock moved on: a stall)."""

    def pipeline(self, transaction: bool = False) -> Pipeline:
        return Pipeline(self)


async def test_a_late_heartbeat_says_the_loop_was_held_up_once(monkeypatch, caplog) -> None:
    redis = FakeRedis()
    lease = worker_lease(redis, 3.0, calls=2)
    now = [100.0]
    monkeypatch.setattr(redis_lease.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="bridge.cluster.redis_lease")
    for step in (0.0, 1.0, 1.9):  # every third of the TTL, a little late: fine
        now[0] += step
        await lease.beat()
    assert caplog.records == []
    now[0] += 2.5  # over two intervals (2 s of a 3 s TTL): the loop was held up
    await lease.beat()
    [late] = caplog.records
    assert late.levelno == logging.WARNING and "heartbeat 2.5 s after" in late.getMessage()
    assert "dead at 3.0 s" in late.getMessage()
    lease.mark_down(ConnectionError("redis gone"))  # Redis away: that gap is not the loop's
    caplog.clear()
    now[0] += 30.0
    await lease.beat()
    assert [r for r in caplog.records if "heartbeat" in r.getMessage()] == []
    assert len(redis.beats) == 5 and {px for _, px in redis.beats} == {3000}


def test_the_api_document_is_read_when_the_app_is_built_not_in_a_request(tmp_path) -> None:
    """Parsing ``openapi.yaml`` in the first request that validates a body held a fresh
    worker's event loop for 0.2-0.7 s (one step, no await), enough on a loaded host to miss
    its heartbeat while it took handed-over calls: it is read before the worker listens."""
    from bridge.api.schema import openapi_document
    from bridge.app import create_app
    from bridge.config import settings_for_tests

    openapi_document.cache_clear()
    create_app(settings_for_tests(data_dir=str(tmp_path)))
    assert openapi_document.cache_info().currsize == 1


async def test_a_heartbeat_lost_before_its_ttl_is_seen_by_a_late_beat_too(monkeypatch) -> None:
    """Redis emptied under a live connection: the first beat after it finds the worker's
    heartbeat gone and has the worker write its calls again. That beat may come late (a busy
    loop); it re-sets the key, so missing it there missed it for good. The key lives a TTL
    from the beat before it was sent: within that, gone means lost."""
    redis = FakeRedis()
    lease = worker_lease(redis, 3.0, calls=2)
    now = [100.0]
    monkeypatch.setattr(redis_lease.time, "monotonic", lambda: now[0])
    await lease.beat()
    await lease.mark_up()
    now[0] += 1.0
    await lease.beat()
    assert lease.up
    redis.held = 0  # emptied
    now[0] += 2.5  # a late beat (over two intervals), still within the TTL of the last
    await lease.beat()
    assert not lease.up  # registering again: its calls are written at the next mark_up


async def test_a_claim_that_finds_the_heartbeat_expired_in_a_stall_says_so(
    monkeypatch, caplog
) -> None:
    """A claim finds this worker's heartbeat gone (``Lease.forgotten``). It was said as Redis
    emptied under the worker, always; when the worker's last beat is a TTL old, the key simply
    expired (its event loop was held up past it), and an operator sent looking at Redis for a
    restart would find none: that is said instead. Emptied within the TTL is said as before."""
    redis = FakeRedis()
    lease = worker_lease(redis, 3.0, calls=2)
    now = [100.0]
    monkeypatch.setattr(redis_lease.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="bridge.cluster.redis_lease")
    await lease.beat()
    await lease.mark_up()
    now[0] += 3.4  # no beat since: the loop held up past the 3 s TTL
    error = lease.forgotten(lease.heartbeat_age())
    [said] = caplog.records
    assert "expired, its last beat 3.4 s ago" in said.getMessage()
    assert "held up" in said.getMessage() and "emptied" not in said.getMessage()
    assert "expired" in error.message and not lease.up
    await lease.beat()  # (late: said so)
    await lease.mark_up()
    caplog.clear()
    now[0] += 1.0  # within the TTL of the last beat: Redis lost it
    lease.forgotten(lease.heartbeat_age())
    [said] = caplog.records
    assert "emptied" in said.getMessage()


async def test_a_claim_after_a_stall_under_a_beats_answer_says_the_heartbeat_expired(
    monkeypatch, caplog
) -> None:
    """The loop held up while a beat waited for its answer: the heartbeat was written as the
    beat went out and expired a TTL later, though the beat's answer was read only after. A
    claim that finds it gone says it expired (the beat's sending counts, not its answer's)."""
    redis = FakeRedis()
    lease = worker_lease(redis, 3.0, calls=2)
    now = [100.0]
    monkeypatch.setattr(redis_lease.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="bridge.cluster.redis_lease")
    await lease.beat()
    await lease.mark_up()

    def stall() -> None:
        now[0] += 3.2

    redis.answered = stall
    await lease.beat()  # written at 100, its answer read at 103.2
    caplog.clear()
    now[0] += 0.1
    error = lease.forgotten(lease.heartbeat_age())
    [said] = caplog.records
    assert "expired, its last beat 3.3 s ago" in said.getMessage()
    assert "expired" in error.message
