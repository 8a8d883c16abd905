"""A worker's lease on the Redis directory: its heartbeat, whether Redis answers, its fencing.

The worker's ``worker:{id}`` key (``{url, calls, maxCalls, draining}``) is written every third
of ``BRIDGE_HEARTBEAT_TTL`` and expires after it: a worker whose key lapsed is dead to the
others (:mod:`.redis_reaper`). The lease also says whether Redis answers (the directory refuses
new calls while it does not) and, when Redis is back, has the directory write its live calls
again before it counts as up, and claims no new call for a TTL after (the other workers write
theirs meanwhile: :meth:`Lease.check_claims`). A worker that finds ``reaped:{id}`` was taken
for dead while it was cut off: it ends its own calls rather than writing them back. A worker
whose own heartbeat is gone well before its TTL sees a Redis that lost its data without a
command failing (a failover behind a proxy, a flush): it registers and writes its live calls
again too. The live workers and their load are read from their heartbeats here too
(:func:`live_workers`, beside the lease: the others' heartbeats, not this worker's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import DirectoryUnavailable
from ..logs import FailureKinds
from ..tasks import wait_event
from .directory import WorkerInfo
from .redis_writes import FAILURES, WORKERS, P, owned_key, worker_key

log = logging.getLogger(__name__)


class Lease:
    """One worker's presence in the directory. See the module docstring. :meth:`run` is the
    heartbeat task (owned by the directory); ``catch_up()`` rewrites the worker's live calls."""

    def __init__(
        self,
        redis: Any,
        *,
        worker_id: str,
        url: str,
        heartbeat_ttl: float,
        max_calls: int,
        calls: Callable[[], int],
        catch_up: Callable[[], Awaitable[None]],
        end_local_calls: Callable[[], Awaitable[None]],
        stopping: Callable[[], bool],
    ) -> None:
        self._redis = redis
        self._stopping = stopping
        """Its owner closes: the heartbeat ends at its next turn (:meth:`run`)."""
        self.worker_id = worker_id
        self.url = url
        self.heartbeat_ttl = heartbeat_ttl
        self.max_calls = max_calls
        self._calls = calls
        self._catch_up = catch_up
        self._end_local_calls = end_local_calls
        self.up = False
        """Redis answers (and this worker's calls are written there)."""
        self.detail = "not connected yet"
        self.draining = False
        self.fenced = False
        """Ending its calls after finding itself reaped (:meth:`_fenced`): reads go through."""
        self._up_since = 0.0
        self._back = False
        """Redis was away or emptied since this worker first tried it (its start included: a
        worker started during an outage finds it back as the others do): once up, the other
        workers' calls may not be written again yet (:meth:`check_claims`)."""
        self._beaten_at: float | None = None
        """When the latest heartbeat was written (monotonic)."""
        self._sent_at: float | None = None
        """When the latest beat was sent (monotonic): its heartbeat lives a TTL from then on at
        least."""
        self._written_at: float | None = None
        """When the latest beat answered was sent (monotonic): its heartbeat was written no
        earlier (:meth:`heartbeat_age`)."""
        self._failed = FailureKinds(log)  # what the beats met, each kind logged once
        self._woken = asyncio.Event()
        """A request's command found Redis away: the heartbeat tries it again within half a
        second (a request waiting for Redis to answer again waits no longer), not a third of
        the TTL later."""

    # -- whether Redis answers
    def settled(self) -> bool:
        """Up for a heartbeat TTL at least: after a reconnect, other workers may not have
        re-registered yet, so nobody is called dead before."""
        return self.up and time.monotonic() - self._up_since >= self.heartbeat_ttl

    def check(self) -> None:
        """Raise ``DirectoryUnavailable`` while Redis does not answer. While this worker ends
        its calls after finding itself reaped (:meth:`_fenced`), reads go through: the beat
        that found the fence has just read Redis, and each call's owner must be read there
        (a survivor's adopted call is let go of, the others ended); marked down by a command
        that failed a moment before, every call was taken for another worker's (a read that
        fails now still says unavailable)."""
        if not self.up and not self.fenced:
            raise DirectoryUnavailable(f"the call directory (Redis) is unreachable: {self.detail}")

    def check_claims(self) -> None:
        """:meth:`check`, and ``DirectoryUnavailable`` for a heartbeat TTL after Redis came
        back: a new call's claim cannot be told then. Redis back empty knows no claim, and the
        other workers write their calls again (a call's record is its claim) within a TTL,
        each at its next beat; a claim taken before would ring a call one of them rings."""
        self.check()
        since = time.monotonic() - self._up_since
        if self._back and since < self.heartbeat_ttl:
            raise DirectoryUnavailable(
                f"the call directory (Redis) came back {since:.1f} s ago: the workers write "
                f"their calls again first (within BRIDGE_HEARTBEAT_TTL, {self.heartbeat_ttl:g} s)"
            )

    def unavailable(self, exc: BaseException) -> DirectoryUnavailable:
        """A request's command failed: Redis is marked down, and the error that says so."""
        self.mark_down(exc)
        return DirectoryUnavailable(f"the call directory (Redis) is unreachable: {self.detail}")

    def mark_down(self, exc: BaseException) -> None:
        why = str(exc) or type(exc).__name__
        if self.up or self.detail == "not connected yet":
            log.warning("call directory (Redis) unreachable: %s; new calls are refused", why)
            self._woken.set()
        self.up = False
        self._back = True
        self.detail = why
        self._beaten_at = None  # the gap to the next beat is Redis's, not the loop's
        self._sent_at = None

    async def mark_up(self) -> None:
        if self.up:
            return
        await self._catch_up()
        self.up = True
        self._up_since = time.monotonic()
        self.detail = "reachable"
        log.info("call directory (Redis) reachable; worker %s registered", self.worker_id)

    # -- the heartbeat
    async def start(self) -> None:
        """The first beat (Redis may be down: said, and the loop keeps trying)."""
        try:
            await self.beat()
            await self.mark_up()
        except FAILURES as exc:
            self.mark_down(exc)

    async def beat(self) -> None:
        """Write the heartbeat once; fence this worker if it was reaped."""
        sent, self._sent_at = self._sent_at, time.monotonic()
        sending = self._sent_at
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.exists(worker_key(self.worker_id))
            pipe.set(worker_key(self.worker_id), self._heartbeat(), px=self._ttl_ms)
            pipe.sadd(WORKERS, self.worker_id)
            pipe.exists(f"{P}reaped:{self.worker_id}")
            held, *_, reaped = await pipe.execute()
        if self._written_at is None or sending > self._written_at:  # (a drain's beat beside)
            self._written_at = sending
        self._late(time.monotonic())
        if reaped:
            await self._fenced()
        elif not held and self._emptied(sent):
            self._forgotten()

    def _heartbeat(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "calls": self._calls(),
                "maxCalls": self.max_calls,
                "draining": self.draining,
            }
        )

    @property
    def _ttl_ms(self) -> int:
        return int(self.heartbeat_ttl * 1000)

    def _emptied(self, sent: float | None) -> bool:
        """Whether this worker's heartbeat was gone though the beat before (``sent`` then) set
        it less than its TTL ago: Redis lost what it held without a command of ours failing (a
        failover behind a proxy or an endpoint that kept the connection, a ``FLUSHALL``)."""
        return self.up and sent is not None and time.monotonic() - sent < self.heartbeat_ttl

    def _forgotten(self, lapsed: float | None = None) -> None:
        """Redis came back empty under a live connection (or, ``lapsed``, this worker's own
        heartbeat expired: that many seconds since its last beat, past its TTL): as after an
        outage, the worker's live calls are written again (``mark_up``'s catch-up) and nobody
        is called dead for a TTL (the other workers register again meanwhile)."""
        why = (
            "emptied: a restart or failover without persistence, or flushed"
            if lapsed is None
            else f"expired, its last beat {lapsed:.1f} s ago (dead at "
            f"{self.heartbeat_ttl:.1f} s): its event loop was held up"
        )
        log.warning(
            "call directory (Redis) lost this worker's heartbeat (%s): writing its %d live "
            "calls again",
            why,
            self._calls(),
        )
        self.up = False
        self._back = True
        self.detail = f"{'emptied' if lapsed is None else 'heartbeat expired'}; registering again"

    def heartbeat_age(self) -> float | None:
        """Seconds since the latest beat answered was sent (``None``: none yet), asked as a
        command goes out: what :meth:`forgotten` is told if that command finds the heartbeat
        gone (a beat answered meanwhile says nothing of when it went)."""
        return None if self._written_at is None else time.monotonic() - self._written_at

    def forgotten(self, age: float | None) -> DirectoryUnavailable:
        """A command found this worker's heartbeat gone from Redis (a claim: the lease's beat
        had not seen it yet), ``age`` (:meth:`heartbeat_age`) as it went out: as
        :meth:`_forgotten`, at once — emptied, or expired when its last beat was a TTL old (the
        loop held up, a beat's answer included); the error that says so."""
        if self.up:
            self._forgotten(age if age is not None and age >= self.heartbeat_ttl else None)
            self._woken.set()
        return DirectoryUnavailable(
            f"the call directory (Redis) lost this worker's heartbeat ({self.detail})"
        )

    def _late(self, now: float) -> None:
        """Say so when this beat came over two intervals after the last: the event loop was
        held up (a burst of work on a starved CPU), and held up to the TTL, the survivors
        would have taken this live worker for dead and ended its calls."""
        last, self._beaten_at = self._beaten_at, now
        if last is not None and now - last > self.heartbeat_ttl * 2 / 3:
            log.warning(
                "worker %s: heartbeat %.1f s after the previous one (every %.1f s, dead at "
                "%.1f s): its event loop was held up",
                self.worker_id,
                now - last,
                self.heartbeat_ttl / 3,
                self.heartbeat_ttl,
            )

    async def _fenced(self) -> None:
        """A survivor took this worker for dead (it was cut off from Redis, or stalled, for
        longer than the heartbeat TTL) and ended its calls, hung them up and told clients.
        This worker agrees: it ends its live calls too, rather than writing them back."""
        log.warning(
            "worker %s was reaped while cut off from the directory: ending its %d live calls "
            "(worker_lost)",
            self.worker_id,
            self._calls(),
        )

        # Each hang-up may wait for the engine (seconds, when the partition cut it off too):
        # the heartbeat goes on meanwhile, or a second survivor would take this live worker
        # for dead again, and reap the calls it takes meanwhile with no fence left to see.
        async def end() -> None:
            await self._end_local_calls()

        ending = asyncio.create_task(end(), name=f"fenced:{self.worker_id}")
        self.fenced = True
        try:
            while not ending.done():
                await asyncio.wait({ending}, timeout=self.heartbeat_ttl / 3)
                if not ending.done():
                    with contextlib.suppress(*FAILURES):
                        key = worker_key(self.worker_id)
                        await self._redis.set(key, self._heartbeat(), px=self._ttl_ms)
        finally:
            self.fenced = False
            ending.cancel()
            await asyncio.gather(ending, return_exceptions=True)
        ending.result()  # a failure is the beat's: the fence stays, tried again at the next
        await self._redis.delete(f"{P}reaped:{self.worker_id}")

    async def run(self) -> None:
        """The heartbeat, until its owner closes. It stops by itself too, not only when
        cancelled: redis-py (``asyncio.wait_for`` on Python 3.11) may swallow a cancellation
        that lands as a command's answer arrives, and a heartbeat that then beat on would
        write this worker back into the directory after it left."""
        while not self._stopping():
            await self._rest()
            try:
                await self.beat()
                await self.mark_up()
            except FAILURES as exc:
                self.mark_down(exc)
            except Exception as exc:
                # A bug in what a beat calls (the fenced worker's ending of its calls, the
                # catch-up): the beat goes on. Its loop ending took this live worker for dead
                # for good, while it still took calls (the survivors reaped each one).
                self._failed.failed(exc, "worker %s: a heartbeat failed", self.worker_id)

    async def _rest(self) -> None:
        """Until the next beat: a third of the TTL while Redis answers (two beats may be lost
        before the worker counts as dead), cut short when a request's command finds it away;
        half a second while it is away."""
        if self.up:
            self._woken.clear()
            await wait_event(self._woken, self.heartbeat_ttl / 3)
        if not self.up:
            await asyncio.sleep(0.5)

    async def drain(self) -> None:
        """Say in the heartbeat that this worker takes no new calls."""
        self.draining = True
        with contextlib.suppress(*FAILURES):
            await self.beat()

    async def leave(self) -> None:
        """Drop the heartbeat (a clean stop); forget the worker once it owns no call."""
        if not self.up:
            return
        with contextlib.suppress(*FAILURES):
            await self._redis.delete(worker_key(self.worker_id))
            if not await self._redis.scard(owned_key(self.worker_id)):
                await self._redis.srem(WORKERS, self.worker_id)


async def live_workers(redis: Any, lease: Lease, own_calls: int) -> list[WorkerInfo]:
    """The live workers with their load, as their heartbeats say (``DirectoryUnavailable``
    when Redis does not answer; ``lease``'s check first); ``own_calls``: this worker's, fresher
    than the directory's count."""
    lease.check()
    try:
        ids = sorted(await redis.smembers(WORKERS))
        async with redis.pipeline(transaction=False) as pipe:
            for worker in ids:
                pipe.get(worker_key(worker))
                pipe.scard(owned_key(worker))
            answers = await pipe.execute()
    except FAILURES as exc:
        raise lease.unavailable(exc) from exc
    found = []
    for i, worker in enumerate(ids):
        beat, calls = answers[2 * i], answers[2 * i + 1]
        if beat is None:
            continue  # dead (or not beating yet)
        info = json.loads(beat)
        if worker == lease.worker_id:
            calls = own_calls
        found.append(
            WorkerInfo(
                worker,
                info["url"],
                int(calls),
                int(info["maxCalls"]),
                bool(info.get("draining")),
            )
        )
    return found
