"""Signed call-event webhooks out, per the Standard Webhooks specification.

Every call event (the JSON of the SSE ``data`` line) goes to the call's ``statusCallback`` or,
without one, to ``BRIDGE_WEBHOOK_URL``, signed with ``BRIDGE_WEBHOOK_SECRET``
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``, made by
the ``standardwebhooks`` package). A tenant's calls' events also go to the tenant's own
``webhookURL``, signed with its own ``webhookSecret`` (``docs/numbers.md``).

- The event source (:meth:`WebhookService.observe`) only appends to a bounded queue: nothing
  on the media path or in a request handler waits for a receiver.
- One :class:`Destination` per URL: a bounded queue (overflow drops the oldest, counted,
  logged once per burst) and up to ``CONCURRENCY`` workers, each making one request at a time.
  A worker never takes an event of a call whose delivery is still under way (in flight or
  waiting to be retried), so each call's events arrive in order, while a slow or failing call
  does not hold up the others.
- Network errors, timeouts, 5xx and 429 are retried with exponential backoff and jitter, up to
  ``BRIDGE_WEBHOOK_MAX_ATTEMPTS`` tries; other answers are final. Redirects are not followed.
  An event waiting for its retry holds no worker (its call's later events wait behind it).
  A run of events refused or given up on is said once per URL (WARNING), and its end.
- At shutdown pending deliveries get ``BRIDGE_WEBHOOK_FLUSH_TIMEOUT`` seconds, then are
  abandoned (counted, and said once at WARNING). Events for more URLs than
  ``MAX_DESTINATIONS`` with work at once are dropped (counted, said once per run).

The per-call state (the callback URL, the latest delivery's outcome) lives on the
:class:`~bridge.calls.Call`; destinations are per URL and go away when idle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks import Webhook

from ..calls import Call, CallEvent
from ..config import WebhookSettings
from ..errors import BadRequest, Forbidden
from ..http import url_parts
from ..metrics import Metrics
from ..tasks import TaskSet
from ..timefmt import iso_utc

log = logging.getLogger(__name__)

CONCURRENCY = 4
"""Workers per destination URL (distinct calls delivered side by side)."""
MAX_DESTINATIONS = 1000
"""Distinct destination URLs with work at once; events for more are dropped (counted)."""
IDLE_SECONDS = 30.0
"""A destination's workers stop after this long without work; the destination goes away."""
MAX_RETRY_DELAY = 60.0
TenantDestination = Callable[[str], "tuple[str, str] | None"]
"""A tenant's own webhook URL and secret, by tenant id (``None``: it has none)."""
USER_AGENT = "webrtc-bridge-webhooks/1"


def display_url(url: str) -> str:
    """A URL without credentials or query (tokens live there), for logs and snapshots."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass
class Delivery:
    """One event on its way to one URL."""

    id: str
    call: Call | None
    """``None`` for an event about no call (``call.permission``)."""
    event: str
    body: str
    published: float
    signer: Webhook
    """Whose secret signs it: the service's, or the tenant's for its own destination."""
    attempts: int = 0

    @property
    def key(self) -> str:
        """What orders deliveries: one call's events go one at a time (events about no call
        share the key ``""``)."""
        return self.call.id if self.call is not None else ""

    def record(self, url: str, outcome: str, status: int | None = None, error: str = "") -> None:
        """Note the outcome on the call, for ``GET /call/{callID}``."""
        if self.call is None:
            return
        self.call.webhook_status = {
            "url": display_url(url),
            "webhookId": self.id,
            "event": self.event,
            "outcome": outcome,
            "attempts": self.attempts,
            "statusCode": status,
            "error": error or None,
            "at": iso_utc(time.time()),
        }


class Destination:
    """One receiver URL: its bounded queue and its workers."""

    def __init__(self, url: str, service: WebhookService) -> None:
        self.url = url
        self.shown = display_url(url)
        self.service = service
        self.queue: deque[Delivery] = deque()
        self.workers = 0
        self._busy: set[str] = set()  # ids of the calls being delivered now, retries included
        self._retries: list[tuple[float, Delivery]] = []  # (when, delivery) waiting to retry
        self._wake = asyncio.Event()
        self._overflowing = False
        self._failed = 0  # events refused or given up on since the last delivered

    def failed(self, delivery: Delivery, outcome: str, reason: str) -> None:
        """An event not delivered (``rejected``, ``gave_up``): the first of a run said with its
        reason (a receiver that refuses or is down fails every event: it was a line each)."""
        self._failed += 1
        if self._failed == 1:
            what = "refused" if outcome == "rejected" else "gave up on"
            event = f"{what} {delivery.id} ({delivery.event}): {reason}"
            log.warning("webhooks to %s: %s; the next counted till one arrives", self.shown, event)

    def delivered(self) -> None:
        """An event delivered: the end of a run of failures said."""
        if self._failed:
            log.info("webhooks to %s: delivered again after %d failed", self.shown, self._failed)
            self._failed = 0

    @property
    def idle(self) -> bool:
        return not self.queue and not self._busy

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self._busy)

    def put(self, delivery: Delivery) -> None:
        if len(self.queue) >= self.service.settings.webhook_queue_size:
            dropped = self.queue.popleft()
            dropped.record(self.url, "dropped", error="queue full")
            self.service.count("dropped")
            if not self._overflowing:
                self._overflowing = True
                log.warning(
                    "webhooks to %s: queue full (%d), dropping the oldest events",
                    self.shown,
                    self.service.settings.webhook_queue_size,
                )
        elif self._overflowing and len(self.queue) < self.service.settings.webhook_queue_size // 2:
            self._overflowing = False
        self.queue.append(delivery)
        self._wake.set()
        if self.workers < CONCURRENCY and self.workers < self.pending:
            self.workers += 1
            self.service.tasks.spawn(self._worker(), f"webhook:{self.shown[:60]}")

    def _take(self, now: float) -> Delivery | None:
        """A retry that is due, else the oldest event whose call has no delivery under way
        (keeps per-call order)."""
        for i, (when, delivery) in enumerate(self._retries):
            if when <= now:
                del self._retries[i]
                return delivery
        for i, delivery in enumerate(self.queue):
            if delivery.key not in self._busy:
                del self.queue[i]
                self._busy.add(delivery.key)
                return delivery
        return None

    def _wait(self, now: float) -> float:
        """How long an idle worker sleeps: till the next retry is due, at most the idle time."""
        return min([IDLE_SECONDS, *(max(0.0, when - now) for when, _ in self._retries)])

    def abandon(self) -> None:
        """The bridge shuts down: what waits (queued, or for its retry) is not delivered."""
        for delivery in [*self.queue, *(delivery for _, delivery in self._retries)]:
            delivery.record(self.url, "abandoned", error="the bridge shut down")
            self.service.count("abandoned")
        self.queue.clear()
        self._retries.clear()

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                delivery = self._take(loop.time())
                if delivery is None:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self._wait(loop.time()))
                    except TimeoutError:
                        if self.idle:
                            return
                    continue
                retry_in: float | None = None
                try:
                    retry_in = await self.service.deliver(self, delivery)
                finally:
                    if retry_in is None:
                        self._busy.discard(delivery.key)
                        self._wake.set()  # the call's next event may now go
                        self.service.progressed()
                    else:  # its call stays busy: its later events wait behind the retry
                        self._retries.append((loop.time() + retry_in, delivery))
        finally:
            self.workers -= 1
            self.service.forget(self)


class WebhookService:
    """Signs and delivers call events. See the module docstring."""

    def __init__(
        self,
        settings: WebhookSettings,
        http: aiohttp.ClientSession,
        metrics: Metrics,
        tenant_destination: TenantDestination | None = None,
    ) -> None:
        """``tenant_destination(tenant id)``: the tenant's own webhook URL and secret, if it
        has one (its calls' events go there too, signed with its secret)."""
        self.settings = settings
        self.tenant_destination = tenant_destination or (lambda tenant_id: None)
        self._tenant_signers: dict[str, Webhook] = {}
        self.http = http
        self.metrics = metrics
        self.allow = {h.lower() for h in settings.webhook_url_allow}
        self.signer = Webhook(settings.webhook_secret) if settings.webhook_secret else None
        self.tasks = TaskSet("webhooks")
        self.destinations: dict[str, Destination] = {}
        self._closing = False
        self._crowded = False  # events dropped for want of a destination: said once
        self._progress = asyncio.Event()  # set after every finished delivery (for close)
        metrics.webhook_queued.set_function(
            lambda: sum(d.pending for d in self.destinations.values())
        )

    # -- the API's side
    def check_callback(self, url: object, field: str = "statusCallback") -> str:
        """A per-call callback URL, or 400 (not an http(s) URL) / 403 ``url_not_allowed``."""
        if not isinstance(url, str) or len(url) > 2048:
            raise BadRequest(f"field '{field}' must be an http(s) URL")
        parts = url_parts(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"field '{field}' must be an http(s) URL")
        if self.signer is None:
            raise Forbidden(
                "webhooks are not configured (BRIDGE_WEBHOOK_SECRET)", code="url_not_allowed"
            )
        if url != self.settings.webhook_url and parts.hostname.lower() not in self.allow:
            raise Forbidden(
                f"host {parts.hostname[:100]!r} is not in BRIDGE_WEBHOOK_URL_ALLOW",
                code="url_not_allowed",
            )
        return url

    # -- the event source's side: never blocks
    def observe(self, event: CallEvent, call: Call | None) -> None:
        if self._closing:
            return
        url = (call.status_callback if call is not None else None) or self.settings.webhook_url
        if url and self.signer is not None:
            self._queue(url, event, call, self.signer)
        tenant_id = call.tenant_id if call is not None else event.data.get("tenantID")
        mine = (
            self.tenant_destination(tenant_id) if isinstance(tenant_id, str) and tenant_id else None
        )
        if mine is not None and mine[0] != url:
            self._queue(mine[0], event, call, self._tenant_signer(mine[1]))

    def _tenant_signer(self, secret: str) -> Webhook:
        signer = self._tenant_signers.get(secret)
        if signer is None:
            if len(self._tenant_signers) > MAX_DESTINATIONS:
                self._tenant_signers.clear()  # secrets rotated many times: start over
            signer = self._tenant_signers[secret] = Webhook(secret)
        return signer

    def _queue(self, url: str, event: CallEvent, call: Call | None, signer: Webhook) -> None:
        delivery = Delivery(
            id=f"msg_{uuid.uuid4().hex}",
            call=call,
            event=event.type,
            body=event.to_json(),
            published=time.monotonic(),
            signer=signer,
        )
        destination = self.destinations.get(url)
        if destination is None:
            if len(self.destinations) >= MAX_DESTINATIONS:
                delivery.record(url, "dropped", error="too many destinations")
                self.count("dropped")
                if not self._crowded:
                    self._crowded = True
                    log.warning(
                        "webhooks: too many destination URLs with work at once (%d): events "
                        "for %s and any other new URL are dropped until some are idle",
                        MAX_DESTINATIONS,
                        display_url(url),
                    )
                return
            if self._crowded and len(self.destinations) < MAX_DESTINATIONS // 2:
                self._crowded = False
            destination = self.destinations[url] = Destination(url, self)
        destination.put(delivery)

    def forget(self, destination: Destination) -> None:
        if destination.workers == 0 and destination.idle:
            if self.destinations.get(destination.url) is destination:
                del self.destinations[destination.url]

    def progressed(self) -> None:
        self._progress.set()

    def count(self, outcome: str) -> None:
        self.metrics.webhook_deliveries.labels(outcome).inc()

    # -- delivery
    def headers(self, delivery: Delivery) -> dict[str, str]:
        now = int(time.time())
        stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(now),
            "webhook-signature": delivery.signer.sign(delivery.id, stamp, delivery.body),
        }

    async def deliver(self, destination: Destination, delivery: Delivery) -> float | None:
        """One try: ``None`` once delivered, refused or out of tries, else the seconds to wait
        before the next (the destination keeps it meanwhile). Cancelled: abandoned."""
        settings = self.settings
        url = destination.url
        delivery.attempts += 1
        try:
            status, error, retry_after = await self._attempt(url, delivery)
        except asyncio.CancelledError:
            delivery.record(url, "abandoned", error="the bridge shut down")
            self.count("abandoned")
            raise
        if status is not None and 200 <= status < 300:
            delivery.record(url, "delivered", status)
            self.count("delivered")
            self.metrics.webhook_latency.observe(time.monotonic() - delivery.published)
            destination.delivered()
            return None
        retryable = status is None or status >= 500 or status == 429
        if not retryable:
            delivery.record(url, "rejected", status, error)
            self.count("rejected")
            destination.failed(delivery, "rejected", error or str(status))
            return None
        if delivery.attempts >= settings.webhook_max_attempts:
            delivery.record(url, "gave_up", status, error)
            self.count("gave_up")
            destination.failed(
                delivery, "gave_up", f"{error or status} after {delivery.attempts} tries"
            )
            return None
        delivery.record(url, "retrying", status, error)
        delay = settings.webhook_retry_base * 2 ** (delivery.attempts - 1)
        delay *= random.uniform(0.5, 1.5)
        return min(max(delay, retry_after or 0.0), MAX_RETRY_DELAY)

    async def _attempt(self, url: str, delivery: Delivery) -> tuple[int | None, str, float | None]:
        """One POST: (status or None, error text, Retry-After seconds)."""
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        try:
            async with self.http.post(
                url,
                data=delivery.body.encode(),
                headers=self.headers(delivery),
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            self.metrics.webhook_attempts.labels("timeout").inc()
            return None, f"timed out after {self.settings.webhook_timeout:g} s", None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.metrics.webhook_attempts.labels("error").inc()
            return None, f"{type(exc).__name__}: {str(exc)[:200]}", None
        self.metrics.webhook_attempts.labels(f"{status // 100}xx").inc()
        error = "" if 200 <= status < 300 else f"HTTP {status}"
        if 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed"
        return status, error, retry_after

    # -- shutdown
    async def close(self) -> None:
        """Stop taking events, give pending ones the flush time, abandon the rest."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.webhook_flush_timeout
        while any(not d.idle for d in self.destinations.values()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                break
        left = sum(d.pending for d in self.destinations.values())
        if left:
            log.warning(
                "webhooks: %d events not delivered at shutdown (BRIDGE_WEBHOOK_FLUSH_TIMEOUT, "
                "%g s, ran out); abandoned",
                left,
                self.settings.webhook_flush_timeout,
            )
        for destination in list(self.destinations.values()):
            destination.abandon()
        await self.tasks.close()
        self.destinations.clear()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
