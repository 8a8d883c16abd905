"""One receiver URL's side of the webhooks (:mod:`.delivery`): each event on its way
(:class:`Delivery`) and each URL's bounded queue and workers (:class:`Destination`), which keep
each call's events in order, hold no worker while an event waits for its retry (as many waiting
as the queue holds), and say a run of failures once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from standardwebhooks import Webhook

from ..calls import Call
from ..config import WebhookSettings
from ..http import display_url
from ..tasks import TaskSet, wait_event
from ..timefmt import iso_utc

log = logging.getLogger(__name__)

CONCURRENCY = 4
"""Workers per destination URL (distinct calls delivered side by side)."""
IDLE_SECONDS = 30.0
"""A destination's workers stop after this long without work; the destination goes away."""


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


class Sender(Protocol):
    """What a destination uses of the service that owns it (``WebhookService``)."""

    settings: WebhookSettings
    tasks: TaskSet
    """Owns the destinations' workers."""

    async def deliver(self, destination: Destination, delivery: Delivery) -> float | None:
        """One try: ``None`` when done, else the seconds to wait before the next."""

    def count(self, outcome: str) -> None:
        """Count an event's outcome (``dropped``, ``abandoned``…)."""

    def progressed(self) -> None:
        """A delivery finished (the shutdown's flush waits for them)."""

    def forget(self, destination: Destination) -> None:
        """The destination's last worker stopped: drop it if it is idle."""


class Destination:
    """One receiver URL: its bounded queue and its workers."""

    def __init__(self, url: str, service: Sender) -> None:
        self.url = url
        self.shown = display_url(url)
        self.service = service
        self.queue: deque[Delivery] = deque()
        self.workers = 0
        self._busy: set[str] = set()  # ids of the calls being delivered now, retries included
        self._retries: list[tuple[float, Delivery]] = []  # (when, delivery) waiting to retry
        self._wake = asyncio.Event()
        self._overflowing = False
        self._retries_overflowing = False  # said once per burst, as the queue's
        self._failed = 0  # events refused, given up on or failed since the last delivered
        self._broken = 0  # of them, failed in the bridge (:meth:`_crashed`): said apart

    def failed(self, delivery: Delivery, outcome: str, reason: str) -> None:
        """An event not delivered (``rejected``, ``gave_up``): the first of a run said with its
        reason (a receiver that refuses or is down fails every event: it was a line each)."""
        self._failed += 1
        if self._failed - self._broken == 1:
            what = "refused" if outcome == "rejected" else "gave up on"
            event = f"{what} {delivery.id} ({delivery.event}): {reason}"
            log.warning("webhooks to %s: %s; the next counted till one arrives", self.shown, event)

    def _crashed(self, delivery: Delivery, exc: Exception) -> None:
        """Delivering ``delivery`` raised (signing, serialising: the receiver's answers and the
        network's failures are outcomes ``deliver`` gives, never exceptions): the event is
        ``failed``, recorded with the reason and counted, and the worker goes on. It is a bug
        of the bridge's, so the first of a run is said at ERROR with its traceback (apart from
        a run of the receiver's refusals, which would hide it). The worker once ended with it,
        the event's outcome never recorded."""
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        delivery.record(self.url, "failed", error=f"the bridge could not send it ({reason})")
        self.service.count("failed")
        self._failed += 1
        self._broken += 1
        if self._broken == 1:
            log.error(
                "webhooks to %s: %s (%s) failed in the bridge (%s); the next counted till one "
                "arrives",
                self.shown,
                delivery.id,
                delivery.event,
                reason,
                exc_info=exc,
            )

    def delivered(self) -> None:
        """An event delivered: the end of a run of failures said."""
        if self._failed:
            log.info("webhooks to %s: delivered again after %d failed", self.shown, self._failed)
            self._failed = self._broken = 0

    @property
    def idle(self) -> bool:
        return not self.queue and not self._busy

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self._busy)

    def put(self, delivery: Delivery) -> None:
        if len(self.queue) >= self.service.settings.webhook_queue_size:
            self._drop(self.queue.popleft(), "queue full")
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

    def _drop(self, delivery: Delivery, why: str) -> None:
        delivery.record(self.url, "dropped", error=why)
        self.service.count("dropped")

    def _wait_for_retry(self, when: float, delivery: Delivery) -> None:
        """``delivery`` waits till ``when`` for its next try, its call busy meanwhile. As many
        wait as the queue holds (``BRIDGE_WEBHOOK_QUEUE_SIZE``): past it the one waiting
        longest is dropped, its call's next event free to go. A receiver down while many calls
        had events for it once held one waiting retry a call, as many as there were calls."""
        self._retries.append((when, delivery))
        size = self.service.settings.webhook_queue_size
        if len(self._retries) <= size:
            if self._retries_overflowing and len(self._retries) < size // 2:
                self._retries_overflowing = False
            return
        _, dropped = self._retries.pop(0)
        self._drop(dropped, "too many events waiting for a retry")
        self._busy.discard(dropped.key)
        self._wake.set()
        self.service.progressed()
        if not self._retries_overflowing:
            self._retries_overflowing = True
            log.warning(
                "webhooks to %s: more events waiting for a retry than BRIDGE_WEBHOOK_QUEUE_SIZE "
                "(%d), dropping the oldest",
                self.shown,
                size,
            )

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
                    if not await wait_event(self._wake, self._wait(loop.time())) and self.idle:
                        return
                    continue
                retry_in: float | None = None
                try:
                    retry_in = await self.service.deliver(self, delivery)
                except Exception as exc:  # that event failed, not the worker
                    self._crashed(delivery, exc)
                finally:
                    if retry_in is None:
                        self._busy.discard(delivery.key)
                        self._wake.set()  # the call's next event may now go
                        self.service.progressed()
                    else:  # its call stays busy: its later events wait behind the retry
                        self._wait_for_retry(loop.time() + retry_in, delivery)
        finally:
            self.workers -= 1
            self.service.forget(self)
