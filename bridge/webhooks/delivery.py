"""Signed call-event webhooks out, per the Standard Webhooks specification.

Every call event (the JSON of the SSE ``data`` line) goes to the call's ``statusCallback`` or,
without one, to ``BRIDGE_WEBHOOK_URL``, signed with ``BRIDGE_WEBHOOK_SECRET``
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``, made by
the ``standardwebhooks`` package). A tenant's calls' events also go to the tenant's own
``webhookURL``, signed with its own ``webhookSecret`` (``docs/numbers.md``) — once, and with
that secret, when the call's destination is that URL already.

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
  A run of events refused or given up on is said once per URL (WARNING), and its end. A
  delivery that raises (a bug: signing, serialising) fails that event alone (``failed``,
  recorded and counted; said at ERROR with the traceback, once per run); the worker goes on.
- At shutdown pending deliveries get ``BRIDGE_WEBHOOK_FLUSH_TIMEOUT`` seconds, then are
  abandoned (counted, and said once at WARNING). Events for more URLs than
  ``MAX_DESTINATIONS`` with work at once are dropped (counted, said once per run).

The per-call state (the callback URL, the latest delivery's outcome) lives on the
:class:`~bridge.calls.Call`; destinations (:mod:`.destination`) are per URL and go away when
idle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable

import aiohttp
from standardwebhooks import Webhook

from ..calls import Call, CallEvent
from ..config import WebhookSettings
from ..errors import BadRequest, Forbidden
from ..http import HostAllow, display_url, url_parts
from ..http import retry_after as parse_retry_after
from ..metrics import Metrics
from ..tasks import TaskSet, wait_event
from .destination import Delivery, Destination

log = logging.getLogger(__name__)

MAX_DESTINATIONS = 1000
"""Distinct destination URLs with work at once; events for more are dropped (counted)."""
MAX_RETRY_DELAY = 60.0
TenantDestination = Callable[[str], "tuple[str, str] | None"]
"""A tenant's own webhook URL and secret, by tenant id (``None``: it has none)."""
USER_AGENT = "webrtc-bridge-webhooks/1"


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
        self.allow = HostAllow(settings.webhook_url_allow)
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
    def check_callback(
        self, url: object, tenant_id: str = "", field: str = "statusCallback"
    ) -> str:
        """A per-call callback URL, or 400 (not an http(s) URL) / 403 ``url_not_allowed``.
        Allowed: the call's tenant's own ``webhookURL`` (signed with its ``webhookSecret``,
        as :meth:`observe` sends it, with or without the service's secret); with
        ``BRIDGE_WEBHOOK_SECRET``, ``BRIDGE_WEBHOOK_URL`` and the URLs
        ``BRIDGE_WEBHOOK_URL_ALLOW`` allows."""
        if not isinstance(url, str) or len(url) > 2048:
            raise BadRequest(f"field '{field}' must be an http(s) URL")
        parts = url_parts(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"field '{field}' must be an http(s) URL")
        mine = self.tenant_destination(tenant_id) if tenant_id else None
        if mine is not None and mine[0] == url:
            return url
        if self.signer is None:
            raise Forbidden(
                "webhooks are not configured (BRIDGE_WEBHOOK_SECRET): a call's "
                f"'{field}' may only be its tenant's own webhookURL",
                code="url_not_allowed",
            )
        if url != self.settings.webhook_url and not self.allow.allows(parts):
            host = parts.hostname[:100]
            host = f"[{host}]" if ":" in host else host
            host += f":{parts.port}" if parts.port else ""
            raise Forbidden(
                f"host {host!r} is not in BRIDGE_WEBHOOK_URL_ALLOW "
                "(nor is the URL BRIDGE_WEBHOOK_URL or the tenant's own webhookURL)",
                code="url_not_allowed",
            )
        return url

    # -- the event source's side: never blocks
    def observe(self, event: CallEvent, call: Call | None) -> None:
        if self._closing:
            return
        url = (call.status_callback if call is not None else None) or self.settings.webhook_url
        tenant_id = call.tenant_id if call is not None else event.data.get("tenantID")
        mine = (
            self.tenant_destination(tenant_id) if isinstance(tenant_id, str) and tenant_id else None
        )
        if mine is not None and mine[0] == url:  # the tenant's URL: once, with its secret
            self._queue(url, event, call, self._tenant_signer(mine[1]))
            return
        if url and self.signer is not None:
            self._queue(url, event, call, self.signer)
        if mine is not None:
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
        headers = self.headers(delivery)  # signing is no network error: it raises to the worker
        try:
            async with self.http.post(
                url,
                data=delivery.body.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
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
            if not await wait_event(self._progress, remaining):
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
