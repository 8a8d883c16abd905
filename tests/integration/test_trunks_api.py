"""SIP trunks as a resource (issue 48): ``/trunks`` create, read, change and delete, passwords
write-only and sealed at rest, every bad field a 400 naming it, tenants kept apart."""

from __future__ import annotations

from typing import Any

import pytest

from .test_numbers import ADMIN, bearer, nclient, new_tenant, post  # noqa: F401

TRUNK = {
    "name": "Asterisk",
    "uri": "sip:127.0.0.1:5080;transport=udp",
    "username": "bridge",
    "password": "s3cret-pw",
    "codecs": ["PCMU", "PCMA"],
    "inbound": {"allowFrom": ["127.0.0.0/8"], "username": "pbx", "password": "pbx-pw"},
}


async def test_a_trunk_is_created_read_changed_and_deleted(nclient, tmp_path) -> None:  # noqa: F811
    client = await nclient()
    made = await post(client, "/trunks", TRUNK)
    tid = made["trunkID"]
    assert made["transport"] == "udp" and made["passwordSet"] and made["codecs"] == ["PCMU", "PCMA"]
    assert made["inbound"] == {
        "allowFrom": ["127.0.0.0/8"],
        "username": "pbx",
        "passwordSet": True,
        "digest": ["SHA-256", "MD5"],  # RFC 8760: the preferred first
    }
    text = str(made) + (await (await client.get("/trunks", headers=ADMIN)).text())
    assert "s3cret-pw" not in text and "pbx-pw" not in text
    assert "s3cret-pw" not in (tmp_path / "catalog.sqlite").read_bytes().decode("latin-1")
    resp = await client.patch(
        f"/trunks/{tid}", json={"uri": "sip:127.0.0.1:5090;transport=tcp"}, headers=ADMIN
    )
    assert resp.status == 200
    changed = await resp.json()
    assert changed["transport"] == "tcp" and changed["passwordSet"]
    got = await (await client.get(f"/trunks/{tid}", headers=ADMIN)).json()
    assert got["uri"] == "sip:127.0.0.1:5090;transport=tcp"
    assert (await client.delete(f"/trunks/{tid}", headers=ADMIN)).status == 200
    assert (await client.get(f"/trunks/{tid}", headers=ADMIN)).status == 404


@pytest.mark.parametrize(
    "change, field",
    [
        ({"uri": "http://pbx"}, "uri"),
        ({"uri": "sip:pbx:99999"}, "uri"),
        ({"uri": "sip:pbx;transport=sctp"}, "uri"),
        ({"codecs": ["G729"]}, "codecs"),
        ({"srtp": "dtls"}, "srtp"),
        ({"inbound": {"allowFrom": ["not-a-net"]}}, "inbound"),
        ({"register": True, "password": None, "username": ""}, "username"),
        ({"name": ""}, "name"),
    ],
)
async def test_bad_fields_are_a_400_naming_them(nclient, change, field) -> None:  # noqa: F811
    client = await nclient()
    body: dict[str, Any] = {**TRUNK, **change}
    body = {k: v for k, v in body.items() if v is not None}
    resp = await client.post("/trunks", json=body, headers=ADMIN)
    payload = await resp.json()
    assert resp.status == 400, payload
    assert field in payload["error"]["message"], payload


async def test_a_tenant_sees_only_its_own_trunks(nclient) -> None:  # noqa: F811
    client = await nclient()
    acme = await new_tenant(client, "Acme")
    other = await new_tenant(client, "Other")
    mine = await post(client, "/trunks", TRUNK, headers=bearer(acme["apiKey"]))
    assert mine["tenantID"] == acme["tenantID"]
    theirs = bearer(other["apiKey"])
    assert (await client.get(f"/trunks/{mine['trunkID']}", headers=theirs)).status == 404
    listed = await (await client.get("/trunks", headers=theirs)).json()
    assert listed == {"trunks": []}


async def test_a_tenant_has_at_most_sip_max_trunks(nclient) -> None:  # noqa: F811
    """Each POST /trunks stored a trunk, with no bound: a tenant's key could fill the store
    (and every worker's catalog, keep-alives and registrations with it). Past
    BRIDGE_SIP_MAX_TRUNKS a 409 says why; other tenants, and a deleted trunk's place, count
    apart."""
    client = await nclient(sip_max_trunks=3)
    acme = await new_tenant(client, "Acme")
    other = await new_tenant(client, "Other")
    key = bearer(acme["apiKey"])
    made = [await post(client, "/trunks", TRUNK, headers=key) for _ in range(3)]
    refused = await post(client, "/trunks", TRUNK, headers=key, status=409)
    assert refused["error"]["code"] == "too_many_trunks", refused
    assert "BRIDGE_SIP_MAX_TRUNKS" in refused["error"]["message"], refused
    assert len((await (await client.get("/trunks", headers=key)).json())["trunks"]) == 3
    await post(client, "/trunks", TRUNK, headers=bearer(other["apiKey"]))  # its own three
    await post(client, "/trunks", TRUNK)  # the service's own
    resp = await client.delete(f"/trunks/{made[0]['trunkID']}", headers=key)
    assert resp.status == 200
    await post(client, "/trunks", TRUNK, headers=key)


async def test_trunks_need_a_token(nclient) -> None:  # noqa: F811
    client = await nclient()
    assert (await client.post("/trunks", json=TRUNK)).status == 401
    assert (await client.get("/trunks")).status == 401


async def test_a_sip_participant_request_names_its_bad_field(nclient) -> None:  # noqa: F811
    client = await nclient()
    call = await post(client, "/call/make", {"phone": "5521999999999"})
    cid = call["callID"]
    body = {"callID": cid, "sip": {"uri": "sip:1001@127.0.0.1"}}
    resp = await client.post("/call/participants", json=body, headers=ADMIN)
    payload = await resp.json()
    assert resp.status == 400 and payload["error"]["code"] == "no_trunk", payload
    await post(client, "/trunks", TRUNK)
    for sip, field in (
        ({"uri": "tel:+123"}, "sip.uri"),
        ({"uri": "sip:1001@127.0.0.1", "trunkID": "trk_nope"}, "sip.trunkID"),
        ({"uri": "sip:1001@127.0.0.1", "headers": {"Via": "x"}}, "sip.headers"),
    ):
        resp = await client.post(
            "/call/participants", json={"callID": cid, "sip": sip}, headers=ADMIN
        )
        payload = await resp.json()
        assert resp.status == 400 and field in payload["error"]["message"], payload
    resp = await client.post(
        "/call/participants",
        json={"callID": "nope", "sip": {"uri": "sip:1@127.0.0.1"}},
        headers=ADMIN,
    )
    assert resp.status == 404


async def test_a_trunks_hold_music_is_an_asset_it_may_play(nclient) -> None:  # noqa: F811
    """``holdMusic`` (what WhatsApp hears while a phone of the trunk holds by re-INVITE): an
    asset that exists (404 otherwise), a string (400 naming it), cleared with null."""
    import aiohttp

    from ..support.audio_files import make

    client = await nclient()
    form = aiohttp.FormData()
    form.add_field("audio", make("wav", 1700.0, 0.5), filename="hold.wav")
    resp = await client.post("/call/audio-assets", data=form, headers=ADMIN)
    asset = (await resp.json())["assetId"]
    resp = await client.post(
        "/trunks", json={**TRUNK, "holdMusic": "as_nosuchasset"}, headers=ADMIN
    )
    assert resp.status == 404, await resp.text()
    resp = await client.post("/trunks", json={**TRUNK, "holdMusic": 5}, headers=ADMIN)
    payload = await resp.json()
    assert resp.status == 400 and "holdMusic" in payload["error"]["message"], payload
    made = await post(client, "/trunks", {**TRUNK, "holdMusic": asset})
    assert made["holdMusic"] == asset
    resp = await client.patch(f"/trunks/{made['trunkID']}", json={"holdMusic": None}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["holdMusic"] is None
