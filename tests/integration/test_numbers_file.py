"""``BRIDGE_NUMBERS_FILE`` (issue 46): tenants and numbers declared in YAML with ``${ENV}``
secrets are applied at start, updated in place by id on the next start, exported back by
``GET /numbers?format=yaml`` without secrets; a bad file stops the start naming the entry."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from bridge.api.keys import CATALOG, SWITCHBOARD
from bridge.config import ConfigError

ADMIN = {"Authorization": "Bearer admin-token"}

FILE = """
tenants:
  - tenantID: acme
    name: Acme
    webhookURL: http://127.0.0.1:9/acme
    webhookSecret: ${ACME_WEBHOOK_SECRET}
    maxCalls: 3
numbers:
  - numberID: acme-support
    phone: "+15550783881"
    engine: zuckzapgo
    tenantID: acme
    label: support
    zuckzapgo: {url: "http://127.0.0.1:9", token: "${ACME_ZZG_TOKEN}"}
  - numberID: lab
    phone: "+15550783882"
    engine: sim
    sim: {peer: tone, toneHz: 880}
"""

SIP_NO_HOST = """
numbers:
  - numberID: sales
    phone: "+15550783881"
    engine: cloudapi
    cloudapi: {phoneNumberID: "1098765432", accessToken: t, appSecret: s, verifyToken: v,
               graphURL: "http://127.0.0.1:9/v23.0", signalling: sip}
"""

SECRET = "whsec_QWNtZUFjbWVBY21lQWNtZUFjbWVBY21lQWNtZUFjbWU="
OTHER = "whsec_T3RoZXJPdGhlck90aGVyT3RoZXJPdGhlck90aGVyT3Q="


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "numbers.yaml"
    path.write_text(text)
    return str(path)


async def test_the_file_is_applied_updated_in_place_and_exported_without_secrets(
    make_client, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ACME_ZZG_TOKEN", "zzg-from-env")
    data = tmp_path / "data"
    data.mkdir()
    settings = {"api_tokens": ("admin-token",), "data_dir": str(data)}
    client = await make_client(numbers_file=write(tmp_path, FILE), **settings)
    catalog = client.app[CATALOG]
    number = catalog.number("acme-support")
    assert number is not None and number.tenant_id == "acme"
    assert number.secrets == {"token": "zzg-from-env"}  # from the environment
    assert catalog.tenants["acme"].webhook_secret == SECRET
    assert catalog.tenants["acme"].max_calls == 3
    assert {"acme-support", "lab"} <= set(client.app[SWITCHBOARD].engines)
    export = await (await client.get("/numbers?format=yaml", headers=ADMIN)).text()
    assert "zzg-from-env" not in export and SECRET not in export
    doc = yaml.safe_load(export)
    assert {n["numberID"] for n in doc["numbers"]} == {"acme-support", "lab"}
    await client.close()

    # The next start with a changed file updates the same ids in place.
    changed = FILE.replace("label: support", "label: soporte").replace("maxCalls: 3", "maxCalls: 5")
    client = await make_client(numbers_file=write(tmp_path, changed), **settings)
    catalog = client.app[CATALOG]
    assert catalog.number("acme-support").label == "soporte"  # type: ignore[union-attr]
    assert catalog.tenants["acme"].max_calls == 5
    assert len([n for n in catalog.numbers.values() if n.phone == "+15550783881"]) == 1


@pytest.mark.parametrize(
    "text, named",
    [
        (FILE, "ACME_WEBHOOK_SECRET"),  # a ${REF} with nothing in the environment
        ("numbers:\n  - {numberID: x, phone: '5550001', engine: sim}\n", "numbers[0]"),
        ("numbers:\n  - {numberID: x, phone: '+15550783881', engine: fax}\n", "engine"),
        ("tenants: [1, 2]\n", "tenants"),
        ("numbers: {a: b}\n", "numbers"),
        # On Meta's SIP road with no host name (nor BRIDGE_SIP_HOSTNAME): before, the start
        # went on with its engine down, said as an unrelated listener's "No such file".
        (SIP_NO_HOST, "numbers[0]: a number on Meta's SIP road needs a SIP host name"),
    ],
)
async def test_a_bad_file_stops_the_start_naming_the_entry(
    make_client, tmp_path, monkeypatch, text, named
) -> None:
    monkeypatch.delenv("ACME_WEBHOOK_SECRET", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ConfigError, match=re.escape(named)):
        await make_client(numbers_file=write(tmp_path, text), data_dir=str(data))


async def test_what_the_file_names_is_the_operator_s_the_rest_the_api_s(
    make_client, tmp_path, caplog
) -> None:
    """One rule (``bridge/numbers/defined.py``): a field the file names wins and the API may
    not change it (409 naming the entry); a field it leaves unset is the API's, kept across
    restarts; a stored value the file replaces is said once at WARNING."""
    data = tmp_path / "data"
    data.mkdir()
    lab = "numbers:\n  - {numberID: lab, phone: '+15550783882', engine: sim, sim: {peer: tone}}\n"
    settings = {"api_tokens": ("admin-token",), "data_dir": str(data)}
    client = await make_client(numbers_file=write(tmp_path, lab), **settings)
    for patch, field in [
        ({"sim": {"peer": "echo"}}, "sim.peer"),
        ({"phone": "+15550783883"}, "phone"),
    ]:
        resp = await client.patch("/numbers/lab", json=patch, headers=ADMIN)
        error = (await resp.json())["error"]
        assert resp.status == 409 and error["code"] == "defined_by_operator", error
        assert f"'{field}'" in error["message"]
        assert "remove it from BRIDGE_NUMBERS_FILE (numbers[0])" in error["message"]
    # Deleting it too (before, 200: the file made it again at the next start).
    resp = await client.delete("/numbers/lab", headers=ADMIN)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "defined_by_operator", error
    assert "BRIDGE_NUMBERS_FILE (numbers[0])" in error["message"], error
    assert "remove it from BRIDGE_NUMBERS_FILE" in error["message"], error
    assert "lab" in client.app[SWITCHBOARD].engines
    unset = {"recording": "forbidden", "label": "bench", "sim": {"toneHz": 440}}
    resp = await client.patch("/numbers/lab", json=unset, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await client.close()

    caplog.set_level(logging.WARNING)
    client = await make_client(numbers_file=write(tmp_path, lab), **settings)  # a restart
    number = client.app[CATALOG].number("lab")
    assert number is not None and (number.recording, number.label) == ("forbidden", "bench")
    assert number.config == {"peer": "tone", "toneHz": 440.0}
    assert not [r for r in caplog.records if "replaces its stored" in r.getMessage()]
    await client.close()

    # The file now names the policy: it wins over the stored one, said once.
    named = lab.replace("engine: sim,", "engine: sim, recording: allowed,")
    client = await make_client(numbers_file=write(tmp_path, named), **settings)
    assert client.app[CATALOG].number("lab").recording == "allowed"  # type: ignore[union-attr]
    said = [r for r in caplog.records if "replaces its stored" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "number lab" in said[0].getMessage() and "recording" in said[0].getMessage()
    resp = await client.patch("/numbers/lab", json={"recording": "forbidden"}, headers=ADMIN)
    assert resp.status == 409 and "BRIDGE_NUMBERS_FILE" in (await resp.json())["error"]["message"]
    await client.close()

    # Removed from the file, it stays (stored) and is the API's: deleted through it.
    client = await make_client(numbers_file=write(tmp_path, "numbers: []\n"), **settings)
    assert (await client.delete("/numbers/lab", headers=ADMIN)).status == 200


async def test_a_number_the_file_moves_to_another_tenant_is_that_tenants_only(
    make_client, tmp_path, caplog
) -> None:
    """The file's entry names the number's tenant: moved in the file, the number is the new
    tenant's at the next start (the old tenant's key no longer sees it), said once at WARNING;
    a tenant that does not exist stops the start naming the entry. Before, the stored tenant
    was kept, silently: the old customer kept seeing the number and its calls."""
    data = tmp_path / "data"
    data.mkdir()
    moved = """
tenants:
  - {tenantID: acme, name: Acme}
  - {tenantID: beta, name: Beta}
numbers:
  - {numberID: lab, phone: '+15550783882', engine: sim, tenantID: acme}
"""
    settings = {"api_tokens": ("admin-token",), "data_dir": str(data)}
    client = await make_client(numbers_file=write(tmp_path, moved), **settings)
    keys = {}
    for tenant in ("acme", "beta"):
        resp = await client.post(f"/tenants/{tenant}/keys", headers=ADMIN)
        keys[tenant] = {"Authorization": f"Bearer {(await resp.json())['apiKey']}"}
    assert (await client.get("/numbers/lab", headers=keys["acme"])).status == 200
    await client.close()

    caplog.set_level(logging.WARNING)
    client = await make_client(
        numbers_file=write(tmp_path, moved.replace("tenantID: acme}", "tenantID: beta}")),
        **settings,
    )
    assert (await client.get("/numbers/lab", headers=keys["acme"])).status == 404
    shown = await (await client.get("/numbers", headers=keys["beta"])).json()
    assert [n["numberID"] for n in shown["numbers"]] == ["lab"]
    said = [r.getMessage() for r in caplog.records if "moves it" in r.getMessage()]
    assert said == [
        "number lab: BRIDGE_NUMBERS_FILE (numbers[0]) moves it from tenant acme to tenant beta"
    ]
    await client.close()

    gone = moved.replace("tenantID: acme}", "tenantID: gamma}")
    with pytest.raises(ConfigError, match=re.escape("numbers[0]: field 'tenantID'")):
        await make_client(numbers_file=write(tmp_path, gone), **settings)


async def test_the_export_starts_a_bridge_with_the_same_numbers_and_tenants(
    make_client, tmp_path, monkeypatch
) -> None:
    """``GET /numbers?format=yaml`` is a numbers file: started from it (each ``${NAME}`` set),
    a new bridge has the same tenants and numbers — a tenant's webhook secret, a number's
    recording policy, each secret from the environment. Before, the export named a tenant's
    ``webhookSecretSet`` (the file refused the start), left out each number's recording policy,
    and named a secret of ``acme-support`` ``${ACME-SUPPORT_TOKEN}``, which is no variable name:
    taken as the secret itself. A reference that is no variable name now stops the start."""
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("ACME_ZZG_TOKEN", "zzg-from-env")
    first = tmp_path / "first"
    first.mkdir()
    settings = {"api_tokens": ("admin-token",)}
    client = await make_client(numbers_file=write(tmp_path, FILE), data_dir=str(first), **settings)
    resp = await client.patch("/numbers/lab", json={"recording": "forbidden"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    export = await (await client.get("/numbers?format=yaml", headers=ADMIN)).text()
    await client.close()

    names = set(re.findall(r"\$\{([^}]*)\}", export))
    assert names == {"ACME_WEBHOOKSECRET", "ACME_SUPPORT_TOKEN"}, export
    monkeypatch.setenv("ACME_WEBHOOKSECRET", SECRET)
    monkeypatch.setenv("ACME_SUPPORT_TOKEN", "zzg-again")
    second = tmp_path / "second"
    second.mkdir()
    client = await make_client(
        numbers_file=write(tmp_path, export), data_dir=str(second), **settings
    )
    catalog = client.app[CATALOG]
    assert catalog.tenants["acme"].webhook_secret == SECRET
    assert catalog.tenants["acme"].max_calls == 3
    assert catalog.number("lab").recording == "forbidden"  # type: ignore[union-attr]
    assert catalog.number("acme-support").secrets == {"token": "zzg-again"}  # type: ignore[union-attr]
    await client.close()

    bad = FILE.replace("${ACME_ZZG_TOKEN}", "${ACME-ZZG-TOKEN}")
    with pytest.raises(ConfigError, match=re.escape("numbers[0] names ${ACME-ZZG-TOKEN}")):
        await make_client(numbers_file=write(tmp_path, bad), data_dir=str(second), **settings)


async def test_what_the_file_names_of_a_tenant_is_the_operator_s_the_rest_the_api_s(
    make_client, tmp_path, caplog
) -> None:
    """The numbers' one rule, for tenants: a field the file's entry names wins (the API's PATCH
    of it is 409 naming the entry), a field it leaves unset is the API's and kept across
    restarts, and a stored value the file replaces is said once at WARNING (never the value).
    Before, the PATCH was taken and silently undone at the next start."""
    data = tmp_path / "data"
    data.mkdir()
    declared = "tenants:\n  - {tenantID: acme, name: Acme}\n"
    settings = {"api_tokens": ("admin-token",), "data_dir": str(data)}
    client = await make_client(numbers_file=write(tmp_path, declared), **settings)
    resp = await client.patch("/tenants/acme", json={"name": "Acme Corp"}, headers=ADMIN)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "defined_by_operator", error
    assert "'name'" in error["message"] and "tenant acme" in error["message"]
    assert "remove it from BRIDGE_NUMBERS_FILE (tenants[0])" in error["message"]
    resp = await client.delete("/tenants/acme", headers=ADMIN)  # was 200: back at the start
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "defined_by_operator", error
    assert "tenant acme is declared in BRIDGE_NUMBERS_FILE (tenants[0])" in error["message"]
    assert client.app[CATALOG].tenants["acme"].name == "Acme"
    unset = {"maxCalls": 7, "webhookURL": "http://127.0.0.1:9/acme", "webhookSecret": SECRET}
    resp = await client.patch("/tenants/acme", json=unset, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await client.close()

    caplog.set_level(logging.WARNING)
    client = await make_client(numbers_file=write(tmp_path, declared), **settings)  # a restart
    tenant = client.app[CATALOG].tenants["acme"]
    assert (tenant.name, tenant.max_calls, tenant.webhook_secret) == ("Acme", 7, SECRET)
    assert not [r for r in caplog.records if "replaces its stored" in r.getMessage()]
    await client.close()

    # The file now names maxCalls and the secret: they win over the stored ones, each said once.
    named = declared.replace("name: Acme}", f"name: Acme, maxCalls: 2, webhookSecret: '{OTHER}'}}")
    client = await make_client(numbers_file=write(tmp_path, named), **settings)
    tenant = client.app[CATALOG].tenants["acme"]
    assert (tenant.max_calls, tenant.webhook_secret) == (2, OTHER)
    said = sorted(r.getMessage() for r in caplog.records if "replaces its stored" in r.getMessage())
    assert said == [
        "tenant acme: BRIDGE_NUMBERS_FILE (tenants[0]) replaces its stored maxCalls",
        "tenant acme: BRIDGE_NUMBERS_FILE (tenants[0]) replaces its stored webhookSecret",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "replaces" in r.message)
    resp = await client.patch("/tenants/acme", json={"maxCalls": 9}, headers=ADMIN)
    assert resp.status == 409 and "'maxCalls'" in (await resp.json())["error"]["message"]
    # A key is no field the file names: the tenant's keys stay the API's.
    assert (await client.post("/tenants/acme/keys", headers=ADMIN)).status == 201
    await client.close()

    # An entry naming the tenant alone declares it all the same: its delete was taken (no
    # field named), and the next start stopped ("field 'name' is required").
    alone = write(tmp_path, "tenants:\n  - {tenantID: acme}\n")
    client = await make_client(numbers_file=alone, **settings)
    resp = await client.delete("/tenants/acme", headers=ADMIN)
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "defined_by_operator", error


async def test_a_tenant_the_store_does_not_take_is_not_served_from_the_file(tmp_path) -> None:
    """The file's tenant is built, stored, then served: a store that fails the write (a disk
    in error) stops the start and leaves the catalog's tenant as the store has it. Before, the
    file's fields were written onto the live tenant first: the catalog served a tenant the
    store never took."""
    import sqlite3

    from bridge.config import Settings
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.file import apply_numbers_file
    from bridge.numbers.store import LocalStore, Sealing
    from bridge.numbers.tenants import Tenant

    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    try:
        await catalog.reload()
        await catalog.save_tenant(Tenant(tenant_id="acme", name="Acme", max_calls=3))
        db = catalog.store._db  # type: ignore[attr-defined]

        class FailingWrites:  # reads go on; every write meets a disk in error
            def execute(self, sql: str, *args: object) -> object:
                if sql.startswith("BEGIN IMMEDIATE"):
                    raise sqlite3.OperationalError("disk I/O error")
                return db.execute(sql, *args)

            def close(self) -> None:
                db.close()

        catalog.store._db = FailingWrites()  # type: ignore[attr-defined]
        path = write(tmp_path, "tenants:\n  - {tenantID: acme, name: Acme Corp, maxCalls: 5}\n")
        with pytest.raises(ConfigError, match=re.escape("tenants[0]")):
            await apply_numbers_file(catalog, path, Settings())
        tenant = catalog.tenants["acme"]
        assert (tenant.name, tenant.max_calls) == ("Acme", 3)
    finally:
        await catalog.close()


async def test_a_sip_number_whose_host_name_the_api_set_is_checked_as_stored(tmp_path) -> None:
    """The file restates a number on Meta's SIP road without ``sipHostname`` or a certificate
    of its own: the API set those (fields the file leaves unset are the API's to manage). The
    start checked the file's entry alone, found no host name, and refused to start; the number
    is checked as it will be stored, the API's fields kept."""
    from bridge.config import Settings
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.file import apply_numbers_file
    from bridge.numbers.model import parse_number
    from bridge.numbers.store import LocalStore, Sealing

    from ..support.tls import TestCA

    pair = TestCA(tmp_path).issue("own", "sip.customer.example")
    own = {"sipHostname": "sip.customer.example", "sipCert": str(pair.cert)}
    own["sipKey"] = str(pair.key)
    catalog = Catalog(LocalStore(str(tmp_path), Sealing("k" * 32)), None)
    try:
        await catalog.reload()
        block = yaml.safe_load(SIP_NO_HOST)["numbers"][0]
        stored = parse_number({**block, "cloudapi": {**block["cloudapi"], **own}}, tenant_id="")
        stored.number_id = "sales"
        await catalog.create_number(stored)  # as the API made it
        await apply_numbers_file(catalog, write(tmp_path, SIP_NO_HOST), Settings())
        number = catalog.number("sales")
        assert number is not None and number.config["sipHostname"] == "sip.customer.example"
    finally:
        await catalog.close()
