"""Meta's webhooks as they really arrive: out of order (a terminate before the connect, statuses
before Meta's answer to ``connect``) and more than once. Many seeded orders of each call's
events, some delivered before ``connect`` has answered, duplicated and batched: every order
ends in the right state with exactly one ``call.ended`` — seeded orders, and orders
Hypothesis draws (property-based, derandomized so CI runs the same ones)."""

from __future__ import annotations

import itertools
import logging
import random
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.api.keys import ENGINE, MANAGER

from ..support.calls import events_until_ended, wait_state
from ..support.waits import until

ORDERS = 60
"""Outbound orders tried (seeded: the same on every run), on top of the inbound ones."""

SCENARIOS: dict[str, tuple[list[str], str, str | None]] = {
    # events Meta sends for the call, the end reason they must give, its endDetail
    "answered": (["RINGING", "answer", "ACCEPTED", "end_completed"], "remote_hangup", None),
    "media_timeout": (
        ["RINGING", "answer", "ACCEPTED", "end_failed"],
        "media_timeout",
        "138021: Media receive timeout",
    ),
    "rejected": (["RINGING", "REJECTED", "end_rejected"], "rejected", None),
    "unanswered": (["RINGING", "end_unanswered"], "no_answer", None),
}


@pytest.fixture
def cclient(make_client, meta):
    async def factory(**kw):
        return await make_client(**{**meta.bridge_settings(), **kw})

    return factory


def meta_event(meta: Any, mcall: Any, name: str) -> dict[str, Any]:
    if name == "answer":
        return meta.answer_event(mcall)
    if name in ("RINGING", "ACCEPTED", "REJECTED"):
        return meta.status_event(mcall, name)
    errors = [{"code": 138021, "message": "Media receive timeout"}]
    item = {
        "end_completed": {"status": "COMPLETED", "duration": 7, "start_time": "1", "end_time": "8"},
        "end_failed": {"status": "FAILED", "errors": errors},
        "end_rejected": {"status": "REJECTED"},
        "end_unanswered": {"status": "COMPLETED"},
    }[name]
    event = meta.terminate_event(mcall, **item)
    event["calls"][0]["biz_opaque_callback_data"] = mcall.opaque
    return event


def plan(rng: random.Random, names: list[str]) -> tuple[list[list[str]], int]:
    """A delivery: the events shuffled, some repeated, cut into POST bodies; and how many
    bodies go before Meta has answered ``connect``."""
    sent = names + [n for n in names if rng.random() < 0.4]
    rng.shuffle(sent)
    bodies: list[list[str]] = []
    while sent:
        take = rng.choice([1, 1, 2, 3])
        bodies.append(sent[:take])
        sent = sent[take:]
    return bodies, rng.randrange(len(bodies) + 1)


async def test_outbound_orders_shuffled_and_repeated_end_once_in_the_right_state(cclient, meta):
    client = await cclient()
    engine, manager = client.app[ENGINE], client.app[MANAGER]
    rng = random.Random(20261123)
    ended: dict[str, list[Any]] = defaultdict(list)
    after_end: dict[str, list[str]] = defaultdict(list)
    outcomes = []
    async with manager.events.subscribe() as sub:
        for i in range(ORDERS):
            scenario = rng.choice(sorted(SCENARIOS))
            names, reason, detail = SCENARIOS[scenario]
            bodies, early = plan(rng, names)

            async def deliver(mcall: Any, bodies: list[list[str]]) -> None:
                for body in bodies:
                    values = [meta_event(meta, mcall, n) for n in body]
                    assert (await meta.post(client, meta.envelope(*values))).status == 200

            async def before_answer(mcall: Any, first: list[list[str]] = bodies[:early]) -> None:
                await deliver(mcall, first)
                await until(engine.graph_side.inbox.queue.empty, 3, "early webhooks taken")

            meta.before_connect_answer = before_answer
            resp = await client.post("/call/make", json={"phone": f"55219000{i:05d}"})
            assert resp.status == 201, await resp.text()
            call = await resp.json()
            mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
            await deliver(mcall, bodies[early:])
            snap = await wait_state(client, call["callID"], "ended", timeout=5)
            outcomes.append(
                (scenario, bodies, early, snap["endReason"], snap["endDetail"], call["callID"])
            )
            assert (snap["endReason"], snap["endDetail"]) == (reason, detail), outcomes[-1]
            await until(engine.graph_side.inbox.queue.empty, 3, "late webhooks taken")
        for event in await events_until_ended(sub, {o[5] for o in outcomes}):
            cid = event.call["callID"]
            if event.type == "call.ended":
                ended[cid].append(event)
            elif ended[cid]:
                after_end[cid].append(event.type)
    assert len(ended) == ORDERS
    assert all(len(events) == 1 for events in ended.values()), {k: len(v) for k, v in ended.items()}
    assert not any("call.active" in types for types in after_end.values()), after_end
    assert engine.calls == {} and engine._dialling == {}
    assert {o[0] for o in outcomes} == set(SCENARIOS), "every scenario tried"
    assert any(o[2] > 0 for o in outcomes) and any(o[2] == 0 for o in outcomes)


async def test_inbound_terminate_before_or_after_connect_and_repeated(cclient, meta):
    """A user who hangs up while the call rings: connect and terminate in either order, each
    possibly twice. Terminate first: the late connect never rings. Connect first: the call
    rings and ends ``remote_canceled``, once."""
    client = await cclient()
    engine, manager = client.app[ENGINE], client.app[MANAGER]
    rng = random.Random(7)
    async with manager.events.subscribe() as sub:
        for i in range(8):
            mcall, connect = await meta.user_offer(f"1555000{i:04d}")
            if i % 2:  # connect first: it rings before the user hangs up
                assert (await meta.post(client, meta.envelope(connect))).status == 200
                # 10 s: closing the previous call's leg mid-DTLS can take the leg's 5 s close
                # timeout, and the manager takes engine events one at a time meanwhile.
                await until(lambda m=mcall: manager.registry.by_engine_id(m.wacid), 10, "ringing")
                terminate = meta.terminate_event(mcall, "COMPLETED")
                sent = [terminate, rng.choice([connect, terminate])]
            else:  # the terminate overtakes the connect
                terminate = meta.terminate_event(mcall, "COMPLETED")
                sent = [terminate, connect, rng.choice([connect, terminate])]
            for value in sent:
                assert (await meta.post(client, meta.envelope(value))).status == 200
            await until(engine.graph_side.inbox.queue.empty, 3, "taken")
            if i % 2 == 0:
                assert mcall.wacid not in engine.calls, "a terminated call must not ring"
                tried = [a["action"] for a in meta.actions if a.get("call_id") == mcall.wacid]
                assert tried == [], f"a terminated call must not ring: {tried}"
        await until(lambda: not engine.calls, 3, "no call left")
        events = await events_until_ended(sub)
    ended = [e for e in events if e.type == "call.ended"]
    created = {e.call["callID"] for e in events if e.type == "call.created"}
    assert len(ended) == len(created) == 4, [(e.type, e.call["callID"]) for e in events]
    assert {e.call["endReason"] for e in ended} == {"remote_canceled"}
    assert (await (await client.get("/call/status")).json())["calls"] == []


async def test_a_call_ended_while_the_bridge_answers_it_is_no_failure(cclient, meta, caplog):
    """The user hangs up at once: Meta's terminate comes with the connect (one body, or the
    next), while the bridge still builds its answer. The call is over, not failed: nothing
    more is sent to Meta for it and nothing is logged as a failure (the bridge said "cannot
    pre-accept: RTCPeerConnection is closed", then sent a ``reject`` that Meta refused with
    138001, two WARNINGs for a caller who hung up)."""
    client = await cclient()
    engine, manager = client.app[ENGINE], client.app[MANAGER]
    caplog.set_level(logging.WARNING)
    mcall, connect = await meta.user_offer("15550009876")
    body = meta.envelope(connect, meta.terminate_event(mcall, "COMPLETED"))
    assert (await meta.post(client, body)).status == 200
    await until(engine.graph_side.inbox.queue.empty, 3, "taken")

    def answering() -> bool:
        return any("pre-accept" in t.get_name() for t in engine._tasks._tasks)

    await until(lambda: not engine.calls and not answering(), 5, "the answer given up")
    assert [a for a in meta.actions if a.get("call_id") == mcall.wacid] == []
    assert manager.registry.by_engine_id(mcall.wacid) is None  # it never rang
    said = [r.getMessage() for r in caplog.records if r.name.startswith("bridge.engines")]
    assert said == [], said


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, list[list[str]], int]:
    """A scenario, its events permuted with some repeated, cut into bodies, and how many
    bodies reach the bridge before Meta has answered ``connect``."""
    scenario = draw(st.sampled_from(sorted(SCENARIOS)))
    names = SCENARIOS[scenario][0]
    sent = draw(st.permutations(names + draw(st.lists(st.sampled_from(names), max_size=3))))
    cuts = draw(st.lists(st.integers(1, len(sent) - 1), max_size=3, unique=True))
    edges = [0, *sorted(cuts), len(sent)]
    bodies = [list(sent[a:b]) for a, b in itertools.pairwise(edges) if b > a]
    return scenario, bodies, draw(st.integers(0, len(bodies)))


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run (CI); shrinking finds a minimal order
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(delivery=deliveries())
async def test_any_order_property_based(cclient, meta, delivery):
    """Hypothesis draws the orders: whatever it draws, the call ends once, as it should."""
    scenario, bodies, early = delivery
    _names, reason, detail = SCENARIOS[scenario]
    client = meta.__dict__.get("_bridge")
    if client is None:  # one bridge for every example (examples share the test's fixtures)
        client = meta.__dict__["_bridge"] = await cclient()
    engine, manager = client.app[ENGINE], client.app[MANAGER]
    meta.__dict__["_n"] = n = meta.__dict__.get("_n", 0) + 1

    async def deliver(mcall: Any, chunk: list[list[str]]) -> None:
        for body in chunk:
            values = [meta_event(meta, mcall, name) for name in body]
            assert (await meta.post(client, meta.envelope(*values))).status == 200

    async def before_answer(mcall: Any) -> None:
        await deliver(mcall, bodies[:early])
        await until(engine.graph_side.inbox.queue.empty, 3, "early webhooks taken")

    meta.before_connect_answer = before_answer
    async with manager.events.subscribe() as sub:
        resp = await client.post("/call/make", json={"phone": f"55218000{n:05d}"})
        assert resp.status == 201, await resp.text()
        call = await resp.json()
        mcall = next(c for c in meta.meta_calls.values() if c.opaque == call["callID"])
        await deliver(mcall, bodies[early:])
        snap = await wait_state(client, call["callID"], "ended", timeout=5)
        await until(engine.graph_side.inbox.queue.empty, 3, "late webhooks taken")
        events = await events_until_ended(sub, {call["callID"]}, settle=0.1)
        types = [e.type for e in events if e.call.get("callID") == call["callID"]]
    assert (snap["endReason"], snap["endDetail"]) == (reason, detail), (bodies, early)
    assert types.count("call.ended") == 1, types
    assert "call.active" not in types[types.index("call.ended") :], types
    assert call["callID"] not in {c.call_id for c in engine.calls.values()}
