"""A Meta number deleted through the API is remembered in the numbers' store (``deleted.py``):
a bridge started after the deletion still takes Meta's webhooks naming it without an API
token, for Meta's retry horizon and up to a bound."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bridge.api.keys import SWITCHBOARD
from bridge.config import EngineKind
from bridge.numbers.catalog import Catalog
from bridge.numbers.deleted import KEPT, KEPT_FOR, KIND, Deleted
from bridge.numbers.front_door import webhook_calls
from bridge.numbers.model import parse_number, patch_number
from bridge.numbers.store import Edit, LocalStore, Sealing

from ..fakes.cloudapi import FakeMeta, MetaCall

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
async def meta():
    meta = FakeMeta(token="tok-3101", phone_number_id="3101", app_secret="secret-e")
    await meta.start()
    yield meta
    await meta.stop()


async def test_a_bridge_started_after_a_meta_numbers_deletion_acknowledges_its_webhooks(
    make_client, tmp_path, meta
) -> None:
    """A Cloud API number deleted, then the bridge restarted (a deploy; a worker scaled out
    in a cluster) on the same data directory, with API tokens on and no Cloud API number
    left: Meta's late ``terminate`` for a call of the deleted number came without a token
    and was answered 401, since only the worker that deleted it remembered the number, in
    memory, so Meta retried it for days. The deletion is in the store: acknowledged (200),
    and read as the number's (a cluster's router finds its call on the worker carrying it).
    A Meta number never here is still 401."""

    async def bridge() -> Any:
        return await make_client(api_tokens=("admin-token",), data_dir=str(tmp_path))

    client = await bridge()
    body = {"phone": "+15553101001", "engine": "cloudapi", "cloudapi": meta.number_fields("3101")}
    resp = await client.post("/numbers", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    number_id = (await resp.json())["numberID"]
    resp = await client.delete(f"/numbers/{number_id}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await client.close()

    client = await bridge()  # a new worker on the same store
    late = MetaCall("wacid.late-3101", "15559003101", "USER_INITIATED", peer=None)
    raw = json.dumps(meta.envelope(meta.terminate_event(late, "COMPLETED"))).encode()
    resp = await meta.post(client, raw)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] is False  # acknowledged: nobody carries the call
    # A cluster's router looks for its call under the deleted number (on another worker).
    about = webhook_calls(client.app[SWITCHBOARD], raw, {})
    assert about.engine_call_ids == (f"{number_id}:wacid.late-3101",), about
    stranger = await meta.post(client, meta.envelope({}, number="3999"))
    assert stranger.status == 401, await stranger.text()


async def test_deletions_are_kept_seven_days_and_the_latest_thousand(tmp_path) -> None:
    """The store keeps deletions (a number deleted, or its Meta id changed) for Meta's 7-day
    retry horizon and at most :data:`KEPT`: one older is not taken, and the next deletion
    removes it and the oldest past the cap."""
    store = LocalStore(str(tmp_path), Sealing("k" * 32))
    now = time.time()
    aged = Deleted("9000", "num_aged", EngineKind.CLOUDAPI, now - KEPT_FOR - 60)
    kept = [
        Deleted(str(10_000 + i), f"num_{i}", EngineKind.CLOUDAPI, now - 3600 + i)
        for i in range(KEPT)
    ]
    await store.write([Edit(KIND, d.meta_id, d.to_record()) for d in (aged, *kept)])
    catalog = Catalog(store, None)
    await catalog.start()
    try:
        assert catalog.deleted_meta("9000") is None  # stored still, past its 7 days
        assert catalog.deleted_meta(kept[0].meta_id) == kept[0]
        fields = {"phoneNumberID": "3102", "accessToken": "t", "appSecret": "s", "verifyToken": "v"}
        body = {"phone": "+15553102001", "engine": "cloudapi", "cloudapi": fields}
        number = await catalog.create_number(parse_number(body, tenant_id=""))
        moved = patch_number(number, {"cloudapi": {"phoneNumberID": "3103"}})
        await catalog.update_number(moved)  # Meta's id 3102 left the number: remembered
        await catalog.delete_number(number.number_id)
        for meta_id in ("3102", "3103"):
            found = catalog.deleted_meta(meta_id)
            assert found is not None and found.number_id == number.number_id, meta_id
        _, records = await store.load()
        newest = {"3102", "3103", *(d.meta_id for d in kept[2:])}
        assert set(records[KIND]) == newest  # the aged one and the two oldest gone
        assert catalog.deleted_meta(kept[1].meta_id) is None
    finally:
        await catalog.close()
