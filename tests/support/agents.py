"""A fake model server beside a bridge with a call on it, and an agent attached to the call:
the rig every provider's integration tests share (``tests/integration/test_agent_*.py``)."""

from __future__ import annotations

from typing import Any

from .calls import wait_state


async def served_beside_a_call(
    fake: Any, make_client: Any, aiohttp_server: Any, **settings: Any
) -> tuple[Any, str, int]:
    """``fake``'s app served on loopback, and a bridge allowed to reach it with an active
    call: (client, call id, the fake's port)."""
    server = await aiohttp_server(fake.app())
    client = await make_client(fork_url_allow=("127.0.0.1",), **settings)
    call = await (await client.post("/call/make", json={"phone": "5521999999999"})).json()
    await wait_state(client, call["callID"], "active")
    return client, call["callID"], server.port


async def attach_agent(client: Any, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /call/{callID}/agents`` with ``body``, which must be taken (201): its answer."""
    resp = await client.post(f"/call/{call_id}/agents", json=body)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())
