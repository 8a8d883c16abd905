"""One webhook POST of Meta's may carry several entries and changes (Meta's Cloud API Calling
documentation: webhooks), each change naming its number in ``metadata.phone_number_id``: every
change is its own number's, whichever number the body names first."""

from __future__ import annotations

from typing import Any

from ..support.waits import until
from .test_numbers import ADMIN, cloudapi_body, meta_app, nclient, post

__all__ = ["nclient"]  # the fixture, used here


async def test_one_post_with_two_numbers_calls_rings_each_on_its_own_number(
    nclient, caplog
) -> None:
    """Two users call two numbers of one app, and Meta posts both ``connect`` changes in one
    body (one entry, then two entries): each call is pre-accepted through its own number's id
    and rings on that number (the whole body went to the first number's engine, which
    pre-accepted the second call through its own id: Meta refused it, and that call was
    rejected without ringing); neither engine touches the other's call."""
    meta = await meta_app({"1001": "tok-1001", "1002": "tok-1002"}, "secret-a", 500.0)
    try:
        client = await nclient()
        ids = {}
        for pnid, phone in (("1001", "+15551001001"), ("1002", "+15551001002")):
            ids[pnid] = (await post(client, "/numbers", cloudapi_body(meta, pnid, phone)))[
                "numberID"
            ]
        for split in (False, True):
            offers = {pnid: await meta.user_offer(f"1555900{pnid}{split:d}", pnid) for pnid in ids}
            bodies = [meta.envelope(event, number=pnid) for pnid, (_c, event) in offers.items()]
            body: dict[str, Any] = bodies[0]
            if split:  # two entries
                body["entry"] += bodies[1]["entry"]
            else:  # one entry, two changes
                body["entry"][0]["changes"] += bodies[1]["entry"][0]["changes"]
            assert (await meta.post(client, body)).status == 200
            for pnid, (mcall, _event) in offers.items():
                await until(lambda m=mcall: m.pre_accept_at, 5, f"pre_accept on {pnid}")
                assert mcall.actions == ["pre_accept"], (pnid, mcall.actions)

            async def ringing(offers: dict = offers) -> dict[str, str] | None:
                resp = await client.get("/call/status", headers=ADMIN)
                calls = (await resp.json())["calls"]
                peers = {f"{c.user}@s.whatsapp.net": p for p, (c, _e) in offers.items()}
                found = {
                    peers[c["peer"]]: c["numberID"]
                    for c in calls
                    if c["peer"] in peers and c["state"] == "ringing"
                }
                return found if len(found) == 2 else None

            assert await until(ringing, 5, "both calls ringing") == ids
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    finally:
        await meta.stop()
