"""Signed webhooks out: a local receiver (aiohttp on 127.0.0.1) gets every call event, in order,
signed per Standard Webhooks; retries, refusals, hanging receivers, the allow-list, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bridge.api.keys import METRICS
from bridge.webhooks import delivery

from ..support.calls import wait_state
from ..support.waits import until

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
UNDECODABLE = "whsec_" + "A" * 25
"""A secret in the whsec_ form whose key is no base64 (one character more than a multiple of
four): the standardwebhooks package cannot sign with it."""
LIFECYCLE = ["call.created", "call.ringing", "call.active", "call.ended"]


class Receiver:
    """A webhook receiver: ``/ok`` 200, ``/flaky`` 503 twice then 200, ``/hang`` never answers,
    ``/gone`` 404, ``/gate`` 401 and ``/down`` 503 until ``gate_open``, ``/picky`` 503 for the
    calls whose metadata says ``"fail": true``, 200 for the others. Every request is kept
    (path, headers, body, arrival time)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.flaky_left = 2
        self.gate_open = False  # ``/gate`` 401 and ``/down`` 503 until it opens, then 200
        self.later_by = {"later": 2.0, "much-later": 86400.0}
        """``/later`` and ``/much-later``: each event's first try a 503 whose ``Retry-After`` is
        an HTTP date that many seconds ahead, the next a 200."""
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()  # set at teardown: hanging requests then end
        app = web.Application()
        app.router.add_post("/{kind}", self.handle)
        self.app = app
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        kind = request.match_info["kind"]
        self.requests.append(
            {"kind": kind, "headers": dict(request.headers), "body": body, "at": time.monotonic()}
        )
        self.arrived.set()
        if kind == "hang":
            await self.release.wait()
        if kind == "gone":
            return web.Response(status=404)
        if kind == "gate" and not self.gate_open:
            return web.Response(status=401)
        if kind == "down" and not self.gate_open:
            return web.Response(status=503)
        if kind == "picky" and json.loads(body)["call"]["metadata"].get("fail"):
            return web.Response(status=503)
        if kind in self.later_by and self._first_try(request.headers["webhook-id"]):
            when = formatdate(time.time() + self.later_by[kind], usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})
        if kind == "flaky" and self.flaky_left > 0:
            self.flaky_left -= 1
            return web.Response(status=503)
        return web.Response(status=200)

    def _first_try(self, webhook_id: str) -> bool:
        tries = [r for r in self.requests if r["headers"]["webhook-id"] == webhook_id]
        return len(tries) == 1

    def url(self, kind: str) -> str:
        return f"{self.base}/{kind}"

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["kind"] == kind]

    async def wait_for(self, kind: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events(kind)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{kind}: {len(self.events(kind))}/{count} requests")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.2)
            except TimeoutError:
                pass
        return self.events(kind)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await aiohttp_server(rec.app, host="127.0.0.1")
    rec.base = f"http://127.0.0.1:{server.port}"
    yield rec
    rec.release.set()


def hooks(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_url_allow": ("127.0.0.1",),
        "webhook_retry_base": 0.05,
        "webhook_timeout": 5.0,
        "webhook_flush_timeout": 1.0,
    }
    base.update(overrides)
    return base


async def make(client: Any, callback: str | None, metadata: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"phone": "5521999999999"}
    if callback is not None:
        body["statusCallback"] = callback
    if metadata is not None:
        body["metadata"] = metadata
    resp = await client.post("/call/make", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_every_event_in_order_signed_with_metadata(receiver, make_client) -> None:
    client = await make_client(**hooks())
    call = await make(client, receiver.url("ok"), {"order": "A-17", "n": 3})
    await wait_state(client, call["callID"], "active")
    await client.post("/call/hangup", json={"callID": call["callID"]})
    events = await receiver.wait_for("ok", 4)
    assert [e["type"] for e in events] == LIFECYCLE
    assert {e["callID"] for e in events} == {call["callID"]}
    assert all(e["call"]["metadata"] == {"order": "A-17", "n": 3} for e in events)
    ended = events[-1]["call"]
    assert ended["state"] == "ended" and isinstance(ended["duration"], int)
    ids = set()
    for req in receiver.requests:
        headers = req["headers"]
        assert headers["webhook-signature"].startswith("v1,")
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
        ids.add(headers["webhook-id"])
        assert Webhook(SECRET).verify(req["body"], headers) == json.loads(req["body"])
        wrong = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(req["body"], headers)
        tampered = req["body"].replace("A-17", "A-18")
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered, headers)
    assert len(ids) == 4  # one id per event
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["webhook"]["outcome"] == "delivered" and snap["webhook"]["event"] == "call.ended"
    assert snap["webhook"]["statusCode"] == 200 and snap["webhook"]["url"] == receiver.url("ok")


async def test_503_twice_then_200_is_delivered_on_the_third_try(receiver, make_client) -> None:
    client = await make_client(**hooks())
    call = await make(client, receiver.url("flaky"))
    await wait_state(client, call["callID"], "active")
    events = await receiver.wait_for("flaky", 5)  # created x3, then ringing, active
    assert [e["type"] for e in events[:5]] == ["call.created"] * 3 + [
        "call.ringing",
        "call.active",
    ]
    first_ids = [r["headers"]["webhook-id"] for r in receiver.requests[:3]]
    assert len(set(first_ids)) == 1  # the same message, retried
    text = (await (await client.get("/metrics")).read()).decode()
    assert 'bridge_webhook_deliveries_total{outcome="delivered"}' in text
    assert 'bridge_webhook_attempts_total{result="5xx"} 2.0' in text


async def test_a_retry_after_given_as_an_http_date_is_honoured(
    receiver, make_client, monkeypatch
) -> None:
    """A 503 whose ``Retry-After`` is an HTTP date (RFC 9110 §10.2.3 allows it as well as
    seconds): the retry waits till then, at most the delivery's own longest delay. The date
    was ignored and the retry came on the backoff alone (0.01 s here)."""
    monkeypatch.setattr(delivery, "MAX_RETRY_DELAY", 1.5)
    client = await make_client(**hooks(webhook_retry_base=0.01))
    for kind in ("later", "much-later"):  # 2 s ahead (1-2 s, the date is in whole seconds)
        await make(client, receiver.url(kind))
    for kind in ("later", "much-later"):
        await receiver.wait_for(kind, 2)
        tries = [r for r in receiver.requests if r["kind"] == kind][:2]
        assert tries[0]["headers"]["webhook-id"] == tries[1]["headers"]["webhook-id"]
        assert tries[1]["at"] - tries[0]["at"] >= 0.9, kind


async def test_404_receiver_is_not_retried(receiver, make_client) -> None:
    client = await make_client(**hooks())
    call = await make(client, receiver.url("gone"))
    await wait_state(client, call["callID"], "active")
    await receiver.wait_for("gone", 3)
    await asyncio.sleep(0.5)  # retries would have come by now (base 0.05 s)
    per_id = Counter(r["headers"]["webhook-id"] for r in receiver.requests)
    assert set(per_id.values()) == {1}
    snap = await (await client.get(f"/call/{call['callID']}")).json()
    assert snap["webhook"]["outcome"] == "rejected" and snap["webhook"]["attempts"] == 1
    assert snap["webhook"]["statusCode"] == 404
    metrics = client.app[METRICS]
    assert metrics.webhook_deliveries.labels("rejected")._value.get() >= 3


@pytest.mark.parametrize(("kind", "outcome"), [("gate", "rejected"), ("down", "gave_up")])
async def test_a_failing_receiver_is_said_once_and_its_end_said(
    receiver, make_client, caplog, kind, outcome
) -> None:
    """A receiver that refuses every event (a 401: its secret is wrong) or is down past every
    retry: said once at WARNING with the reason while it lasts (it was a line per event, the
    refusals at INFO only), and said when an event is delivered there again."""
    client = await make_client(**hooks(webhook_max_attempts=2, webhook_retry_base=0.01))
    caplog.set_level(logging.INFO, logger="bridge.webhooks")
    for _ in range(2):
        call = await make(client, receiver.url(kind))
        await wait_state(client, call["callID"], "active")
        await client.post("/call/hangup", json={"callID": call["callID"]})
    metrics = client.app[METRICS]
    await until(lambda: metrics.webhook_deliveries.labels(outcome)._value.get() >= 8, 5, "failed")
    said = [r for r in caplog.records if r.name.startswith("bridge.webhooks")]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, caplog.text
    assert ("HTTP 401" if kind == "gate" else "HTTP 503") in said[0].getMessage()

    def said_again() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "delivered again" in r.getMessage()]

    receiver.gate_open = True
    call = await make(client, receiver.url(kind))
    await until(lambda: len(said_again()) == 1, 5, "the end said")
    assert said_again()[0].levelno == logging.INFO
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1, caplog.text


async def test_a_hanging_receiver_delays_neither_other_calls_nor_the_api(
    make_client, receiver
) -> None:
    client = await make_client(**hooks(webhook_timeout=30.0))
    stuck = await make(client, receiver.url("hang"))
    await receiver.wait_for("hang", 1)
    # Bounds far below the stuck delivery's 30 s: neither waits behind it.
    other = await asyncio.wait_for(make(client, receiver.url("ok")), 10)
    resp = await asyncio.wait_for(client.get("/call/status"), 10)
    assert resp.status == 200
    await wait_state(client, other["callID"], "active")
    events = await receiver.wait_for("ok", 3, timeout=10.0)
    assert [e["type"] for e in events] == ["call.created", "call.ringing", "call.active"]
    # The stuck call's later events wait behind its first one (its order is kept).
    assert len(receiver.events("hang")) == 1
    assert (await client.get(f"/call/{stuck['callID']}")).status == 200


async def test_calls_waiting_to_retry_hold_up_no_other_call(make_client, receiver) -> None:
    """A receiver that fails some calls' events (a 503 for those alone): those calls wait out
    their backoff without holding a worker, and another call's events to the same URL arrive
    meanwhile. The four workers of a URL slept through their calls' backoffs, up to two
    minutes with the defaults, and every other call's events waited behind them."""
    client = await make_client(**hooks(webhook_retry_base=5.0, webhook_flush_timeout=0.1))
    metrics = client.app[METRICS]
    for _ in range(4):  # as many as a URL has workers
        await make(client, receiver.url("picky"), {"fail": True})
    await until(lambda: metrics.webhook_attempts.labels("5xx")._value.get() >= 4, 5, "503s")
    healthy = await make(client, receiver.url("picky"), {"fail": False})

    def heard() -> list[str]:
        events = receiver.events("picky")
        return [e["type"] for e in events if e["callID"] == healthy["callID"]]

    # A bound far below the failing calls' first backoff (2.5-7.5 s), let alone their retries.
    await until(lambda: len(heard()) >= 2, 2.0, "the healthy call's events")
    assert heard()[:2] == ["call.created", "call.ringing"]
    failing = [e for e in receiver.events("picky") if e["call"]["metadata"].get("fail")]
    assert {e["type"] for e in failing} == {"call.created"}  # each call's order kept


async def test_disallowed_status_callback_is_403(receiver, make_client) -> None:
    client = await make_client(**hooks())
    for url in ("http://example.com/hook", "https://10.0.0.1/x", "http://127.0.0.2:9/x"):
        body = {"phone": "5521999999999", "statusCallback": url}
        resp = await client.post("/call/make", json=body)
        assert resp.status == 403, url
        assert (await resp.json())["error"]["code"] == "url_not_allowed"
    for url in ("ftp://127.0.0.1/x", "not a url", 42, "http://127.0.0.1:99999/x"):
        body = {"phone": "5521999999999", "statusCallback": url}
        resp = await client.post("/call/make", json=body)
        assert resp.status == 400, url
        assert (await resp.json())["error"]["code"] == "bad_request"
    assert (await (await client.get("/call/status")).json())["calls"] == []
    # With no allow-list, only the service-wide URL itself is accepted.
    client2 = await make_client(**hooks(webhook_url=receiver.url("ok"), webhook_url_allow=()))
    resp = await client2.post(
        "/call/make", json={"phone": "5521999999999", "statusCallback": receiver.url("other")}
    )
    assert resp.status == 403
    await make(client2, receiver.url("ok"))


async def test_port_qualified_and_bracketed_ipv6_allow_entries_match(receiver, make_client) -> None:
    """``host:port`` allows that host on that port only, ``[::1]`` the IPv6 host ``::1`` on any
    port: they were taken at start and matched no URL's host, so every callback was 403."""
    port = receiver.base.rsplit(":", 1)[1]
    allow = (f"127.0.0.1:{port}", "[::1]")
    client = await make_client(**hooks(webhook_url_allow=allow, webhook_flush_timeout=0.1))
    for url in ("http://127.0.0.1:9/x", f"http://localhost:{port}/x", "http://[::2]/x"):
        body = {"phone": "5521999999999", "statusCallback": url}
        resp = await client.post("/call/make", json=body)
        assert resp.status == 403, url
        assert (await resp.json())["error"]["code"] == "url_not_allowed"
    await make(client, "http://[0::1]:9/x")  # the same address written another way
    call = await make(client, receiver.url("ok"))
    events = await receiver.wait_for("ok", 1)
    assert events[0]["callID"] == call["callID"]


async def test_service_wide_url_and_answer_override(receiver, make_client) -> None:
    client = await make_client(**hooks(webhook_url=receiver.url("ok")))
    resp = await client.post("/call/sim/incoming", json={"phone": "15550001111"})
    inbound = await resp.json()
    await receiver.wait_for("ok", 2)  # created, ringing: to the service-wide URL
    resp = await client.post(
        "/call/answer", json={"callID": inbound["callID"], "statusCallback": receiver.url("flaky")}
    )
    assert resp.status == 200
    events = await receiver.wait_for("flaky", 3)  # call.active, after two 503s
    assert {e["type"] for e in events} == {"call.active"}
    assert [e["type"] for e in receiver.events("ok")] == ["call.created", "call.ringing"]


async def test_an_answer_refused_leaves_the_calls_callback_as_it_was(
    receiver, zclient, zuckzapgo
) -> None:
    """An answer that fails (409: the caller hung up as it was answered) changes nothing of
    the call: its events still go where they went. The answer's ``statusCallback`` was set
    before the answer was tried, and the call's end went to the failed answer's URL."""
    client = await zclient(engine_poll_interval=30.0, **hooks(webhook_url=receiver.url("ok")))
    engine_id = zuckzapgo.ring_inbound("15550006666")
    offer = {"callId": engine_id, "from": "15550006666@s.whatsapp.net"}
    await client.post("/engine/webhook", json={"type": "v1.call.offer", "data": offer})
    ringing = await receiver.wait_for("ok", 2)  # created, ringing
    cid = ringing[0]["callID"]
    zuckzapgo.remote_hangup(engine_id)
    answer = {"callID": cid, "statusCallback": receiver.url("other")}
    resp = await client.post("/call/answer", json=answer)
    assert resp.status == 409, await resp.text()
    terminate = {"type": "v1.call.terminate", "data": {"callId": engine_id}}
    await client.post("/engine/webhook", json=terminate)
    events = await receiver.wait_for("ok", 3)
    assert [e["type"] for e in events] == ["call.created", "call.ringing", "call.ended"]
    assert receiver.events("other") == []


async def test_pending_deliveries_are_flushed_at_shutdown(receiver, make_client) -> None:
    client = await make_client(**hooks(webhook_url=receiver.url("ok")))
    call = await make(client, None)
    await wait_state(client, call["callID"], "active")
    await receiver.wait_for("ok", 3)
    await client.close()  # the app's cleanup: calls end, their call.ended is flushed
    events = receiver.events("ok")
    assert events[-1]["type"] == "call.ended" and events[-1]["call"]["endReason"] == "shutdown"


async def test_queue_overflow_drops_the_oldest_and_counts(make_client, receiver, caplog) -> None:
    client = await make_client(**hooks(webhook_queue_size=1, webhook_flush_timeout=0.1))
    call = await make(client, receiver.url("hang"))
    await wait_state(client, call["callID"], "active")  # created (hanging), ringing, active
    metrics = client.app[METRICS]
    assert metrics.webhook_deliveries.labels("dropped")._value.get() == 1
    assert "queue full" in caplog.text


async def test_retries_waiting_for_a_down_receiver_are_bounded(
    make_client, receiver, caplog
) -> None:
    """A receiver down while many calls have events for it: the events waiting for their
    retry are bounded as the queue is (``BRIDGE_WEBHOOK_QUEUE_SIZE``), the oldest dropped,
    counted and said once at WARNING. Each call held one waiting retry and nothing bounded how
    many calls did: every one, for the two minutes of its tries."""
    size = 2
    client = await make_client(
        **hooks(webhook_queue_size=size, webhook_retry_base=30.0, webhook_flush_timeout=0.1)
    )
    metrics = client.app[METRICS]
    calls = [await make(client, receiver.url("down")) for _ in range(8)]
    await receiver.wait_for("down", len(calls))  # every call's first event tried (503)

    def waiting() -> float:
        return float(metrics.registry.get_sample_value("bridge_webhook_queued") or 0)

    # Queued (at most ``size``) and waiting for a retry (at most ``size``); it was 8 + 2.
    await until(lambda: waiting() <= 2 * size, 5, "the waiting retries bounded")
    assert metrics.webhook_deliveries.labels("dropped")._value.get() >= len(calls) - 2 * size
    said = [r for r in caplog.records if "retry" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING], caplog.text
    assert "BRIDGE_WEBHOOK_QUEUE_SIZE" in said[0].getMessage()
    first = await (await client.get(f"/call/{calls[0]['callID']}")).json()
    assert first["webhook"]["outcome"] == "dropped", first["webhook"]


async def test_events_lost_at_shutdown_are_said_once(make_client, receiver, caplog) -> None:
    """Deliveries the flush time did not see through (a receiver that hangs) are abandoned at
    shutdown: said once at WARNING with how many and why (they were only counted)."""
    client = await make_client(**hooks(webhook_flush_timeout=0.1))
    call = await make(client, receiver.url("hang"))
    await wait_state(client, call["callID"], "active")
    await receiver.wait_for("hang", 1)
    caplog.set_level(logging.INFO, logger="bridge.webhooks")
    await client.close()  # the call ends: created in flight, ringing, active, ended queued
    said = [r for r in caplog.records if r.name.startswith("bridge.webhooks")]
    assert [r.levelno for r in said] == [logging.WARNING], caplog.text
    assert "4 events" in said[0].getMessage() and "BRIDGE_WEBHOOK_FLUSH_TIMEOUT" in caplog.text


async def test_events_over_the_destinations_bound_are_said_once(
    make_client, receiver, caplog, monkeypatch
) -> None:
    """More distinct URLs with work at once than the bound: events for another are dropped,
    said once at WARNING with the reason (they were only counted), not once an event."""
    monkeypatch.setattr(delivery, "MAX_DESTINATIONS", 1)
    client = await make_client(**hooks(webhook_flush_timeout=0.1))
    await make(client, receiver.url("hang"))
    await receiver.wait_for("hang", 1)
    other = await make(client, receiver.url("ok"))
    await wait_state(client, other["callID"], "active")
    said = [r for r in caplog.records if r.name.startswith("bridge.webhooks")]
    assert [r.levelno for r in said] == [logging.WARNING], caplog.text
    assert "too many" in said[0].getMessage() and "/ok" in said[0].getMessage()
    assert client.app[METRICS].webhook_deliveries.labels("dropped")._value.get() >= 3
    assert receiver.events("ok") == []


async def test_a_delivery_that_raises_fails_that_event_alone(
    make_client, receiver, caplog, monkeypatch
) -> None:
    """Signing one event raises (a bug): that event is recorded and counted ``failed``, said
    once at ERROR with its traceback, and the worker goes on with the next ones. The worker
    ended with it, the event's outcome unrecorded and uncounted; a ``ValueError`` was taken
    for a network error and retried."""
    sign = delivery.WebhookService.headers

    def headers(self: Any, item: delivery.Delivery) -> dict[str, str]:
        if item.event == "call.ringing":
            raise ValueError("Incorrect padding")
        return sign(self, item)

    monkeypatch.setattr(delivery.WebhookService, "headers", headers)
    client = await make_client(**hooks())
    metrics = client.app[METRICS]
    call = await make(client, receiver.url("ok"))
    await wait_state(client, call["callID"], "active")
    await receiver.wait_for("ok", 2)  # created, active
    await client.post("/call/hangup", json={"callID": call["callID"]})
    events = await receiver.wait_for("ok", 3)
    assert [e["type"] for e in events] == ["call.created", "call.active", "call.ended"]
    assert metrics.webhook_deliveries.labels("failed")._value.get() == 1
    assert metrics.webhook_deliveries.labels("delivered")._value.get() == 3
    assert metrics.webhook_attempts.labels("error")._value.get() == 0  # never tried
    said = [r for r in caplog.records if r.name.startswith("bridge.")]
    assert [r.levelno for r in said] == [logging.ERROR], caplog.text
    assert said[0].exc_info and "call.ringing" in said[0].getMessage()


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"BRIDGE_WEBHOOK_URL": "http://127.0.0.1:9/h"}, "BRIDGE_WEBHOOK_SECRET"),
        ({"BRIDGE_WEBHOOK_URL": "ftp://x/h", "BRIDGE_WEBHOOK_SECRET": SECRET}, "WEBHOOK_URL"),
        ({"BRIDGE_WEBHOOK_SECRET": "plain-secret"}, "BRIDGE_WEBHOOK_SECRET"),
        # Its form, but not base64 (25 characters): the start failed with binascii's traceback.
        ({"BRIDGE_WEBHOOK_SECRET": UNDECODABLE}, "BRIDGE_WEBHOOK_SECRET"),
        ({"BRIDGE_WEBHOOK_URL_ALLOW": "https://x.example/"}, "BRIDGE_WEBHOOK_URL_ALLOW"),
        # Taken, and then matched no URL: a port that is no port, a broken IPv6 literal.
        (
            {"BRIDGE_WEBHOOK_URL_ALLOW": "x.example:http", "BRIDGE_WEBHOOK_SECRET": SECRET},
            "not a host",
        ),
        (
            {"BRIDGE_WEBHOOK_URL_ALLOW": "x.example:99999", "BRIDGE_WEBHOOK_SECRET": SECRET},
            "not a host",
        ),
        ({"BRIDGE_WEBHOOK_URL_ALLOW": "[::1", "BRIDGE_WEBHOOK_SECRET": SECRET}, "not a host"),
        ({"BRIDGE_WEBHOOK_MAX_ATTEMPTS": "0"}, "BRIDGE_WEBHOOK_MAX_ATTEMPTS"),
        ({"BRIDGE_WEBHOOK_QUEUE_SIZE": "0"}, "BRIDGE_WEBHOOK_QUEUE_SIZE"),
    ],
)
def test_bad_webhook_settings_are_refused(env, needle) -> None:
    from bridge.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=needle):
        load_settings([], env)


async def test_a_tenants_secret_that_cannot_sign_is_400(make_client, caplog) -> None:
    """A tenant's ``webhookSecret`` in the whsec_ form but no base64: it was taken (201), and
    every event of the tenant's calls then failed in the webhooks' observer (said once, at
    ERROR with a traceback) and none reached its ``webhookURL``."""
    client = await make_client()
    caplog.set_level(logging.ERROR)
    body = {"name": "t", "webhookURL": "http://127.0.0.1:9/h", "webhookSecret": UNDECODABLE}
    resp = await client.post("/tenants", json=body)
    assert resp.status == 400, await resp.text()
    assert "webhookSecret" in (await resp.json())["error"]["message"]
    assert not caplog.records, caplog.text
