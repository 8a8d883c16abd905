"""A Cloud API number put on Meta's SIP road in one API call (``POST
/numbers/{numberID}/sip/enable``, ``…/sip/rotate``) against the fake Meta's settings, and Meta's
settings compared with the bridge's mode at start (a WARNING, ``health.setup``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml

from bridge.api.keys import CATALOG, ENGINE
from bridge.sip import Verdict, authorize

from ..support.tls import TestCA
from ..support.waits import until

ADMIN = {"Authorization": "Bearer admin-token"}
HOST = "sip.bridge.example"
NUMBER = "15550009999"


@pytest.fixture
def sclient(make_client, meta, tmp_path):
    async def factory(**kw: Any) -> Any:
        opts = {
            **meta.bridge_settings(),
            "api_tokens": ("admin-token",),
            "data_dir": str(tmp_path),
            "sip_hostname": HOST,
            "sip_listen": "127.0.0.1:5061",
            **kw,
        }
        return await make_client(**opts)

    return factory


async def cloud_number(client, meta) -> str:
    meta.add_number("2098765432", "second-token")
    body = {
        "phone": "+15550783000",
        "engine": "cloudapi",
        "cloudapi": meta.number_fields("2098765432"),
    }
    resp = await client.post("/numbers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["numberID"]


async def test_enable_then_rotate_stores_meta_s_password_sealed(sclient, meta, tmp_path):
    client = await sclient()
    number_id = await cloud_number(client, meta)
    account = meta.accounts["2098765432"]  # Meta keeps settings and password per number
    resp = await client.post(f"/numbers/{number_id}/sip/enable", json={}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    server = {"hostname": HOST, "port": 5061}
    assert account.settings_posts[-1] == {
        "calling": {"status": "ENABLED", "sip": {"status": "ENABLED", "servers": [server]}}
    }
    first = account.sip_password
    assert body["sip"] == {"status": "ENABLED", "servers": [server]} and body["sipPasswordSet"]
    assert first not in await resp.text()
    number = client.app[CATALOG].number(number_id)
    assert number.secrets["sipPassword"] == first
    shown = await (await client.get(f"/numbers/{number_id}", headers=ADMIN)).json()
    assert shown["cloudapi"]["sipPasswordSet"] is True and first not in str(shown)
    assert meta.account.settings_posts == [] and meta.account.sip_password != first
    # Sealed at rest: the password is in no file of the store.
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and first.encode() in p.read_bytes()]
    # Meta now signals this number on SIP while the bridge runs it on Graph: said.
    [setup] = shown["health"]["setup"]
    assert "SIP is ENABLED" in setup and "131055" in setup

    account.settings_posts.clear()
    resp = await client.post(f"/numbers/{number_id}/sip/rotate", json={"port": 5062}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200 and body["rotated"] is True, body
    assert account.settings_posts == [
        {"calling": {"sip": {"status": "DISABLED", "servers": []}}},
        {
            "calling": {
                "status": "ENABLED",
                "sip": {"status": "ENABLED", "servers": [{"hostname": HOST, "port": 5062}]},
            }
        },
    ]
    assert account.sip_password != first
    assert client.app[CATALOG].number(number_id).secrets["sipPassword"] == account.sip_password


async def test_sip_enable_refusals_are_clear(sclient, make_client, meta):
    client = await sclient()
    number_id = await cloud_number(client, meta)
    for path, body, status, code in [
        (f"/numbers/{number_id}/sip/enable", {"port": 0}, 400, "bad_request"),
        (f"/numbers/{number_id}/sip/enable", {"host": "x"}, 400, "bad_request"),
        ("/numbers/nope/sip/rotate", {}, 404, "not_found"),
    ]:
        resp = await client.post(path, json=body, headers=ADMIN)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"]) == (status, code), (path, body, error)
    resp = await client.post(f"/numbers/{number_id}/sip/enable", json={"port": 0}, headers=ADMIN)
    assert "port" in (await resp.json())["error"]["message"]
    assert not any(account.settings_posts for account in meta.accounts.values())

    bare = await make_client(**meta.bridge_settings())  # no BRIDGE_SIP_HOSTNAME
    resp = await bare.post("/numbers/default/sip/enable", json={})
    error = (await resp.json())["error"]
    assert resp.status == 409 and error["code"] == "sip_not_configured", error
    assert "BRIDGE_SIP_HOSTNAME" in error["message"]


async def test_the_default_number_keeps_meta_s_password_in_the_store(sclient, meta, tmp_path):
    """The settings' number goes on SIP with one call too (BRIDGE_SIP_PASSWORD unset: the
    password is the API's to manage): Meta's password is stored sealed under the default number
    and is there after a restart."""
    client = await sclient()
    resp = await client.post("/numbers/default/sip/enable", json={}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200 and body["numberID"] == "default", body
    first = meta.account.sip_password
    assert first and first not in await resp.text()
    assert client.app[CATALOG].number("default").secrets["sipPassword"] == first
    shown = await (await client.get("/numbers/default", headers=ADMIN)).json()
    assert shown["cloudapi"]["sipPasswordSet"] is True and first not in str(shown)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and first.encode() in p.read_bytes()]
    # Not a number of the list: the default is still the settings' (no duplicate); exported
    # as its SIP road alone, never its password.
    listed = (await (await client.get("/numbers", headers=ADMIN)).json())["numbers"]
    assert [n["numberID"] for n in listed].count("default") == 1
    exported = await (await client.get("/numbers?format=yaml", headers=ADMIN)).text()
    assert "sipPassword" not in exported and "numberID: default" in exported

    resp = await client.post("/numbers/default/sip/rotate", json={}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    second = meta.account.sip_password
    assert second != first
    again = await sclient()  # a restart on the same store
    assert again.app[CATALOG].number("default").secrets["sipPassword"] == second


async def test_a_password_the_settings_define_is_not_stored_by_the_api(sclient, meta):
    """BRIDGE_SIP_PASSWORD set: the operator's, so ``sip/enable``, ``sip/rotate`` and a PATCH
    of the password are refused (409 naming the setting) before Meta is asked."""
    client = await sclient(sip_password="from-the-settings")
    for method, path, body in [
        ("POST", "/numbers/default/sip/enable", {}),
        ("POST", "/numbers/default/sip/rotate", {}),
        ("PATCH", "/numbers/default", {"cloudapi": {"sipPassword": "another"}}),
    ]:
        resp = await client.request(method, path, json=body, headers=ADMIN)
        error = (await resp.json())["error"]
        assert resp.status == 409 and error["code"] == "defined_by_operator", (path, error)
        assert "cloudapi.sipPassword" in error["message"]
        assert "unset BRIDGE_SIP_PASSWORD" in error["message"]
    assert meta.account.settings_posts == []  # Meta was not asked: no password lost there
    number = client.app[CATALOG].number("default")
    assert number.secrets["sipPassword"] == "from-the-settings"
    shown = await (await client.get("/numbers/default", headers=ADMIN)).json()
    assert shown["cloudapi"]["sipPasswordSet"] is True and "from-the-settings" not in str(shown)


def _digest_takes(engine: Any, password: str) -> bool:
    """Whether the default number's SIP line accepts Meta's answer to its challenge made with
    ``password`` (what Meta's INVITE carries after our 407)."""
    digest = engine.line.digest
    uri = f"sip:+{NUMBER}@{HOST}"
    answer = authorize(digest.challenges(), "INVITE", uri, NUMBER, password)
    return digest.verify("INVITE", [answer]) is Verdict.OK


async def test_after_a_restart_the_operator_s_password_wins_over_the_stored_one(
    sclient, meta, tmp_path, caplog
):
    """A password stored through the API, then BRIDGE_SIP_PASSWORD set to another value at the
    next start: the setting challenges Meta and answers Meta's challenges; the stored one is
    ignored, said once at WARNING (naming the number and the field, never a password). Unset
    again, the stored one works as before."""
    client = await sclient()
    resp = await client.post("/numbers/default/sip/enable", json={}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    stored = meta.account.sip_password
    assert stored

    ca = TestCA(tmp_path)
    pair = ca.issue("bridge", HOST)
    on_sip = {
        "cloudapi_signalling": "sip",
        "sip_listen": "127.0.0.1:0",
        "sip_cert": str(pair.cert),
        "sip_key": str(pair.key),
        "sip_number": NUMBER,
    }
    caplog.set_level(logging.WARNING)
    again = await sclient(**on_sip, sip_password="the-operator-s")  # the same data dir
    engine = again.app[ENGINE]
    assert _digest_takes(engine, "the-operator-s") and not _digest_takes(engine, stored)
    assert engine.sip.sip_password == "the-operator-s"  # what answers Meta's 407 on calls out
    assert again.app[CATALOG].number("default").secrets["sipPassword"] == "the-operator-s"
    await again.app[CATALOG].reload()  # every poll reloads: still said once
    said = [r for r in caplog.records if "cloudapi.sipPassword" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, said
    assert "number default" in said[0].getMessage()
    assert "BRIDGE_SIP_PASSWORD" in said[0].getMessage()
    assert not [r for r in caplog.records if stored in r.getMessage()]
    assert not [r for r in caplog.records if "the-operator-s" in r.getMessage()]

    caplog.clear()
    unset = await sclient(**on_sip)  # BRIDGE_SIP_PASSWORD unset: the stored one, as before
    engine = unset.app[ENGINE]
    assert _digest_takes(engine, stored) and not _digest_takes(engine, "the-operator-s")
    assert not [r for r in caplog.records if "cloudapi.sipPassword" in r.getMessage()]


async def test_a_mismatch_with_meta_is_said_at_start(sclient, meta, caplog):
    caplog.set_level(logging.WARNING)
    meta.account.calling["srtp_key_exchange_protocol"] = "SDES"  # the bridge runs DTLS
    client = await sclient()

    async def setup() -> list[str] | None:
        shown = await (await client.get("/numbers/default", headers=ADMIN)).json()
        return shown["health"].get("setup") or None

    [said] = await until(setup, 5.0, "the start-up comparison")
    assert "srtp_key_exchange_protocol is SDES" in said and "dtls" in said
    warned = [r for r in caplog.records if "srtp_key_exchange_protocol" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    # Set right through the bridge: compared again, the difference is gone.
    resp = await client.patch(
        "/numbers/default/settings", json={"srtpKeyExchange": "DTLS"}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    shown = await (await client.get("/numbers/default", headers=ADMIN)).json()
    assert "setup" not in shown["health"], shown  # as on every number that agrees (was [])

    # A number made at run time is compared at its creation as the start compares those it
    # finds. Before, only its token was checked: the mismatch waited for the next health
    # round (3 minutes) or a settings change.
    caplog.clear()
    meta.add_number("2098765432", "second-token")
    meta.accounts["2098765432"].calling["srtp_key_exchange_protocol"] = "SDES"
    body = {"phone": "+15550783000", "engine": "cloudapi"}
    resp = await client.post(
        "/numbers", json={**body, "cloudapi": meta.number_fields("2098765432")}, headers=ADMIN
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    number_id = created["numberID"]
    shown = await (await client.get(f"/numbers/{number_id}", headers=ADMIN)).json()
    [said] = shown["health"]["setup"]
    assert created["health"]["setup"] == [said]  # the answer to the creation says it too
    assert "srtp_key_exchange_protocol is SDES" in said and shown["health"]["ok"], shown
    warned = [r for r in caplog.records if "srtp_key_exchange_protocol" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING, warned
    assert f"number {number_id}" in warned[0].getMessage()

    # A change that rebuilds its engine (here its media) is checked at once, as a creation is
    # (on every worker: each rebuilds it at its reload). Before, the new engine showed "not
    # checked yet" and said no mismatch until the next round, 3 minutes on.
    caplog.clear()
    meta.accounts["2098765432"].calling["srtp_key_exchange_protocol"] = "DTLS"
    resp = await client.patch(
        f"/numbers/{number_id}", json={"cloudapi": {"media": "sdes"}}, headers=ADMIN
    )
    assert resp.status == 200, await resp.text()
    shown = await (await client.get(f"/numbers/{number_id}", headers=ADMIN)).json()
    assert shown["health"]["ok"], shown  # checked, not "not checked yet"
    [said] = shown["health"]["setup"]
    assert "srtp_key_exchange_protocol is DTLS" in said and "sdes" in said, said
    assert (await resp.json())["health"] == shown["health"]  # the answer to the change too
    warned = [r for r in caplog.records if "srtp_key_exchange_protocol" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING, warned


async def test_sip_declared_in_the_numbers_file_is_enabled_once(sclient, meta, tmp_path, caplog):
    """Zero steps by hand: ``sip: {enable: true}`` in ``BRIDGE_NUMBERS_FILE`` puts the default
    number and a declared one on Meta's SIP road at start; the next start, which finds their
    passwords in the store, asks Meta nothing; a bad ``sip`` block stops the start."""
    meta.add_number("2098765432", "second-token")
    path = tmp_path / "numbers.yaml"
    path.write_text(
        f"""
numbers:
  - numberID: default
    sip: {{enable: true}}
  - numberID: sales
    phone: "+15550783000"
    engine: cloudapi
    cloudapi: {{phoneNumberID: "2098765432", accessToken: second-token,
               appSecret: {meta.app_secret}, verifyToken: v2, graphURL: "{meta.graph_url}"}}
    sip: {{enable: true}}
"""
    )
    client = await sclient(numbers_file=str(path))
    catalog = client.app[CATALOG]
    default, sales = meta.account, meta.accounts["2098765432"]  # each its own password
    assert default.sip_password != sales.sip_password
    assert catalog.number("default").secrets["sipPassword"] == default.sip_password
    assert catalog.number("sales").secrets["sipPassword"] == sales.sip_password
    for account in (default, sales):
        enabled = [p for p in account.settings_posts if p["calling"].get("status") == "ENABLED"]
        assert len(enabled) == 1, account.settings_posts
        account.settings_posts.clear()

    again = await sclient(numbers_file=str(path))  # restart: the file again, the store kept
    assert again.app[CATALOG].number("sales").secrets["sipPassword"] == sales.sip_password
    assert again.app[CATALOG].number("default").secrets["sipPassword"] == default.sip_password
    assert default.settings_posts == sales.settings_posts == []

    path.write_text("numbers:\n  - numberID: default\n    sip: {enable: yes-please}\n")
    with pytest.raises(ValueError, match=r"numbers\[0\].*'sip'"):
        await sclient(numbers_file=str(path))


async def test_a_password_the_numbers_file_names_is_not_stored_by_the_api(
    sclient, meta, tmp_path, monkeypatch
):
    """The rule for a declared number: its file entry names ``sipPassword``, so ``sip/enable``
    and a PATCH of the password are refused (409 naming the entry) before Meta is asked."""
    meta.add_number("2098765432", "second-token")
    monkeypatch.setenv("SALES_SIP_PASSWORD", "from-the-file")
    path = tmp_path / "numbers.yaml"
    path.write_text(
        f"""
numbers:
  - numberID: sales
    phone: "+15550783000"
    engine: cloudapi
    cloudapi: {{phoneNumberID: "2098765432", accessToken: second-token,
               appSecret: {meta.app_secret}, verifyToken: v2, graphURL: "{meta.graph_url}",
               sipPassword: "${{SALES_SIP_PASSWORD}}"}}
"""
    )
    client = await sclient(numbers_file=str(path))
    for method, route, body in [
        ("POST", "/numbers/sales/sip/enable", {}),
        ("PATCH", "/numbers/sales", {"cloudapi": {"sipPassword": "another"}}),
    ]:
        resp = await client.request(method, route, json=body, headers=ADMIN)
        error = (await resp.json())["error"]
        assert resp.status == 409 and error["code"] == "defined_by_operator", (route, error)
        assert "remove it from BRIDGE_NUMBERS_FILE (numbers[0])" in error["message"]
    assert not any(account.settings_posts for account in meta.accounts.values())
    assert client.app[CATALOG].number("sales").secrets["sipPassword"] == "from-the-file"


async def test_enable_keeps_what_changed_while_meta_answered(sclient, meta):
    """``…/sip/enable`` stores Meta's password into the number as it was read before Meta
    was asked (a round trip: seconds when Meta is slow). A ``PATCH`` made meanwhile was undone
    (its label back), a number deleted meanwhile was live again. The password now goes into
    the number as it is when Meta has answered; a number deleted meanwhile is 404."""
    import asyncio

    client = await sclient()
    patched = await cloud_number(client, meta)
    meta.add_number("3098765432", "third-token")
    body = {"phone": "+15550783001", "engine": "cloudapi", "cloudapi": {}}
    body["cloudapi"] = meta.number_fields("3098765432")
    resp = await client.post("/numbers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    deleted = (await resp.json())["numberID"]
    release = asyncio.Event()
    asked: list[str] = []
    for pnid in ("2098765432", "3098765432"):
        account = meta.accounts[pnid]

        async def slow(request: Any, account: Any = account, pnid: str = pnid) -> Any:
            if request.method == "POST":
                asked.append(pnid)
                await release.wait()  # Meta takes its time
            return await type(account).settings_endpoint(account, request)

        account.settings_endpoint = slow

    enables = [
        asyncio.ensure_future(client.post(f"/numbers/{n}/sip/enable", json={}, headers=ADMIN))
        for n in (patched, deleted)
    ]
    await until(lambda: len(asked) == 2, what="Meta asked for both numbers")
    resp = await client.patch(f"/numbers/{patched}", json={"label": "sales"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await client.delete(f"/numbers/{deleted}", headers=ADMIN)).status == 200
    release.set()
    first, second = [await e for e in enables]
    assert first.status == 200, await first.text()
    shown = await (await client.get(f"/numbers/{patched}", headers=ADMIN)).json()
    assert shown["label"] == "sales" and shown["cloudapi"]["sipPasswordSet"] is True, shown
    assert second.status == 404, await second.text()
    assert (await client.get(f"/numbers/{deleted}", headers=ADMIN)).status == 404


async def test_the_sip_only_default_number_takes_its_password_by_patch_and_loses_it_by_null(
    make_client, tmp_path
):
    """The settings' number on Meta's SIP road needs no Graph credentials (BRIDGE_ENGINE_TOKEN
    and the rest unset): its SIP password is still the API's while BRIDGE_SIP_PASSWORD is
    unset, so ``PATCH /numbers/default {"cloudapi": {"sipPassword"}}`` stores it and the
    listener challenges Meta with it; ``null`` removes it from the store. Before, the PATCH
    was 400 ``missing_field`` (``cloudapi.phoneNumberID``, a field of the settings), and a
    ``null`` for a stored password a 500."""
    pair = TestCA(tmp_path).issue("bridge", HOST)
    settings = {
        "engine": "cloudapi",
        "cloudapi_signalling": "sip",
        "sip_listen": "127.0.0.1:0",
        "sip_hostname": HOST,
        "sip_cert": str(pair.cert),
        "sip_key": str(pair.key),
        "sip_number": NUMBER,
        "api_tokens": ("admin-token",),
        "data_dir": str(tmp_path),
    }
    client = await make_client(**settings)
    password = {"cloudapi": {"sipPassword": "from-meta-by-hand"}}
    resp = await client.patch("/numbers/default", json=password, headers=ADMIN)
    shown = await resp.json()
    assert resp.status == 200 and shown["cloudapi"]["sipPasswordSet"] is True, shown
    await until(lambda: _digest_takes(client.app[ENGINE], "from-meta-by-hand"), 5.0, "in use")

    resp = await client.patch(
        "/numbers/default", json={"cloudapi": {"sipPassword": None}}, headers=ADMIN
    )
    shown = await resp.json()
    assert resp.status == 200 and "sipPasswordSet" not in shown["cloudapi"], shown
    await until(lambda: client.app[ENGINE].line.digest is None, 5.0, "no password in use")
    await client.close()
    again = await make_client(**settings)  # a restart: nothing stored
    shown = await (await again.get("/numbers/default", headers=ADMIN)).json()
    assert "sipPasswordSet" not in shown["cloudapi"], shown


async def test_the_export_of_numbers_meta_made_passwords_for_starts_a_fresh_bridge(
    sclient, meta, tmp_path, monkeypatch
):
    """``GET /numbers?format=yaml`` round-trips: a SIP password ``sip/enable`` had Meta make
    is exported as what made it (``sip: {enable: true}``: the fresh bridge puts the number on
    SIP again and stores the password Meta gives it), not as a ``${…}`` placeholder for a value
    the operator never saw; a password the operator gave (a PATCH, even after an enable) stays
    a placeholder. Before, the export named ``sipPassword: ${…}`` for both, and the made
    number's entry cannot be filled; the default number's enable was not exported at all."""
    client = await sclient()
    made = await cloud_number(client, meta)
    meta.add_number("3098765432", "third-token")
    fields = {"2098765432": meta.number_fields("2098765432")}
    fields["3098765432"] = meta.number_fields("3098765432")
    body = {"phone": "+15550783001", "engine": "cloudapi", "cloudapi": fields["3098765432"]}
    given = (await (await client.post("/numbers", json=body, headers=ADMIN)).json())["numberID"]
    for number_id in ("default", made, given):
        resp = await client.post(f"/numbers/{number_id}/sip/enable", json={}, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    password = {"cloudapi": {"sipPassword": "the-operator-s"}}  # the operator's from now on
    assert (await client.patch(f"/numbers/{given}", json=password, headers=ADMIN)).status == 200

    exported = await (await client.get("/numbers?format=yaml", headers=ADMIN)).text()
    entries = {e["numberID"]: e for e in yaml.safe_load(exported)["numbers"]}
    assert entries["default"] == {"numberID": "default", "sip": {"enable": True}}, exported
    assert (
        entries[made]["sip"] == {"enable": True} and "sipPassword" not in entries[made]["cloudapi"]
    )
    placeholder = "${" + f"{given}_SIPPASSWORD".upper() + "}"
    assert "sip" not in entries[given], exported
    assert entries[given]["cloudapi"]["sipPassword"] == placeholder, exported
    for entry in entries.values():  # the operator fills the placeholders from what they know
        known = {**fields[entry.get("cloudapi", {}).get("phoneNumberID", "2098765432")]}
        for name, value in entry.get("cloudapi", {}).items():
            if str(value).startswith("${"):
                monkeypatch.setenv(value[2:-1], known.get(name, "the-operator-s"))
    path = tmp_path / "numbers.yaml"
    path.write_text(exported)
    for account in meta.accounts.values():
        account.settings_posts.clear()

    fresh = await sclient(numbers_file=str(path), data_dir=str(tmp_path / "fresh"))
    catalog = fresh.app[CATALOG]
    for number_id, account in (("default", meta.account), (made, meta.accounts["2098765432"])):
        assert catalog.number(number_id).secrets["sipPassword"] == account.sip_password
        enabled = [p for p in account.settings_posts if p["calling"].get("status") == "ENABLED"]
        assert len(enabled) == 1, (number_id, account.settings_posts)
    assert catalog.number(given).secrets["sipPassword"] == "the-operator-s"
    assert meta.accounts["3098765432"].settings_posts == []  # its password is the operator's
    again = await (await fresh.get("/numbers?format=yaml", headers=ADMIN)).text()
    assert {e["numberID"]: e for e in yaml.safe_load(again)["numbers"]} == entries  # a fixpoint
