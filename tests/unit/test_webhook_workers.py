"""A destination's webhook workers stop when the service closes, even where Python 3.11's
``asyncio.wait_for`` swallowed the cancellation (it returns the result of a wait that
completed in the same turn as the cancel): a worker woken by the turn's last event as the
bridge shut down waited on, and the shutdown waited 5 s for it, said at WARNING."""

from __future__ import annotations

import asyncio
import time

from standardwebhooks import Webhook

from bridge.config import settings_for_tests
from bridge.tasks import TaskSet
from bridge.webhooks.destination import Delivery, Destination

SECRET = "whsec_" + "a" * 44


class Service:
    """What a destination uses of the webhook service: every delivery done at once."""

    def __init__(self) -> None:
        self.settings = settings_for_tests().webhooks
        self.tasks = TaskSet("webhooks")
        self.delivered: list[str] = []

    async def deliver(self, destination: Destination, delivery: Delivery) -> float | None:
        self.delivered.append(delivery.id)
        return None

    def count(self, outcome: str) -> None:
        pass

    def progressed(self) -> None:
        pass

    def forget(self, destination: Destination) -> None:
        pass


def delivery(id_: str) -> Delivery:
    return Delivery(id_, None, "call.permission", "{}", time.monotonic(), Webhook(SECRET))


async def test_a_worker_woken_as_the_service_closes_stops() -> None:
    service = Service()
    destination = Destination("http://127.0.0.1:9/hook", service)
    destination.put(delivery("first"))  # its worker delivers it, then waits for more
    for _ in range(5):
        await asyncio.sleep(0)
    assert service.delivered == ["first"] and destination.workers == 1
    destination.put(delivery("last"))  # wakes it, in the turn the service closes
    await service.tasks.close(timeout=0.5)
    assert destination.workers == 0 and len(service.tasks) == 0
