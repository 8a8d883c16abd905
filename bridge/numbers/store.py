"""Where numbers and tenants live between restarts, shared by every worker of a deployment.

Two stores behind one protocol (:class:`CatalogStore`):

- :class:`LocalStore` — a single node: SQLite under ``BRIDGE_DATA_DIR`` (``catalog.sqlite``),
  embedded, no server to run, for a bridge of one process (several workers need Redis); its
  statements run on a thread of its own, never on the event loop.
- :class:`RedisStore` — a cluster: a hash a kind in the Redis of the call directory. A Redis
  that lost them (restarted without persistence) is given back what each worker read last.

Its kinds (:data:`KINDS`): numbers, tenants, trunks, and the Meta numbers deleted lately
(``deleted.py``: Meta's webhooks still name them for days).

Both keep a **version** that every write bumps in the same transaction. A write may be
conditional on it (``at``): taken only while the store is still at the version the writer
decided on (Redis: ``WATCH``/``MULTI`` on the version; SQLite: read and written in one
``BEGIN IMMEDIATE``), :class:`Stale` otherwise. That is how two workers deciding at once (the
same phone on two numbers; a number for a tenant being deleted) cannot both write: the
catalog reads again and decides again (``catalog.py``). A worker's
:class:`~bridge.numbers.catalog.Catalog` reads the version every ``POLL_INTERVAL`` and reloads
when it moved, so a change made on any worker is live everywhere within that interval (one
tiny read a tick: cheaper and simpler than a notification channel that can be missed, and a
store restarted empty is noticed the same way).

Secrets are sealed at rest (:class:`~bridge.cluster.sealing.Sealer`, AES-256-GCM bound to the
record and field) under ``BRIDGE_INTERNAL_SECRET``, or, on a single node without one, under a
key made once in ``BRIDGE_DATA_DIR/catalog.key`` (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from ..sealer import Sealer

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_INTERVAL = 0.1
"""Seconds between version reads: a change elsewhere is live here within this."""
ALONE_POLL = 2.0
"""Seconds between version reads when no other process writes the store (SQLite: one worker,
as ``BRIDGE_WORKERS`` above 1 needs Redis): its own writes reload at once, and the read stays
only to notice a store that could not be read come back. At :data:`POLL_INTERVAL` it was ten
wake-ups a second of an idle bridge (``bench/idle_worker.py``) for changes nobody else could
make."""

KINDS = ("numbers", "tenants", "trunks", "deleted")

Records = dict[str, dict[str, dict[str, Any]]]
"""``{"numbers": {id: record}, "tenants": {id: record}, …}``: every kind of :data:`KINDS`."""


class Edit(NamedTuple):
    """One record of a write: stored as ``record``, or removed (``None``)."""

    kind: str
    record_id: str
    record: dict[str, Any] | None


class Stale(Exception):
    """A conditional write refused: the store is no longer at the version the writer decided
    on (another worker wrote meanwhile)."""


class Unreachable(Exception):
    """The store could not be read or written now (a disk in error, Redis away): its reason.
    A bug (a record that cannot be sealed) is not one: it stays what it is."""


@contextlib.contextmanager
def reaching(errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """The store's own failures (``errors``) as :class:`Unreachable`."""
    try:
        yield
    except errors as exc:
        raise Unreachable(f"{type(exc).__name__}: {str(exc)[:200]}") from exc


class CatalogStore(Protocol):
    """Numbers' and tenants' records, versioned (see the module docstring). A write with
    ``at`` is taken only while the store is at version ``at`` (:class:`Stale` otherwise)."""

    async def version(self) -> int:
        """The version now (bumped by every write)."""

    async def load(self) -> tuple[int, Records]:
        """Every record, and the version they are at."""

    async def write(self, edits: Sequence[Edit], *, at: int | None = None) -> bool:
        """Store and remove records, as one write (one bump of the version); whether the
        first edit's record was there before."""

    async def put(
        self, kind: str, record_id: str, record: dict[str, Any], *, at: int | None = None
    ) -> None:
        """Create or replace one record."""

    async def delete(self, kind: str, record_id: str, *, at: int | None = None) -> bool:
        """Remove one record; whether it was there."""

    async def close(self) -> None: ...


class Sealing:
    """Seals a record's ``secrets`` for the store and opens them again."""

    def __init__(self, secret: str) -> None:
        self._sealer = Sealer(secret)

    def seal(self, kind: str, record_id: str, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        out["secrets"] = {
            name: self._sealer.seal(value, f"catalog/{kind}/{record_id}/{name}")
            for name, value in (record.get("secrets") or {}).items()
        }
        return out

    def open(self, kind: str, record_id: str, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        opened: dict[str, str] = {}
        for name, value in (record.get("secrets") or {}).items():
            try:
                opened[name] = self._sealer.open(value, f"catalog/{kind}/{record_id}/{name}")
            except ValueError:  # SealBroken
                log.warning(
                    "%s %s: its %s cannot be opened (sealed under another secret?); "
                    "set it again with PATCH",
                    kind[:-1],
                    record_id,
                    name,
                )
        out["secrets"] = opened
        return out

    def bodies(self, edits: Sequence[Edit]) -> list[tuple[str, str, str | None]]:
        """Each edit's kind, id and stored body (sealed; ``None``: removed)."""
        return [
            (kind, rid, None if r is None else json.dumps(self.seal(kind, rid, r)))
            for kind, rid, r in edits
        ]


def local_key(data_dir: str) -> str:
    """The single node's sealing key: made once, kept beside the store (mode 0600)."""
    path = Path(data_dir) / "catalog.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.encode())
    finally:
        os.close(fd)
    return key


class LocalStore:
    """SQLite under the data directory (see the module docstring), on a thread of its own.

    Every statement runs on the store's one thread, never on the event loop: the catalog
    reads the version at every poll, and a data directory whose volume stalls (a network
    volume, a disk in I/O wait) held SQLite, and the worker's every call with it, for as long
    as the stall lasted. One thread keeps SQLite's one connection to one user at a time, in
    order: a write is taken in the order its callers asked."""

    def __init__(self, data_dir: str, sealing: Sealing) -> None:
        self.path = Path(data_dir) / "catalog.sqlite"
        self.sealing = sealing
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-store")
        # One connection, made here (at start-up) and used from the store's thread only.
        self._db = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records "
            "(kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('version', 0)")

    async def _on_thread(self, work: Callable[..., T], *args: Any) -> T:
        with reaching((sqlite3.Error, OSError)):
            return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def version(self) -> int:
        return await self._on_thread(self._version)

    def _version(self) -> int:
        row = self._db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()
        return int(row[0]) if row else 0

    async def load(self) -> tuple[int, Records]:
        return await self._on_thread(self._load)

    def _load(self) -> tuple[int, Records]:
        out: Records = {kind: {} for kind in KINDS}
        self._db.execute("BEGIN")
        try:
            version = self._version()
            for kind, record_id, body in self._db.execute("SELECT kind, id, body FROM records"):
                if kind in out:
                    out[kind][record_id] = self.sealing.open(kind, record_id, json.loads(body))
        finally:
            self._db.execute("COMMIT")
        return version, out

    async def put(
        self, kind: str, record_id: str, record: dict[str, Any], *, at: int | None = None
    ) -> None:
        await self.write([Edit(kind, record_id, record)], at=at)

    async def delete(self, kind: str, record_id: str, *, at: int | None = None) -> bool:
        return await self.write([Edit(kind, record_id, None)], at=at)

    async def write(self, edits: Sequence[Edit], *, at: int | None = None) -> bool:
        return await self._on_thread(self._write, self.sealing.bodies(edits), at)

    def _write(self, edits: list[tuple[str, str, str | None]], at: int | None) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # the version read and bumped under one lock
        try:
            if at is not None:
                row = db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()
                if (int(row[0]) if row else 0) != at:
                    raise Stale(f"the store is at version {row and row[0]}, not {at}")
            was = bool(edits) and bool(
                db.execute(
                    "SELECT 1 FROM records WHERE kind = ? AND id = ?", edits[0][:2]
                ).fetchone()
            )
            for kind, record_id, body in edits:
                if body is None:
                    db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?, ?, ?)",
                        (kind, record_id, body),
                    )
            db.execute("UPDATE meta SET v = v + 1 WHERE k = 'version'")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return was

    async def close(self) -> None:
        await self._on_thread(self._db.close)
        self._thread.shutdown(wait=False)


class RedisStore:
    """A hash a kind and a version counter in the cluster's Redis, and an epoch: a token set once
    in the store, so that a Redis that lost its data (restarted without persistence, a
    replica behind taking over) is known by its missing or other epoch."""

    PREFIX = "bridge:catalog:"
    EPOCH = PREFIX + "epoch"

    def __init__(self, url: str, sealing: Sealing) -> None:
        import redis.asyncio as aioredis  # only when a cluster uses it
        from redis.exceptions import RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self.sealing = sealing
        self._redis: Any = aioredis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._read: tuple[str, Records] | None = None
        """The epoch and records this worker loaded last (secrets open): what it gives back
        to a store that lost them."""

    async def version(self) -> int:
        with reaching(self._errors):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self.PREFIX + "version")
                pipe.get(self.EPOCH)
                version, epoch = await pipe.execute()
            if self._read is not None and epoch != self._read[0]:
                version = await self._give_back()
        return int(version or 0)

    async def _give_back(self) -> int:
        """The store is not the one last read (its epoch is gone or another): Redis lost the
        records. Put back every record this worker read that it lacks (``HSETNX``: one
        written since is kept; each worker gives back its own, so what any of them read is
        back) and bump the version: every worker reloads. The new version."""
        _, records = self._read or ("", {})
        log.warning(
            "numbers store: Redis lost its records (restarted empty?): writing back the %s "
            "this worker read",
            ", ".join(f"{len(records.get(kind, {}))} {kind}" for kind in KINDS),
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            for kind, rows in records.items():
                for record_id, record in rows.items():
                    body = json.dumps(self.sealing.seal(kind, record_id, record))
                    pipe.hsetnx(self.PREFIX + kind, record_id, body)
            pipe.set(self.EPOCH, secrets.token_hex(8), nx=True)
            pipe.incr(self.PREFIX + "version")
            *_, version = await pipe.execute()
        return int(version)

    async def load(self) -> tuple[int, Records]:
        with reaching(self._errors):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self.EPOCH, secrets.token_hex(8), nx=True)  # a new store's
                pipe.get(self.EPOCH)
                pipe.get(self.PREFIX + "version")
                for kind in KINDS:
                    pipe.hgetall(self.PREFIX + kind)
                _, epoch, version, *hashes = await pipe.execute()
        out: Records = {}
        for kind, rows in zip(KINDS, hashes, strict=True):
            out[kind] = {
                rid: self.sealing.open(kind, rid, json.loads(body)) for rid, body in rows.items()
            }
        self._read = (epoch, out)
        return int(version or 0), out

    async def put(
        self, kind: str, record_id: str, record: dict[str, Any], *, at: int | None = None
    ) -> None:
        await self.write([Edit(kind, record_id, record)], at=at)

    async def delete(self, kind: str, record_id: str, *, at: int | None = None) -> bool:
        return await self.write([Edit(kind, record_id, None)], at=at)

    async def write(self, edits: Sequence[Edit], *, at: int | None = None) -> bool:
        """The edits and the version's bump in one ``MULTI``; with ``at``, under ``WATCH`` of
        the version, so Redis refuses it when any other write came between (:class:`Stale`)."""
        if not edits:
            return False
        bodies = self.sealing.bodies(edits)

        def write(pipe: Any) -> None:
            pipe.hexists(self.PREFIX + edits[0].kind, edits[0].record_id)
            for kind, record_id, body in bodies:
                if body is None:
                    pipe.hdel(self.PREFIX + kind, record_id)
                else:
                    pipe.hset(self.PREFIX + kind, record_id, body)

        was, *_ = await self._write(at, write)
        return bool(was)

    async def _write(self, at: int | None, write: Callable[[Any], object]) -> list[Any]:
        from redis.exceptions import WatchError

        key = self.PREFIX + "version"
        with reaching(self._errors):  # Stale is not Redis' error: it goes through
            async with self._redis.pipeline(transaction=True) as pipe:
                if at is not None:
                    await pipe.watch(key)
                    now = int(await pipe.get(key) or 0)
                    if now != at:
                        raise Stale(f"the store is at version {now}, not {at}")
                    pipe.multi()
                write(pipe)
                pipe.incr(key)
                try:
                    answers: list[Any] = await pipe.execute()
                except WatchError:
                    raise Stale("the store's version moved during the write") from None
        return answers

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(data_dir: str, redis_url: str, internal_secret: str) -> CatalogStore:
    """Redis when the deployment shares a directory there, else SQLite in the data dir."""
    if redis_url:
        return RedisStore(redis_url, Sealing(internal_secret))
    return LocalStore(data_dir, Sealing(internal_secret or local_key(data_dir)))
