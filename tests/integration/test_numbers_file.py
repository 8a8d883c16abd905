"""``BRIDGE_NUMBERS_FILE`` (issue 46): tenants and numbers declared in YAML with ``${ENV}``
secrets are applied at start, updated in place by id on the next start, exported back by
``GET /numbers?format=yaml`` without secrets; a bad file stops the start naming the entry."""

from __future__ import annotations

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

SECRET = "whsec_QWNtZUFjbWVBY21lQWNtZUFjbWVBY21lQWNtZUFjbWU="


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
