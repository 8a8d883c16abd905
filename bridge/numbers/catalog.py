"""``Catalog``: this worker's view of every number and tenant, kept equal to the store.

The API changes numbers and tenants through the catalog (uniqueness checked here, the record
written to the store, the view reloaded at once); every other worker notices the store's new
version within :data:`~bridge.numbers.store.POLL_INTERVAL` and reloads (a worker that shares
its store with no other process reads it every :data:`~bridge.numbers.store.ALONE_POLL`).
Whoever follows the numbers (the :class:`~bridge.numbers.switchboard.Switchboard` starting and
stopping their engines) is told after each reload.

Lookups on the hot paths are dictionary reads: a number by id, by phone, by Meta's
``phone_number_id`` (one webhook front door for every number); a tenant by the hash of an API
key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

from ..errors import BadRequest, Conflict, NotFound
from ..media.clock import clock_sleep
from ..tasks import TaskSet
from .defined import (
    Defined,
    changed_fields,
    default_record,
    differing,
    field_value,
    overlay,
    refuse_defined,
    stored_fields,
)
from .model import DEFAULT_NUMBER, Number, key_hash
from .store import POLL_INTERVAL, CatalogStore
from .tenants import Tenant
from .trunks import Trunk

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Catalog:
    """Numbers and tenants, indexed; see the module docstring."""

    def __init__(
        self, store: CatalogStore, default: Number | None, by_settings: Defined | None = None
    ) -> None:
        self.store = store
        self.default = default
        """The number the settings define (``BRIDGE_ENGINE``), as they define it."""
        self.defined: dict[str, Defined] = {DEFAULT_NUMBER: by_settings or {}}
        """The fields the operator defines, by number: the settings' for the default one, the
        numbers file's for those it declares (``defined.py``: the API may not store them)."""
        self.numbers: dict[str, Number] = {}
        self.tenants: dict[str, Tenant] = {}
        self.trunks: dict[str, Trunk] = {}
        self._by_phone: dict[str, Number] = {}
        self._by_meta_id: dict[str, Number] = {}
        self._by_key: dict[str, str] = {}
        self.version = -1
        self._followers: list[Callable[[], None]] = []
        self._tasks = TaskSet("catalog")
        self._lock = asyncio.Lock()
        self._store_down = False
        self._default_stored: dict[str, Any] = {}
        """What the API stored for the default number, by field (kept under its id, secrets
        sealed as every record's): used where the settings leave the field unset."""
        self._said: set[tuple[str, str]] = set()
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
        while True:
            await clock_sleep(self.poll)  # on the media clock: no wake-up of its own
            try:
                if await self.store.version() != self.version:
                    await self.reload()
                if self._store_down:
                    self._store_down = False
                    log.warning("numbers store reachable again")
            except Exception as exc:  # OSError, sqlite3's and redis' errors alike
                if not self._store_down:
                    self._store_down = True
                    log.warning(
                        "numbers store unreachable (%s): serving the last numbers read", exc
                    )

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
            self.trunks = _read(records.get("trunks", {}), Trunk.from_record, "trunk")
            self._index(numbers)
            self.version = version
        for follower in self._followers:
            try:
                follower()
            except Exception:
                log.exception("a follower of the numbers failed")

    def _index(self, numbers: Iterable[Number]) -> None:
        default = self.default
        if default is not None and self._default_stored:
            # The one rule (defined.py): what the API stored for the settings' number is used
            # where the settings leave the field unset; a setting wins, and a stored value that
            # differs from it is said once.
            defined = self.defined.get(DEFAULT_NUMBER, {})
            for field in differing(default, self._default_stored, defined):
                if (DEFAULT_NUMBER, field) not in self._said:
                    self._said.add((DEFAULT_NUMBER, field))
                    log.warning(
                        "number %s: the %s stored through the API differs from %s, which is "
                        "used (the operator's value wins; the stored one is ignored)",
                        DEFAULT_NUMBER,
                        field,
                        defined[field].name,
                    )
            default = overlay(default, self._default_stored, defined)
        listed = ([default] if default is not None else []) + list(numbers)
        self.numbers = {n.number_id: n for n in listed}
        self._by_phone = {n.phone: n for n in listed if n.phone}
        self._by_meta_id = {n.meta_id: n for n in listed if n.meta_id}
        self._by_key = {k.hash: t.tenant_id for t in self.tenants.values() for k in t.keys}

    # -- lookups (hot paths: dictionary reads)
    def number(self, number_id: str) -> Number | None:
        return self.numbers.get(number_id)

    def by_phone(self, phone: str) -> Number | None:
        return self._by_phone.get(phone)

    def by_meta_id(self, phone_number_id: str) -> Number | None:
        """The Cloud API number Meta calls ``phone_number_id`` in its webhooks."""
        return self._by_meta_id.get(phone_number_id)

    def tenant_of_key(self, key: str) -> str | None:
        """The tenant an API key belongs to (``None``: no tenant's key)."""
        return self._by_key.get(key_hash(key))

    def tenant_destination(self, tenant_id: str) -> tuple[str, str] | None:
        """A tenant's own webhook URL and signing secret, when it has them."""
        tenant = self.tenants.get(tenant_id)
        if tenant is None or not tenant.webhook_url or not tenant.webhook_secret:
            return None
        return tenant.webhook_url, tenant.webhook_secret

    def recording_forbidden_by(self, number_id: str, tenant_id: str) -> str | None:
        """Who forbids recording a call of ``number_id`` (``"number …"`` or ``"tenant …"``),
        or ``None`` when both allow it (``PATCH /numbers/{id}`` / ``PATCH /tenants/{id}``
        ``{"recording": "forbidden"}``)."""
        number = self.numbers.get(number_id)
        if number is not None and number.recording == "forbidden":
            return f"number {number_id}"
        tenant = self.tenants.get(tenant_id or (number.tenant_id if number else ""))
        if tenant is not None and tenant.recording == "forbidden":
            return f"tenant {tenant.tenant_id}"
        return None

    def numbers_of(self, tenant_id: str | None) -> list[Number]:
        """A tenant's numbers (``None``: every number)."""
        listed = self.numbers.values()
        return [n for n in listed if tenant_id is None or n.tenant_id == tenant_id]

    def resolve_from(self, value: object, tenant_id: str | None) -> Number:
        """The number a ``"from"`` names (its ``phone`` or ``numberID``), as ``tenant_id`` may
        use it; without ``"from"``, the only number that tenant has (or the default number
        for the service). 400 when it is ambiguous or not one of theirs."""
        mine = self.numbers_of(tenant_id)
        if value is None or value == "":
            if tenant_id is None and self.default is not None:
                return self.default
            if len(mine) == 1:
                return mine[0]
            raise BadRequest(
                f"field 'from' is required: name one of your {len(mine)} numbers "
                "(its phone or numberID)"
                if mine
                else "there is no number to call from: create one with POST /numbers",
                code="missing_field" if mine else "no_number",
            )
        if not isinstance(value, str):
            raise BadRequest("field 'from' must be a number's phone or numberID")
        found = self.numbers.get(value) or self._by_phone.get(value)
        if found is None and not value.startswith("+"):
            found = self._by_phone.get("+" + value)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise BadRequest(f"field 'from': no number {value[:40]!r}", code="unknown_number")
        return found

    # -- changes (admin or owning tenant; the API checks who)
    async def create_number(self, number: Number) -> Number:
        self._check_unique(number)
        if number.tenant_id and number.tenant_id not in self.tenants:
            raise BadRequest(f"field 'tenantID': no tenant {number.tenant_id[:40]!r}")
        await self.store.put("numbers", number.number_id, number.to_record())
        await self.reload()
        return number

    def refuse_defined(self, number_id: str, fields: Iterable[str]) -> None:
        """409 ``defined_by_operator`` when the operator defines one of ``fields`` for the
        number (the API may not store it: ``defined.py``)."""
        refuse_defined(number_id, self.defined.get(number_id, {}), fields)

    async def update_number(self, number: Number, *, by_operator: bool = False) -> Number:
        """Store a changed number. The API's change (``by_operator`` false: the numbers file's
        is the operator's) may not touch a field the operator defines (409)."""
        before = self.numbers.get(number.number_id)
        changed = changed_fields(before, number) if before is not None else []
        if not by_operator:
            self.refuse_defined(number.number_id, changed)
        if number.number_id == DEFAULT_NUMBER:
            return await self._save_default(number, changed)
        self._check_unique(number)
        await self.store.put("numbers", number.number_id, number.to_record())
        await self.reload()
        return number

    async def _save_default(self, number: Number, changed: list[str]) -> Number:
        # Only what the API changed is stored (sealed as every record's): a field it never
        # touched stays the settings' own, on every worker and after a restart.
        if self.default is None:
            raise NotFound(f"no number {DEFAULT_NUMBER!r}")
        engine = self.default.engine
        stored = {**self._default_stored, **{f: field_value(number, f) for f in changed}}
        await self.store.put("numbers", DEFAULT_NUMBER, default_record(stored, engine))
        await self.reload()
        return self.numbers[DEFAULT_NUMBER]

    async def delete_number(self, number_id: str) -> None:
        if number_id == DEFAULT_NUMBER:
            raise BadRequest("the default number is defined by the settings: it cannot be deleted")
        if not await self.store.delete("numbers", number_id):
            raise NotFound(f"no number {number_id[:64]!r}")
        await self.reload()

    def _check_unique(self, number: Number) -> None:
        same_phone = self._by_phone.get(number.phone)
        if same_phone is not None and same_phone.number_id != number.number_id:
            raise Conflict(
                f"field 'phone': {number.phone} is already number {same_phone.number_id}",
                code="duplicate_phone",
            )
        same_meta = self._by_meta_id.get(number.meta_id) if number.meta_id else None
        if same_meta is not None and same_meta.number_id != number.number_id:
            raise Conflict(
                f"field 'cloudapi.phoneNumberID': {number.meta_id} is already number "
                f"{same_meta.number_id}",
                code="duplicate_phone_number_id",
            )

    def answering_trunk(self, number_id: str, tenant_id: str) -> Trunk | None:
        """The trunk that takes the inbound calls of ``number_id`` for ``tenant_id``, if any."""
        number = self.number(number_id)
        names = {number_id, number.phone} if number is not None and number.phone else {number_id}
        return next((t for t in self.trunks.values() if t.answers(names, tenant_id)), None)

    def trunks_of(self, tenant_id: str | None) -> list[Trunk]:
        """A tenant's trunks (``None``: every trunk)."""
        return [t for t in self.trunks.values() if tenant_id is None or t.tenant_id == tenant_id]

    async def save_trunk(self, trunk: Trunk) -> Trunk:
        if trunk.tenant_id and trunk.tenant_id not in self.tenants:
            raise BadRequest(f"field 'tenantID': no tenant {trunk.tenant_id[:40]!r}")
        await self.store.put("trunks", trunk.trunk_id, trunk.to_record())
        await self.reload()
        return trunk

    async def delete_trunk(self, trunk_id: str) -> None:
        if not await self.store.delete("trunks", trunk_id):
            raise NotFound(f"no trunk {trunk_id[:64]!r}")
        await self.reload()

    async def save_tenant(self, tenant: Tenant) -> Tenant:
        await self.store.put("tenants", tenant.tenant_id, tenant.to_record())
        await self.reload()
        return tenant

    async def delete_tenant(self, tenant_id: str) -> None:
        if tenant_id not in self.tenants:
            raise NotFound(f"no tenant {tenant_id[:64]!r}")
        if self.numbers_of(tenant_id) or self.trunks_of(tenant_id):
            raise Conflict(
                f"tenant {tenant_id} still has numbers or trunks: delete them first",
                code="tenant_in_use",
            )
        await self.store.delete("tenants", tenant_id)
        await self.reload()

    # -- the declarative file and its export
    def export_yaml(self, tenant_id: str | None = None) -> str:
        """What is live (of ``tenant_id``; ``None``: all), as a numbers file (no secrets:
        ``${ENV}`` placeholders name them)."""
        tenants = [
            {k: v for k, v in t.public().items() if k not in ("keys", "createdAt")}
            for t in self.tenants.values()
            if tenant_id is None or t.tenant_id == tenant_id
        ]
        numbers = []
        for n in self.numbers_of(tenant_id):
            if n.number_id == DEFAULT_NUMBER:
                continue
            block: dict[str, Any] = dict(n.config)
            for name in sorted(n.secrets):
                block[name] = "${" + f"{n.number_id.upper()}_{name.upper()}" + "}"
            numbers.append(
                {
                    "numberID": n.number_id,
                    "phone": n.phone,
                    "engine": str(n.engine),
                    "tenantID": n.tenant_id or None,
                    "label": n.label,
                    str(n.engine): block,
                }
            )
        return yaml.safe_dump({"tenants": tenants, "numbers": numbers}, sort_keys=False)


def _read(records: dict[str, Any], parse: Callable[[Any], Trunk], what: str) -> dict[str, Trunk]:
    """Stored records parsed by id; an unreadable one is logged and skipped."""
    out = {}
    for rid, record in records.items():
        try:
            out[rid] = parse(record)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("%s %s: its stored record is unreadable (%s); skipped", what, rid, exc)
    return out
