"""What a change to the numbers must keep true, read on a :class:`~.catalog.Catalog`'s view.

Each rule raises the API's refusal (409 or 400, as a sequential request meets it). The
catalog runs them as the checks of a write it decides and stores as one
(``Catalog._write``): the view they read is at the version the store takes the write at, so
two workers changing numbers at once cannot both pass one (a phone on two numbers; a number
made for a tenant being deleted; a tenant's trunks past their cap).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ..errors import BadRequest, Conflict, NotFound
from .model import Number
from .tenants import Tenant
from .trunks import Trunk


class Catalog(Protocol):
    """What the rules read of :class:`~.catalog.Catalog` (its view)."""

    tenants: dict[str, Tenant]
    trunks: dict[str, Trunk]

    def number(self, number_id: str) -> Number | None: ...
    def by_phone(self, phone: str) -> Number | None: ...
    def by_meta_id(self, phone_number_id: str) -> Number | None: ...
    def numbers_of(self, tenant_id: str | None) -> list[Number]: ...
    def trunks_of(self, tenant_id: str | None) -> list[Trunk]: ...


def unique(catalog: Catalog, number: Number) -> None:
    """A phone, and Meta's ``phone_number_id``, are one number's (409 ``duplicate_phone``,
    ``duplicate_phone_number_id``): Meta's webhooks and the calls find the number by them."""
    same_phone = catalog.by_phone(number.phone)
    if same_phone is not None and same_phone.number_id != number.number_id:
        raise Conflict(
            f"field 'phone': {number.phone} is already number {same_phone.number_id}",
            code="duplicate_phone",
        )
    same_meta = catalog.by_meta_id(number.meta_id) if number.meta_id else None
    if same_meta is not None and same_meta.number_id != number.number_id:
        raise Conflict(
            f"field 'cloudapi.phoneNumberID': {number.meta_id} is already number "
            f"{same_meta.number_id}",
            code="duplicate_phone_number_id",
        )


def still_there(catalog: Catalog, number: Number) -> Number:
    """A changed number as it is now: not deleted meanwhile (404: the change would bring it
    back)."""
    current = catalog.number(number.number_id)
    if current is None:
        raise NotFound(f"no number {number.number_id[:64]!r}")
    return current


def tenant_there(catalog: Catalog, tenant_id: str) -> None:
    """A number's or a trunk's tenant exists (400; ``""``: the service's own)."""
    if tenant_id and tenant_id not in catalog.tenants:
        raise BadRequest(f"field 'tenantID': no tenant {tenant_id[:40]!r}")


def copy_of_tenant(catalog: Catalog, tenant_id: str) -> Tenant:
    """A copy of the tenant to change (404 when it is gone: a change would bring it back)."""
    tenant = catalog.tenants.get(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id[:64]!r}")
    return dataclasses.replace(tenant, secrets=dict(tenant.secrets), keys=list(tenant.keys))


def copy_of_trunk(catalog: Catalog, trunk_id: str) -> Trunk:
    """A copy of the trunk to change (404 when it is gone: a change would bring it back)."""
    trunk = catalog.trunks.get(trunk_id)
    if trunk is None:
        raise NotFound(f"no trunk {trunk_id[:64]!r}")
    return dataclasses.replace(trunk, secrets=dict(trunk.secrets))


def under_cap(catalog: Catalog, trunk: Trunk, cap: int | None) -> None:
    """A tenant's trunks, ``trunk`` among them, stay within ``cap`` (409 ``too_many_trunks``:
    ``BRIDGE_SIP_MAX_TRUNKS``; ``None``: no cap)."""
    others = [
        t
        for t in catalog.trunks.values()
        if t.tenant_id == trunk.tenant_id and t.trunk_id != trunk.trunk_id
    ]
    if cap is not None and len(others) >= cap:
        raise Conflict(
            f"the tenant has {cap} trunks, as many as BRIDGE_SIP_MAX_TRUNKS allows: "
            "delete one first",
            code="too_many_trunks",
        )


def unused(catalog: Catalog, tenant_id: str) -> None:
    """A tenant deleted exists and has no numbers or trunks left (404, 409 ``tenant_in_use``):
    they would be orphans, of nobody's tenant."""
    if tenant_id not in catalog.tenants:
        raise NotFound(f"no tenant {tenant_id[:64]!r}")
    if catalog.numbers_of(tenant_id) or catalog.trunks_of(tenant_id):
        raise Conflict(
            f"tenant {tenant_id} still has numbers or trunks: delete them first",
            code="tenant_in_use",
        )
