"""``Catalog``: this worker's view of every number and tenant, kept equal to the store.

The API changes numbers and tenants through the catalog (uniqueness checked here, the record
written to the store, the view reloaded at once); every other worker notices the store's new
version within :data:`~bridge.numbers.store.POLL_INTERVAL` and reloads (a worker that shares
its store with no other process reads it every :data:`~bridge.numbers.store.ALONE_POLL`).

A change is decided and written as one (:meth:`Catalog._write`): its checks (a phone or a
Meta id already another number's, a tenant gone or still in use, a tenant's trunks at their
cap) read this view, and the store takes the write only while it is still at this view's
version. When another worker wrote between, the store refuses (``Stale``), the view catches
up and the checks run again: of two workers deciding at once, the second meets the first's
record and is refused as a sequential request is (409).
Whoever follows the numbers (the :class:`~bridge.numbers.switchboard.Switchboard` starting and
stopping their engines) is told after each reload.

Lookups on the hot paths are dictionary reads: a number by id, by phone, by Meta's
``phone_number_id`` (one webhook front door for every number); a tenant by the hash of an API
key. A change that takes a Meta id from a number (deleted, or given another) writes the id
into the store's deletions in the same write (``deleted.py``): every worker, one started
since too, still takes Meta's webhooks naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..config import env_name
from ..errors import Conflict, DirectoryUnavailable, NotFound
from ..media.clock import clock_sleep
from ..tasks import TaskSet
from . import deleted, rules
from .defined import (
    MADE,
    SIP_PASSWORD,
    Defined,
    changed_fields,
    default_record,
    field_value,
    overlaid,
    refuse_defined,
    refuse_delete,
    stored_fields,
    with_changes,
)
from .model import DEFAULT_NUMBER, Number
from .store import POLL_INTERVAL, CatalogStore, Edit, Stale, Unreachable
from .tenants import Tenant, changed_tenant_fields
from .trunks import Trunk
from .view import NumbersView

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", Tenant, Trunk)

WRITE_ATTEMPTS = 20
"""Times a change is decided again when other workers' writes keep coming first (each refusal
is another change taken: only a store written without pause runs out of them)."""


def _readable(
    records: dict[str, dict[str, Any]], read: Callable[[dict[str, Any]], T], what: str
) -> list[T]:
    """The records that can be read (one that cannot is skipped, logged)."""
    out = []
    for rid, record in records.items():
        try:
            out.append(read(record))
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("%s %s: its stored record is unreadable (%s); skipped", what, rid, exc)
    return out


class Catalog(NumbersView):
    """Numbers, tenants and trunks, kept as the store has them and changed there; see the
    module docstring (the lookups: :class:`~.view.NumbersView`)."""

    def __init__(
        self, store: CatalogStore, default: Number | None, by_settings: Defined | None = None
    ) -> None:
        self.store = store
        self.default = default
        """The number the settings define (``BRIDGE_ENGINE``), as they define it."""
        self.defined: dict[str, Defined] = {DEFAULT_NUMBER: by_settings or {}}
        """The fields the operator defines, by number: the settings' for the default one, the
        numbers file's for those it declares (``defined.py``: the API may not store them)."""
        self.tenants_defined: dict[str, Defined] = {}
        """The fields the numbers file defines, by tenant (the API may not store them)."""
        super().__init__()
        self.version = -1
        self._followers: list[Callable[[], None]] = []
        self._tasks = TaskSet("catalog")
        self._lock = asyncio.Lock()
        self._store_down = False
        self._default_stored: dict[str, Any] = {}
        """What the API stored for the default number, by field (kept under its id, secrets
        sealed as every record's): used where the settings leave the field unset."""
        self._said: set[str] = set()
        """Stored fields already said to differ from the operator's (said once)."""
        self._index([])

    # -- following the store
    async def start(self, poll: float = POLL_INTERVAL) -> None:
        """Load everything, then read the store's version every ``poll`` s (a store unreachable
        now is read again at every poll: the default number serves meanwhile)."""
        self.poll = poll
        try:
            await self.reload()
        except Exception as exc:
            self._store_down = True
            log.warning("numbers store unreachable at start (%s): retrying every poll", exc)
        self._tasks.spawn(self._follow(), "catalog-follow")

    async def close(self) -> None:
        await self._tasks.close()
        await self.store.close()

    def follow(self, follower: Callable[[], None]) -> None:
        """Call ``follower()`` after every reload (it reads the catalog; it must not block)."""
        self._followers.append(follower)

    async def _follow(self) -> None:
        # Until the catalog closes, checked at each turn too: redis-py may swallow the
        # close's cancellation as a read's answer arrives (``cluster/redis_lease.py``).
        while not self._tasks.closed:
            await clock_sleep(self.poll)  # on the media clock: no wake-up of its own
            try:
                await self._catch_up()
                if self._store_down:
                    self._store_down = False
                    log.warning("numbers store reachable again")
            except Exception as exc:  # OSError, sqlite3's and redis' errors alike
                if not self._store_down:
                    self._store_down = True
                    log.warning(
                        "numbers store unreachable (%s): serving the last numbers read", exc
                    )

    async def _catch_up(self) -> None:
        """Reload when the store's version moved (the store gives back first what it lost)."""
        if await self.store.version() != self.version:
            await self.reload()

    async def reload(self) -> None:
        async with self._lock:
            version, records = await self.store.load()
            stored = dict(records.get("numbers", {}))
            record = stored.pop(DEFAULT_NUMBER, None) or {}
            engine = self.default.engine if self.default is not None else None
            self._default_stored = stored_fields(record, engine) if engine is not None else {}
            numbers = _readable(stored, Number.from_record, "number")
            tenants = _readable(records.get("tenants", {}), Tenant.from_record, "tenant")
            self.tenants = {t.tenant_id: t for t in tenants}
            trunks = _readable(records.get("trunks", {}), Trunk.from_record, "trunk")
            self.trunks = {t.trunk_id: t for t in trunks}
            left = _readable(records.get(deleted.KIND, {}), deleted.Deleted.from_record, "deleted")
            self.deleted = {d.meta_id: d for d in left}
            self._index(numbers)
            self.version = version
        for follower in self._followers:
            try:
                follower()
            except Exception:
                log.exception("a follower of the numbers failed")

    def _index(self, numbers: Iterable[Number]) -> None:
        default = self.default
        if default is not None and self._default_stored:  # the one rule (defined.py)
            defined = self.defined.get(DEFAULT_NUMBER, {})
            default = overlaid(default, self._default_stored, defined, self._said)
        self.show(([default] if default is not None else []) + list(numbers))

    # -- changes (admin or owning tenant; the API checks who)
    async def _write(
        self,
        kind: str,
        record_id: str,
        decide: Callable[[], dict[str, Any] | None],
        also: Callable[[], list[Edit]] = list,
    ) -> bool:
        """Store what ``decide()`` makes of this view: the record (``None``: delete it;
        whether it was there), or a refusal it raises; with it, what ``also()`` then makes
        of the view (other records' edits). Decided and written as one (the module
        docstring): when another worker wrote first, the view catches up and both run
        again (so they only compute). Then reload."""
        for _ in range(WRITE_ATTEMPTS):
            edits = [Edit(kind, record_id, decide()), *also()]
            at = self.version  # the version of the view decide() read (no await between)
            try:
                try:
                    found = await self.store.write(edits, at=at) or edits[0].record is not None
                except Stale:
                    await self._catch_up()
                    continue
            except Unreachable as exc:  # a disk in error, Redis away: a 503
                raise DirectoryUnavailable(
                    f"the numbers store cannot take the change of {kind[:-1]} {record_id} now "
                    f"({exc}): try again",
                    code="store_unavailable",
                ) from exc
            with contextlib.suppress(Unreachable):  # stored: else the poll catches up (and
                await self.reload()  # says a store it cannot read, once)
            return found
        log.warning(
            "numbers store: a change of %s %s gave up: other writes came first %d times",
            kind[:-1],
            record_id,
            WRITE_ATTEMPTS,
        )
        raise DirectoryUnavailable(
            f"the numbers store is too busy to take the change of {kind[:-1]} {record_id} now: "
            "try again"
        )

    async def create_number(self, number: Number) -> Number:
        def decide() -> dict[str, Any]:
            rules.unique(self, number)
            rules.tenant_there(self, number.tenant_id)
            return number.to_record()

        await self._write("numbers", number.number_id, decide)
        return number

    def refuse_defined(self, number_id: str, fields: Iterable[str]) -> None:
        """409 ``defined_by_operator`` when the operator defines one of ``fields`` for the
        number (the API may not store it: ``defined.py``)."""
        refuse_defined(f"number {number_id}", self.defined.get(number_id, {}), fields)

    async def update_number(self, number: Number, *, by_operator: bool = False) -> Number:
        """Store a changed number. The API's change (``by_operator`` false: the numbers file's
        is the operator's) may not touch a field the operator defines (409); the operator's
        also sets the number's tenant (the API's cannot change it)."""
        before = self.numbers.get(number.number_id)
        changed = changed_fields(before, number) if before is not None else []
        if not by_operator:
            self.refuse_defined(number.number_id, changed)
        if number.number_id == DEFAULT_NUMBER:
            return await self._save_default(number, changed)

        made: list[Number] = []

        def decide() -> dict[str, Any]:
            # Onto the number as it is at the write: another worker's change of other fields
            # meanwhile is kept (a whole copy read before would undo it).
            current = rules.still_there(self, number)  # deleted meanwhile: not brought back
            whole = before is None or current.engine != number.engine
            made[:] = [number if whole else with_changes(current, number, changed)]
            if by_operator:  # the file's entry names its tenant ("": the service's)
                rules.tenant_there(self, number.tenant_id)
                made[0].tenant_id = number.tenant_id
            rules.unique(self, made[0])
            return made[0].to_record()

        def left() -> list[Edit]:  # its Meta id changed (or its engine): the old one remembered
            return deleted.edits(self.deleted, self.numbers.get(number.number_id), made[0])

        await self._write("numbers", number.number_id, decide, left)
        return made[0]

    async def _save_default(self, number: Number, changed: list[str]) -> Number:
        # Only what the API changed is stored (sealed as every record's): a field it never
        # touched stays the settings' own, on every worker and after a restart.
        if self.default is None:
            raise NotFound(f"no number {DEFAULT_NUMBER!r}")
        engine = self.default.engine

        def decide() -> dict[str, Any]:  # over what is stored at the write's version
            stored = {**self._default_stored, **{f: field_value(number, f) for f in changed}}
            if SIP_PASSWORD in changed:  # who made it goes with it
                stored[MADE] = number.sip_password_made or None
            # A field unset (``null``) is no longer stored: the settings' value, if any.
            return default_record({f: v for f, v in stored.items() if v is not None}, engine)

        await self._write("numbers", DEFAULT_NUMBER, decide)
        return self.numbers[DEFAULT_NUMBER]

    async def delete_number(self, number_id: str) -> None:
        if number_id == DEFAULT_NUMBER:  # the operator's, as a field the settings define is
            raise Conflict(
                f"number {DEFAULT_NUMBER} comes from {env_name('engine')} and its settings: the "
                "default number is built from the settings at start; it cannot be deleted "
                "through the API (change the settings instead)",
                code="defined_by_operator",
            )
        refuse_delete(f"number {number_id}", self.defined.get(number_id, {}))  # the file's

        def left() -> list[Edit]:  # a Meta number's id remembered (deleted.py)
            return deleted.edits(self.deleted, self.numbers.get(number_id), None)

        if not await self._write("numbers", number_id, lambda: None, left):
            raise NotFound(f"no number {number_id[:64]!r}")

    async def save_trunk(self, trunk: Trunk, *, cap: int | None = None) -> Trunk:
        """Create or replace a trunk; ``cap``: its tenant's trunks, this one among them, may
        not pass it (409 ``too_many_trunks``: ``BRIDGE_SIP_MAX_TRUNKS``)."""

        def decide() -> dict[str, Any]:
            rules.tenant_there(self, trunk.tenant_id)
            rules.under_cap(self, trunk, cap)
            return trunk.to_record()

        await self._write("trunks", trunk.trunk_id, decide)
        return trunk

    async def change_trunk(self, trunk_id: str, change: Callable[[Trunk], None]) -> Trunk:
        """Change a trunk as it is at the write's version (:meth:`_change`)."""
        return await self._change("trunks", trunk_id, rules.copy_of_trunk, change)

    async def delete_trunk(self, trunk_id: str) -> None:
        if not await self._write("trunks", trunk_id, lambda: None):
            raise NotFound(f"no trunk {trunk_id[:64]!r}")

    async def save_tenant(self, tenant: Tenant) -> Tenant:
        await self._write("tenants", tenant.tenant_id, tenant.to_record)
        return tenant

    async def change_tenant(
        self, tenant_id: str, change: Callable[[Tenant], None], *, by_operator: bool = False
    ) -> Tenant:
        """Change a tenant as it is at the write's version (:meth:`_change`). The API's change
        (``by_operator`` false: the numbers file's is the operator's) may not touch a field the
        operator defines (409, ``defined.py``)."""
        defined = {} if by_operator else self.tenants_defined.get(tenant_id, {})

        def checked(tenant: Tenant) -> None:
            before = dataclasses.replace(tenant, secrets=dict(tenant.secrets))
            change(tenant)
            changed = changed_tenant_fields(before, tenant)
            refuse_defined(f"tenant {tenant_id}", defined, changed)

        return await self._change("tenants", tenant_id, rules.copy_of_tenant, checked)

    async def _change(
        self, kind: str, record_id: str, copy: Callable[[Any, str], R], change: Callable[[R], None]
    ) -> R:
        """Change a record as it is at the write's version: ``change`` edits a ``copy`` of it,
        and runs again on the newer record when another worker wrote first (their change is
        kept: a key revoked there is not brought back by a key made here). 404 when it is gone
        (``copy`` says: a change would bring it back)."""
        made: list[R] = []

        def decide() -> dict[str, Any]:
            made[:] = [copy(self, record_id)]
            change(made[0])
            return made[0].to_record()

        await self._write(kind, record_id, decide)
        return made[0]

    async def delete_tenant(self, tenant_id: str) -> None:
        refuse_delete(f"tenant {tenant_id}", self.tenants_defined.get(tenant_id, {}))
        await self._write("tenants", tenant_id, lambda: rules.unused(self, tenant_id))
