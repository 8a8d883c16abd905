"""Numbers live everywhere (issue 46): two bridge instances on one real Redis — a number
created through one takes a call through the other within a second, and a number deleted
mid-call lets the call finish (its tone still heard)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Awaitable

import aiohttp
import pytest

from ..fakes.cloudapi import FakeMeta
from ..support.cluster import (
    Bridge,
    Http,
    Redis,
    get,
    post,
    require_redis,
    start_bridges,
    wait_call,
)
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency
from ..support.waits import until

require_redis()

pytestmark = pytest.mark.timeout(120)


async def hear(rtc: RtcClient, seconds: float = 1.0) -> float:
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    return dominant_frequency(rtc.recorder.since(t0), rtc.recorder.rate)


async def test_a_number_made_on_a_takes_a_call_on_b_and_outlives_its_deletion(
    redis: Redis, session, tmp_path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Bridge(redis, tmp_path / "a"), Bridge(redis, tmp_path / "b")
    await start_bridges(session, a, b)
    try:
        body = {"phone": "+15554440001", "engine": "sim", "sim": {"peer": "tone", "toneHz": 950}}
        status, number = await post(session, a.base, "/numbers", body)
        assert status == 201, number
        made = time.monotonic()

        async def known_on_b() -> bool:
            status, _ = await get(session, b.base, f"/numbers/{number['numberID']}")
            return status == 200

        await until(known_on_b, 1.0, "the number known on B within a second", every=0.01)
        print(f"number created on A -> known on B: {1000 * (time.monotonic() - made):.0f} ms")

        async def checked_on_b() -> bool:  # as B builds its engine: not at B's next round
            _, shown = await get(session, b.base, f"/numbers/{number['numberID']}")
            return shown["health"]["ok"] is True  # was "not checked yet" for up to 3 minutes

        await until(checked_on_b, 3.0, "its health checked on B", every=0.05)
        status, call = await post(
            session, b.base, "/call/make", {"phone": "5521999999999", "from": "+15554440001"}
        )
        assert status == 201 and call["numberID"] == number["numberID"], call
        print(f"number created on A -> call placed on B: {1000 * (time.monotonic() - made):.0f} ms")
        assert call["owner"] == b.worker_id
        rtc = RtcClient(Http(session, b.base), call["callID"], freq=440.0)
        await rtc.offer()
        await asyncio.wait_for(rtc.connected.wait(), 10)
        await asyncio.sleep(0.6)
        assert await hear(rtc) == pytest.approx(950, abs=5)  # the number's own sim

        # Deleted through A mid-call: no new calls on it anywhere; this one goes on.
        async with session.delete(f"{a.base}/numbers/{number['numberID']}") as resp:
            assert resp.status == 200

        async def gone_on_b() -> bool:
            status, _ = await get(session, b.base, f"/numbers/{number['numberID']}")
            return status == 404

        await until(gone_on_b, 1.0, "the deletion seen on B", every=0.01)
        status, refused = await post(
            session, b.base, "/call/make", {"phone": "5521999999998", "from": "+15554440001"}
        )
        assert status == 400 and refused["error"]["code"] == "unknown_number", refused
        assert await hear(rtc) == pytest.approx(950, abs=5)
        status, ended = await post(session, a.base, "/call/hangup", {"callID": call["callID"]})
        assert status == 200 and ended["endReason"] == "hangup"
        await rtc.close()
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_a_store_restarted_empty_gets_its_numbers_and_tenants_back(redis: Redis) -> None:
    """A cluster keeps numbers, tenants (their API keys) and trunks in the directory's Redis,
    which the shipped manifests run without persistence. Restarted empty, its version went
    back to 0: every worker reloaded the empty store, so every tenant's key was refused and
    every number made at run time was gone, for good. A worker that finds the store without
    its epoch writes back what it had (what was written since is kept); everyone reloads."""
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.model import parse_number
    from bridge.numbers.store import RedisStore, Sealing
    from bridge.numbers.tenants import parse_tenant

    from ..support.cluster import SECRET

    catalog = Catalog(RedisStore(redis.url, Sealing(SECRET)), None)
    await catalog.start(poll=0.05)
    reader = RedisStore(redis.url, Sealing(SECRET))
    try:
        secret = "whsec_" + base64.b64encode(b"acme-webhook-secret-0123456789").decode()
        tenant = parse_tenant({"name": "Acme", "webhookSecret": secret})
        _, key = tenant.new_key()
        await catalog.save_tenant(tenant)
        number = parse_number(
            {"phone": "+15554440002", "engine": "sim", "sim": {"peer": "tone"}},
            tenant_id=tenant.tenant_id,
        )
        await catalog.create_number(number)
        assert catalog.tenant_of_key(key) == tenant.tenant_id
        await redis.stop()
        await redis.start()  # empty
        late = parse_tenant({"name": "Written since"})  # by a worker, before the poll
        await reader.put("tenants", late.tenant_id, late.to_record())

        async def restored() -> bool:
            _, records = await reader.load()
            return number.number_id in records["numbers"] and tenant.tenant_id in records["tenants"]

        await until(restored, 10.0, "the numbers and tenants written back")
        await until(lambda: late.tenant_id in catalog.tenants, 5.0, "the merged store reloaded")
        _, records = await reader.load()
        assert records["tenants"][tenant.tenant_id]["secrets"] == {"webhookSecret": secret}
        assert set(records["tenants"]) == {tenant.tenant_id, late.tenant_id}
        assert catalog.tenant_of_key(key) == tenant.tenant_id
        assert catalog.number(number.number_id) is not None
    finally:
        await catalog.close()
        await reader.close()


async def admin_bridges(redis: Redis, session, tmp_path) -> tuple[Bridge, Bridge]:
    """Two bridge processes on one Redis, started, whose admin token is ``admin-token``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {"BRIDGE_API_TOKENS": "admin-token"}
    a, b = (
        Bridge(redis, tmp_path / "a", env=dict(env)),
        Bridge(redis, tmp_path / "b", env=dict(env)),
    )
    await start_bridges(session, a, b)
    return a, b


async def test_a_tenants_max_calls_counts_its_calls_on_every_worker(
    redis: Redis, session, tmp_path
) -> None:
    """A tenant's ``maxCalls`` caps its live calls, not its calls per worker: a second call
    placed on the other (emptier) worker was counted there alone, so N workers let a tenant
    carry N times its cap. The directory lists each tenant's live calls for every worker."""
    a, b = await admin_bridges(redis, session, tmp_path)
    admin = {"Authorization": "Bearer admin-token"}

    async def send(base: str, path: str, body: dict, headers: dict) -> tuple[int, dict]:
        async with session.post(base + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    try:
        status, tenant = await send(a.base, "/tenants", {"name": "Acme", "maxCalls": 1}, admin)
        assert status == 201, tenant
        key = {"Authorization": f"Bearer {tenant['apiKey']}"}
        body = {"phone": "+15554440003", "engine": "sim", "sim": {"peer": "tone"}}
        status, number = await send(a.base, "/numbers", body, key)
        assert status == 201, number

        async def known_on_b() -> bool:  # the key and the number: the catalog's next poll
            async with session.get(b.base + "/numbers", headers=key) as r:
                listed = await r.json() if r.status == 200 else {}
            return number["numberID"] in str(listed)

        await until(known_on_b, 5.0, "the tenant's key and number known on b")
        status, first = await send(a.base, "/call/make", {"phone": "5521999999999"}, key)
        assert status == 201, first
        for entry in (b, a):  # the emptier worker is the other one: it has none of Acme's
            status, refused = await send(entry.base, "/call/make", {"phone": "5521999999998"}, key)
            assert status == 503 and refused["error"]["code"] == "at_capacity", refused
        status, ended = await send(b.base, "/call/hangup", {"callID": first["callID"]}, key)
        assert status == 200, ended
        status, again = await send(b.base, "/call/make", {"phone": "5521999999998"}, key)
        assert status == 201, again
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_every_worker_gives_back_what_it_read_to_a_store_restarted_empty(
    redis: Redis,
) -> None:
    """Two workers read the store at different versions (B read a tenant A has not reloaded
    yet: the 100 ms between two polls) when Redis restarts empty. A, first to look, gave back
    what it had and moved the version to B's own: B saw nothing to do, and its tenant was gone
    from the store while B went on serving it. Each worker now knows the store by an epoch
    (a token the store keeps): a store without it lost its data, and every worker gives back
    what it read."""
    from bridge.numbers.store import RedisStore, Sealing, Unreachable
    from bridge.numbers.tenants import parse_tenant

    from ..support.cluster import SECRET

    a, b = RedisStore(redis.url, Sealing(SECRET)), RedisStore(redis.url, Sealing(SECRET))
    reader = RedisStore(redis.url, Sealing(SECRET))
    try:
        first, second = parse_tenant({"name": "First"}), parse_tenant({"name": "Second"})
        await a.put("tenants", first.tenant_id, first.to_record())
        await a.load()
        await b.put("tenants", second.tenant_id, second.to_record())
        await b.load()  # B has read both; A only the first
        await redis.stop()
        await redis.start()  # empty
        for store in (a, b):  # each worker's next poll (the first meets the dropped connection)
            with contextlib.suppress(Unreachable):
                await store.version()
            await store.version()
        _, records = await reader.load()
        assert set(records["tenants"]) == {first.tenant_id, second.tenant_id}
    finally:
        for store in (a, b, reader):
            await store.close()


ROUNDS = 50


@contextlib.asynccontextmanager
async def two_workers(redis: Redis):
    """Two workers' catalogs on one real Redis (each its own store, as two processes)."""
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.store import RedisStore, Sealing

    from ..support.cluster import SECRET

    a = Catalog(RedisStore(redis.url, Sealing(SECRET)), None)
    b = Catalog(RedisStore(redis.url, Sealing(SECRET)), None)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def stored(redis: Redis, kind: str) -> list[dict]:
    from bridge.numbers.store import RedisStore, Sealing

    from ..support.cluster import SECRET

    reader = RedisStore(redis.url, Sealing(SECRET))
    try:
        _, records = await reader.load()
    finally:
        await reader.close()
    return list(records[kind].values())


def one_won(results: list, code: str) -> None:
    """Exactly one of two simultaneous writes took effect; the other was refused as a
    sequential one is (``Conflict`` with ``code``, the API's 409)."""
    from bridge.errors import Conflict

    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(lost) == 1, results
    assert isinstance(lost[0], Conflict) and lost[0].code == code, lost[0]


async def test_two_workers_creating_one_phone_at_once_store_it_once(redis: Redis) -> None:
    """The uniqueness of a phone was checked against each worker's view, then written: two
    workers creating the same phone at the same moment both passed (the second's view did not
    have the first's number yet) and the phone was on two numbers. The store takes a write
    only at the version the check read: exactly one wins, the other hears duplicate_phone."""
    from bridge.numbers.model import parse_number

    async with two_workers(redis) as (a, b):
        for i in range(ROUNDS):
            body = {"phone": f"+1555777{i:04d}", "engine": "sim"}
            results = await asyncio.gather(
                a.create_number(parse_number(body, tenant_id="")),
                b.create_number(parse_number(body, tenant_id="")),
                return_exceptions=True,
            )
            one_won(results, "duplicate_phone")
        phones = [n["phone"] for n in await stored(redis, "numbers")]
        assert len(phones) == len(set(phones)) == ROUNDS


async def test_two_workers_giving_numbers_one_meta_id_at_once_store_it_once(
    redis: Redis,
) -> None:
    """The same for Meta's ``phone_number_id`` (one webhook front door: two numbers with one
    id would take each other's calls), created and PATCHed at once on two workers."""
    from bridge.numbers.model import parse_number, patch_number

    def cloud(phone: str, meta_id: str) -> dict:
        block = {"phoneNumberID": meta_id, "accessToken": "t", "appSecret": "s", "verifyToken": "v"}
        return {"phone": phone, "engine": "cloudapi", "cloudapi": block}

    async with two_workers(redis) as (a, b):
        for i in range(ROUNDS):
            results = await asyncio.gather(
                a.create_number(parse_number(cloud(f"+1555778{i:04d}", f"7{i}"), tenant_id="")),
                b.create_number(parse_number(cloud(f"+1555779{i:04d}", f"7{i}"), tenant_id="")),
                return_exceptions=True,
            )
            one_won(results, "duplicate_phone_number_id")
        first = await a.create_number(parse_number(cloud("+15557800001", "81"), tenant_id=""))
        second = await a.create_number(parse_number(cloud("+15557800002", "82"), tenant_id=""))
        await until(lambda: b.number(second.number_id) is not None, 2, "B read both")
        for i in range(ROUNDS):
            change = {"cloudapi": {"phoneNumberID": f"9{i}"}}
            results = await asyncio.gather(
                a.update_number(patch_number(a.numbers[first.number_id], change)),
                b.update_number(patch_number(b.numbers[second.number_id], change)),
                return_exceptions=True,
            )
            one_won(results, "duplicate_phone_number_id")
            await asyncio.gather(a.reload(), b.reload())  # both read the winner
        ids = [n["config"].get("phoneNumberID") for n in await stored(redis, "numbers")]
        assert len(ids) == len(set(ids)), ids


async def test_a_number_created_as_its_tenant_is_deleted_elsewhere_is_no_orphan(
    redis: Redis,
) -> None:
    """A number created on one worker for a tenant another worker deletes at the same moment:
    both passed (the tenant was there; it had no numbers), and the number was left with no
    tenant. Now one of the two is refused, every round, and no number outlives its tenant."""
    from bridge.errors import BadRequest, Conflict
    from bridge.numbers.model import parse_number
    from bridge.numbers.tenants import parse_tenant

    async with two_workers(redis) as (a, b):
        kept = 0
        for i in range(ROUNDS):
            tenant = await a.save_tenant(parse_tenant({"name": f"T{i}"}))
            await b.reload()  # B has read the tenant (its poll, without the wait)
            number = parse_number(
                {"phone": f"+1555781{i:04d}", "engine": "sim"}, tenant_id=tenant.tenant_id
            )
            created, deleted = await asyncio.gather(
                a.create_number(number),
                b.delete_tenant(tenant.tenant_id),
                return_exceptions=True,
            )
            if isinstance(deleted, BaseException):  # the number first: the tenant is in use
                assert isinstance(deleted, Conflict) and deleted.code == "tenant_in_use"
                assert not isinstance(created, BaseException), created
                kept += 1
            else:  # the deletion first: no tenant to create the number for
                assert isinstance(created, BadRequest), created
        tenants = {t["tenantID"] for t in await stored(redis, "tenants")}
        owners = [n["tenantID"] for n in await stored(redis, "numbers")]
        assert len(owners) == kept and set(owners) <= tenants


async def test_two_workers_creating_a_tenants_last_trunk_at_once_keep_its_cap(
    redis: Redis,
) -> None:
    """``BRIDGE_SIP_MAX_TRUNKS`` was counted on each worker's view: a tenant one trunk short of
    its cap creating a trunk on two workers at once got both, one over the cap. The count is
    one of the write's checks now: exactly one wins, the other hears too_many_trunks."""
    from bridge.numbers.tenants import parse_tenant
    from bridge.numbers.trunks import parse_trunk

    trunk = {"name": "PBX", "uri": "sip:127.0.0.1:5080;transport=udp"}
    async with two_workers(redis) as (a, b):
        for i in range(ROUNDS):
            tenant = await a.save_tenant(parse_tenant({"name": f"T{i}"}))
            await a.save_trunk(parse_trunk(trunk, tenant.tenant_id), cap=2)
            await b.reload()  # B has read the trunk (its poll, without the wait)
            results = await asyncio.gather(
                a.save_trunk(parse_trunk(trunk, tenant.tenant_id), cap=2),
                b.save_trunk(parse_trunk(trunk, tenant.tenant_id), cap=2),
                return_exceptions=True,
            )
            one_won(results, "too_many_trunks")
        owners = [t["tenantID"] for t in await stored(redis, "trunks")]
        assert len(owners) == 2 * ROUNDS and max(owners.count(o) for o in owners) == 2


async def test_a_key_revoked_on_one_worker_as_another_makes_one_stays_revoked(
    redis: Redis, session, tmp_path
) -> None:
    """A tenant's key revoked through one worker while another worker makes the tenant a new
    key: each wrote the tenant as its own view had it, so the second write undid the first (the
    revoked key worked again, or the new key the app was given never did). A change of a
    tenant is made to the tenant as it is at the write's version now."""
    a, b = await admin_bridges(redis, session, tmp_path)
    admin = {"Authorization": "Bearer admin-token"}

    async def call(
        method: str, base: str, path: str, headers: dict, body: dict | None = None
    ) -> tuple[int, dict]:
        async with session.request(method, base + path, json=body or {}, headers=headers) as r:
            return r.status, await r.json()

    async def works(base: str, key: str) -> bool:
        status, _ = await call("GET", base, "/numbers", {"Authorization": f"Bearer {key}"})
        return status == 200

    try:
        for _ in range(10):
            status, tenant = await call("POST", a.base, "/tenants", admin, {"name": "Acme"})
            assert status == 201, tenant
            old, path = tenant["apiKey"], f"/tenants/{tenant['tenantID']}"
            await until(lambda k=old: works(b.base, k), 2, "the tenant known on B", every=0.01)
            key_id = tenant["keys"][0]["keyID"]
            (made, new), (revoked, _) = await asyncio.gather(
                call("POST", a.base, path + "/keys", admin),
                call("DELETE", b.base, f"{path}/keys/{key_id}", admin),
            )
            assert (made, revoked) == (201, 200), (made, revoked)
            for base in (a.base, b.base):
                key = new["apiKey"]
                await until(lambda b_=base, k=key: works(b_, k), 2, "the new key works")

                async def refused(b_: str = base, k: str = old) -> bool:  # both writes read
                    return not await works(b_, k)

                await until(refused, 2, "the revoked key refused (it worked again for good)")
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_two_workers_changing_two_fields_of_one_number_at_once_keep_both(
    redis: Redis,
) -> None:
    """A number's label changed on one worker while another changes its recording policy:
    each wrote the whole number as its own view had it, so the second write undid the first.
    A change is put on the number as it is at the write: both fields stay, every round."""
    from bridge.numbers.model import parse_number, patch_number

    async with two_workers(redis) as (a, b):
        made = await a.create_number(
            parse_number({"phone": "+15557900001", "engine": "sim"}, tenant_id="")
        )
        await until(lambda: b.number(made.number_id) is not None, 2, "B read the number")
        for i in range(ROUNDS):
            policy = "forbidden" if i % 2 == 0 else "allowed"
            results = await asyncio.gather(
                a.update_number(patch_number(a.numbers[made.number_id], {"label": f"L{i}"})),
                b.update_number(patch_number(b.numbers[made.number_id], {"recording": policy})),
            )
            assert results[1].recording == policy
            await asyncio.gather(a.reload(), b.reload())
            for worker in (a, b):
                number = worker.numbers[made.number_id]
                assert (number.label, number.recording) == (f"L{i}", policy), i


async def test_a_trunk_changed_on_one_worker_as_another_changes_or_deletes_it(
    redis: Redis,
) -> None:
    """Two workers changing two fields of one trunk at once both keep theirs; and a trunk
    changed on one worker while another deletes it stays deleted (its change is a 404): the
    change was written whole from the worker's own view, and brought the trunk back."""
    from bridge.errors import NotFound
    from bridge.numbers.trunks import apply_trunk_fields, parse_trunk

    async with two_workers(redis) as (a, b):
        trunk = await a.save_trunk(parse_trunk({"name": "pbx", "uri": "sip:pbx.example.com"}))
        await b.reload()
        for i in range(ROUNDS):
            await asyncio.gather(
                a.change_trunk(
                    trunk.trunk_id, lambda t, i=i: apply_trunk_fields(t, {"name": f"n{i}"})
                ),
                b.change_trunk(
                    trunk.trunk_id, lambda t, i=i: apply_trunk_fields(t, {"username": f"u{i}"})
                ),
            )
            await asyncio.gather(a.reload(), b.reload())
            kept = a.trunks[trunk.trunk_id]
            assert (kept.name, kept.username) == (f"n{i}", f"u{i}"), i
        for i in range(ROUNDS):
            doomed = await a.save_trunk(
                parse_trunk({"name": f"d{i}", "uri": "sip:pbx.example.com"})
            )
            await b.reload()
            results = await asyncio.gather(
                a.change_trunk(doomed.trunk_id, lambda t: apply_trunk_fields(t, {"name": "back"})),
                b.delete_trunk(doomed.trunk_id),
                return_exceptions=True,
            )
            assert results[1] is None, results  # the deletion always goes through
            assert not isinstance(results[0], BaseException) or isinstance(results[0], NotFound)
            await asyncio.gather(a.reload(), b.reload())
            assert doomed.trunk_id not in a.trunks and doomed.trunk_id not in b.trunks, (i, results)


@contextlib.asynccontextmanager
async def meta_cluster(redis: Redis, session, tmp_path, meta_id: str):
    """Meta's fake app with number ``meta_id``, two workers with API tokens on, and a client
    session with the admin token (Meta's own webhooks go on ``session``: no token)."""
    meta = FakeMeta(token=f"tok-{meta_id}", phone_number_id=meta_id, app_secret="secret-d")
    await meta.start()
    a, b = await admin_bridges(redis, session, tmp_path)
    admin = aiohttp.ClientSession(headers={"Authorization": "Bearer admin-token"})
    try:
        yield meta, admin, a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())
        await admin.close()
        await meta.stop()


async def on_both(admin, workers: tuple[Bridge, Bridge], path: str, want: int) -> bool:
    return [(await get(admin, w.base, path))[0] for w in workers] == [want, want]


async def add_number(admin, workers: tuple[Bridge, Bridge], meta, phone: str) -> str:
    """A Cloud API number for Meta's first number, known on both workers: its path."""
    cloudapi = meta.number_fields(meta.phone_number_id)
    body = {"phone": phone, "engine": "cloudapi", "cloudapi": cloudapi}
    status, number = await post(admin, workers[0].base, "/numbers", body)
    assert status == 201, number
    path = f"/numbers/{number['numberID']}"
    await until(lambda: on_both(admin, workers, path, 200), 3, "the number known on both")
    return path


async def ringing_then_deleted(session, admin, meta, workers: tuple[Bridge, Bridge]) -> tuple:
    """A user's call ringing on one worker, its number deleted since: Meta's call, the
    bridge's call, the worker carrying it and the other."""
    a, b = workers
    path = await add_number(admin, workers, meta, "+15554440041")
    mcall = await meta.user_calls(Http(session, a.base), "15559004001")

    async def rung() -> list:
        return (await get(admin, a.base, "/call/status"))[1]["calls"]

    [call] = await until(rung, 5, "the user's call ringing")
    owner, other = (a, b) if call["owner"] == a.worker_id else (b, a)
    async with admin.delete(f"{a.base}{path}") as resp:
        assert resp.status == 200
    await until(lambda: on_both(admin, workers, path, 404), 3, "the deletion seen on both")
    return mcall, call, owner, other


async def test_metas_terminate_for_a_deleted_numbers_call_reaches_the_worker_carrying_it(
    redis: Redis, session, tmp_path
) -> None:
    """A Cloud API number deleted while a user's call rings on one worker: Meta's terminate
    that lands on the other worker named a Meta number nobody there has any more, so it was
    acknowledged and dropped there (the call rang on until it timed out). That worker still
    reads it as the number's retired engine did and forwards it to the call's worker. With API
    tokens on, that worker (no Cloud API number left) answered it 401 (Meta sends no token):
    a Meta number it remembers opens the door, its signature checked where the call is; an
    unknown one stays 401."""
    async with meta_cluster(redis, session, tmp_path, "4001") as (meta, admin, a, b):
        mcall, call, owner, other = await ringing_then_deleted(session, admin, meta, (a, b))

        async def unknown() -> int:  # 200 (acknowledged) while other's retired engine lives
            resp = await meta.post(Http(session, other.base), meta.envelope({}, number="4999"))
            return resp.status

        await until(lambda: _is(unknown(), 401), 3, "no Cloud API engine left on the other")
        terminate = meta.envelope(meta.terminate_event(mcall, "COMPLETED"))
        forged = await meta.post(Http(session, other.base), terminate, signature="sha256=00")
        assert forged.status == 401, await forged.text()  # checked by the call's worker
        resp = await meta.post(Http(session, other.base), terminate)
        assert resp.status == 200, await resp.text()
        ended = await wait_call(admin, owner.base, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "remote_canceled", ended  # Meta's, not a ring timeout


async def _is(status: Awaitable[int], want: int) -> bool:
    return await status == want


async def test_metas_terminate_reaches_the_call_of_a_deleted_number_whose_id_is_anothers_now(
    redis: Redis, session, tmp_path
) -> None:
    """A deleted number's Meta id given to a new number while the old number's call rings on
    one worker: the other worker read Meta's terminate as the new number's (the directory
    knows the call under the old one), so it handled it itself and the call rang on. The
    calls a number retired there named are looked up first."""
    async with meta_cluster(redis, session, tmp_path, "4002") as (meta, admin, a, b):
        mcall, call, owner, other = await ringing_then_deleted(session, admin, meta, (a, b))
        await add_number(admin, (a, b), meta, "+15554440042")  # the same Meta id
        terminate = meta.envelope(meta.terminate_event(mcall, "COMPLETED"))
        resp = await meta.post(Http(session, other.base), terminate)
        assert resp.status == 200, await resp.text()
        ended = await wait_call(admin, owner.base, call["callID"], "ended", timeout=5)
        assert ended["endReason"] == "remote_canceled", ended


async def test_a_worker_started_after_a_meta_numbers_deletion_takes_its_webhooks(
    redis: Redis, session, tmp_path
) -> None:
    """A Cloud API number deleted on worker A; worker B started since (a scale-out, a deploy)
    never had it. With API tokens on and no Cloud API number on B, Meta's terminate for a
    call of the number came to B without a token and was answered 401: only the workers that
    retired the number remembered it, in memory, so Meta retried it for days. B reads the
    deletion from the shared store and takes it (200); a Meta number never here stays 401."""
    from bridge.numbers.catalog import Catalog
    from bridge.numbers.model import parse_number
    from bridge.numbers.store import RedisStore, Sealing

    from ..fakes.cloudapi import MetaCall
    from ..support.cluster import SECRET

    meta = FakeMeta(token="tok-4003", phone_number_id="4003", app_secret="secret-d")
    await meta.start()
    a = Catalog(RedisStore(redis.url, Sealing(SECRET)), None)  # worker A's catalog
    await a.start()
    (tmp_path / "b").mkdir()
    b = Bridge(redis, tmp_path / "b", env={"BRIDGE_API_TOKENS": "admin-token"})
    try:
        body = {
            "phone": "+15554440043",
            "engine": "cloudapi",
            "cloudapi": meta.number_fields("4003"),
        }
        number = await a.create_number(parse_number(body, tenant_id=""))
        await a.delete_number(number.number_id)
        await start_bridges(session, b)
        late = MetaCall("wacid.late-4003", "15559004003", "USER_INITIATED", peer=None)
        terminate = meta.envelope(meta.terminate_event(late, "COMPLETED"))
        resp = await meta.post(Http(session, b.base), terminate)
        assert resp.status == 200, await resp.text()
        stranger = await meta.post(Http(session, b.base), meta.envelope({}, number="4999"))
        assert stranger.status == 401, await stranger.text()
    finally:
        await b.stop()
        await a.close()
        await meta.stop()
