"""The numbers, tenants and trunks a worker knows, indexed for the lookups every call and
request makes (dictionary reads on the hot paths): which number a phone, a Meta id or a
``"from"`` names, whose an API key is, which trunk answers a number, who forbids recording,
which number a Meta id deleted lately was (``deleted.py``).
:class:`~.catalog.Catalog` keeps the view as the store has it (:meth:`NumbersView.show` after
each reload) and writes the changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import BadRequest
from .deleted import Deleted
from .model import Number, key_hash
from .tenants import Tenant
from .trunks import Trunk


class NumbersView:
    """The indexed view (module docstring)."""

    default: Number | None = None
    """The number the settings define, if any (the service's ``"from"`` when none is named)."""

    def __init__(self) -> None:
        self.numbers: dict[str, Number] = {}
        self.tenants: dict[str, Tenant] = {}
        self.trunks: dict[str, Trunk] = {}
        self.deleted: dict[str, Deleted] = {}
        """The Meta ids numbers left lately, as the store keeps them (past their age too,
        until the store removes them: :meth:`deleted_meta` says which are remembered)."""
        self._by_phone: dict[str, Number] = {}
        self._by_meta_id: dict[str, Number] = {}
        self._by_key: dict[str, str] = {}

    def show(self, numbers: Iterable[Number]) -> None:
        """The view of ``numbers`` (and of the tenants' keys) from now on."""
        listed = list(numbers)
        self.numbers = {n.number_id: n for n in listed}
        self._by_phone = {n.phone: n for n in listed if n.phone}
        self._by_meta_id = {n.meta_id: n for n in listed if n.meta_id}
        self._by_key = {k.hash: t.tenant_id for t in self.tenants.values() for k in t.keys}

    def number(self, number_id: str) -> Number | None:
        return self.numbers.get(number_id)

    def by_phone(self, phone: str) -> Number | None:
        return self._by_phone.get(phone)

    def by_meta_id(self, phone_number_id: str) -> Number | None:
        """The Cloud API number Meta calls ``phone_number_id`` in its webhooks."""
        return self._by_meta_id.get(phone_number_id)

    def deleted_meta(self, phone_number_id: str) -> Deleted | None:
        """The number Meta's ``phone_number_id`` was lately (deleted since, or its Meta id
        changed), while Meta may still send its webhooks; whether or not a number has the id
        now (:meth:`by_meta_id`)."""
        found = self.deleted.get(phone_number_id) if phone_number_id else None
        return found if found is not None and found.remembered() else None

    def remembers_deleted(self) -> bool:
        """Whether any Meta id is remembered as deleted (:meth:`deleted_meta`)."""
        return any(d.remembered() for d in self.deleted.values())

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

    def resolve_from(self, value: object, tenant_id: str | None, *, field: str = "from") -> Number:
        """The number a ``"from"`` names (its ``phone`` or ``numberID``), as ``tenant_id`` may
        use it; without ``"from"``, the only number that tenant has (or the default number
        for the service). 400 when it is ambiguous or not one of theirs; its message names
        ``field``, what the caller sent the number as."""
        mine = self.numbers_of(tenant_id)
        if value is None or value == "":
            if tenant_id is None and self.default is not None:
                return self.default
            if len(mine) == 1:
                return mine[0]
            raise BadRequest(
                f"field '{field}' is required: name one of your {len(mine)} numbers "
                "(its phone or numberID)"
                if mine
                else "there is no number to call from: create one with POST /numbers",
                code="missing_field" if mine else "no_number",
            )
        if not isinstance(value, str):
            raise BadRequest(f"field '{field}' must be a number's phone or numberID")
        found = self.numbers.get(value) or self._by_phone.get(value)
        if found is None and not value.startswith("+"):
            found = self._by_phone.get("+" + value)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise BadRequest(f"field '{field}': no number {value[:40]!r}", code="unknown_number")
        return found

    def answering_trunk(self, number_id: str, tenant_id: str) -> Trunk | None:
        """The trunk that takes the inbound calls of ``number_id`` for ``tenant_id``, if any."""
        number = self.number(number_id)
        names = {number_id, number.phone} if number is not None and number.phone else {number_id}
        return next((t for t in self.trunks.values() if t.answers(names, tenant_id)), None)

    def trunks_of(self, tenant_id: str | None) -> list[Trunk]:
        """A tenant's trunks (``None``: every trunk)."""
        return [t for t in self.trunks.values() if tenant_id is None or t.tenant_id == tenant_id]
