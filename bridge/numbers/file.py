"""``BRIDGE_NUMBERS_FILE``: tenants and numbers declared in YAML, applied at start (GitOps).

    tenants:
      - tenantID: acme            # fixed ids: the file updates them in place
        name: Acme
        webhookURL: https://hooks.acme.example/bridge
        webhookSecret: ${ACME_WEBHOOK_SECRET}
    numbers:
      - numberID: acme-sales
        phone: "+15550783881"
        engine: cloudapi
        tenantID: acme
        cloudapi: {phoneNumberID: "1234567890", accessToken: ${ACME_TOKEN}, ...}
        sip: {enable: true}         # on Meta's SIP road at start (numbers/sip_road.py)
      - numberID: default           # the settings' number: only its 'sip' here
        sip: {enable: true}

Every ``${NAME}`` is read from the environment (secrets never sit in the file). Entries are
created or replaced by id; what the file does not name is left as it is (created at run time).
A field an entry names, a number's or a tenant's, is the operator's: it replaces the stored
value (said at WARNING when they differ) and the API may not change it (409), nor delete the
number or tenant an entry declares (409: it would come back at the next start); the entry's other
fields (a tenant's keys too) keep what the API stored (``defined.py``). The entry's
``tenantID`` is whose the number is (none: the service's), moved there when the stored number
is another tenant's (said at WARNING).
A bad file stops the start with one line saying which entry and field.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, Settings
from ..errors import BridgeError
from .catalog import Catalog
from .defined import changed_fields, file_fields, keep_unset, tenant_file_fields
from .model import DEFAULT_NUMBER, check_id, parse_number
from .sip_road import check_sip_road
from .tenants import apply_tenant_fields, changed_tenant_fields, parse_tenant

log = logging.getLogger(__name__)

_REF = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def env(m: re.Match[str]) -> str:
            if not _NAME.fullmatch(m.group(1)):  # else taken as the secret itself
                raise ConfigError(
                    f"BRIDGE_NUMBERS_FILE: {where} names ${{{m.group(1)}}}, which is not an "
                    "environment variable's name (letters, digits and _)"
                )
            if m.group(1) not in os.environ:
                raise ConfigError(f"BRIDGE_NUMBERS_FILE: {where} names ${{{m.group(1)}}}, unset")
            return os.environ[m.group(1)]

        return _REF.sub(env, value)
    if isinstance(value, dict):
        return {k: _expand(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def read_numbers_file(path: str) -> dict[str, list[dict[str, Any]]]:
    """The file's tenants and numbers, ``${ENV}`` expanded (``ConfigError`` otherwise)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"BRIDGE_NUMBERS_FILE={path}: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - {"tenants", "numbers"}:
        raise ConfigError(f"BRIDGE_NUMBERS_FILE={path}: a mapping of 'tenants' and 'numbers'")
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("tenants", "numbers"):
        entries = doc.get(kind) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"BRIDGE_NUMBERS_FILE={path}: '{kind}' must be a list of mappings")
        out[kind] = [_expand(e, f"{kind}[{i}]") for i, e in enumerate(entries)]
    return out


async def apply_numbers_file(catalog: Catalog, path: str, base: Settings) -> list[str]:
    """Create or replace what the file declares (see the module docstring); the numbers it
    asks to put on Meta's SIP road (``sip: {enable: true}``). A number that could not be on
    that road here (``check_sip_road``, as the API checks it) is a bad entry."""
    declared = read_numbers_file(path)
    await catalog.reload()
    for i, entry in enumerate(declared["tenants"]):
        where = f"BRIDGE_NUMBERS_FILE: tenants[{i}]"
        try:
            fields = {k: v for k, v in entry.items() if k != "tenantID"}
            tenant_id = check_id(str(entry.get("tenantID") or ""), "tenantID")
            defined = tenant_file_fields(fields, f"tenants[{i}]")
            catalog.tenants_defined[tenant_id] = defined  # the API may not change these (409)
            before = catalog.tenants.get(tenant_id)
            if before is None:
                await catalog.save_tenant(
                    dataclasses.replace(parse_tenant(fields), tenant_id=tenant_id)
                )
                continue
            # Built on a copy of the stored tenant and stored: the live one is swapped for it
            # only once the store has it. What the file names wins (said once when it differs
            # from what the API stored); the rest, and the keys, stay as the API stored them.
            stored = await catalog.change_tenant(
                tenant_id, functools.partial(apply_tenant_fields, body=fields), by_operator=True
            )
            for field in changed_tenant_fields(before, stored):
                log.warning(
                    "tenant %s: %s replaces its stored %s", tenant_id, defined[field].name, field
                )
        except BridgeError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    on_sip: list[str] = []
    for i, entry in enumerate(declared["numbers"]):
        where = f"BRIDGE_NUMBERS_FILE: numbers[{i}]"
        try:
            number_id = check_id(str(entry.get("numberID") or ""), "numberID")
            if _sip_enable(entry.get("sip"), where):
                on_sip.append(number_id)
            fields = {k: v for k, v in entry.items() if k not in ("numberID", "tenantID", "sip")}
            if number_id == DEFAULT_NUMBER:
                if fields:  # the settings define it: the file may only ask for its SIP
                    raise ConfigError(f"{where}: the default number takes only 'sip' here")
                continue
            number = parse_number(fields, tenant_id=str(entry.get("tenantID") or ""))
            number.number_id = number_id
            defined = file_fields(fields, f"numbers[{i}]")
            catalog.defined[number_id] = defined  # the API may not change these (409)
            known = catalog.numbers.get(number_id)
            if known is not None:
                number.created_at = known.created_at
                # The one rule (defined.py): what the file names wins over what is stored (said
                # once when they differ); the rest (Meta's SIP password from sip/enable, a
                # label or policy set through the API) stays as the API stored it.
                keep_unset(known, number, defined)
            check_sip_road(number, base)  # as it is stored: with the API's fields kept
            if known is None:
                await catalog.create_number(number)
                continue
            if known.tenant_id != number.tenant_id:
                log.warning(
                    "number %s: BRIDGE_NUMBERS_FILE (numbers[%d]) moves it from %s to %s",
                    number_id,
                    i,
                    f"tenant {known.tenant_id}" if known.tenant_id else "the service",
                    f"tenant {number.tenant_id}" if number.tenant_id else "the service",
                )
            for field in changed_fields(known, number):
                log.warning(
                    "number %s: %s replaces its stored %s",
                    number_id,
                    defined[field].name if field in defined else "BRIDGE_NUMBERS_FILE",
                    field,
                )
            await catalog.update_number(number, by_operator=True)
        except BridgeError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    return on_sip


def _sip_enable(block: Any, where: str) -> bool:
    """``sip: {enable: true}``: put the number on Meta's SIP road at start (once it has a
    password, later starts leave it)."""
    if block is None:
        return False
    if (
        not isinstance(block, dict)
        or set(block) - {"enable"}
        or not isinstance(block.get("enable", False), bool)
    ):
        raise ConfigError(f"{where}: 'sip' must be {{enable: true|false}}")
    return bool(block.get("enable"))


def export_yaml(catalog: Catalog, tenant_id: str | None = None) -> str:
    """What is live (of ``tenant_id``; ``None``: all), as a numbers file that starts a bridge
    with the same (no secrets: ``${ENV}`` placeholders name them; a SIP password Meta made for
    the bridge is ``sip: {enable: true}``, the default number's too): ``GET
    /numbers?format=yaml``."""
    tenants = []
    for t in catalog.tenants.values():
        if tenant_id is not None and t.tenant_id != tenant_id:
            continue
        entry = {
            k: v
            for k, v in t.public().items()
            if k not in ("keys", "createdAt", "webhookSecretSet")
        }
        if t.webhook_secret:
            entry["webhookSecret"] = _placeholder(t.tenant_id, "webhookSecret")
        tenants.append(entry)
    numbers: list[dict[str, Any]] = []
    for n in catalog.numbers_of(tenant_id):
        # A SIP password Meta made for the bridge is exported as what made it: the fresh
        # bridge puts the number on SIP again (a placeholder would name a value nobody knows).
        made = n.sip_password_made and "sipPassword" in n.secrets
        if n.number_id == DEFAULT_NUMBER:  # the settings define the rest
            if made:
                numbers.append({"numberID": DEFAULT_NUMBER, "sip": {"enable": True}})
            continue
        block: dict[str, Any] = dict(n.config)
        for name in sorted(n.secrets):
            if not (made and name == "sipPassword"):
                block[name] = _placeholder(n.number_id, name)
        entry = {
            "numberID": n.number_id,
            "phone": n.phone,
            "engine": str(n.engine),
            "tenantID": n.tenant_id or None,
            "label": n.label,
            "recording": n.recording,
            str(n.engine): block,
        }
        numbers.append({**entry, "sip": {"enable": True}} if made else entry)
    return yaml.safe_dump({"tenants": tenants, "numbers": numbers}, sort_keys=False)


def _placeholder(record_id: str, name: str) -> str:
    """``${ACME_SUPPORT_TOKEN}`` for ``acme-support``'s ``token``: an environment variable's
    name (an id may hold ``-``, and begin with a digit)."""
    env = re.sub(r"[^A-Z0-9_]", "_", f"{record_id}_{name}".upper())
    return "${" + ("_" + env if env[0].isdigit() else env) + "}"
