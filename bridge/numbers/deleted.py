"""The Meta numbers deleted lately, remembered in the numbers' store with the numbers.

Meta goes on sending a number's webhooks after the number is deleted here: the ``terminate``
of a call that was live then, a late status, and any webhook it failed to deliver before,
which it retries for up to 7 days (WhatsApp Cloud API, "Webhooks": a delivery not answered
``200`` is retried with decreasing frequency for up to 7 days). Each is acknowledged, or
forwarded to the worker still carrying its call (``front_door.py``), never refused: with API
tokens on, a worker with no Cloud API number answered them ``401`` and Meta retried them for
days. So the Meta id a number leaves (the number deleted, or its ``phoneNumberID`` or engine
changed) is written to the store in the same write as the change (:func:`edits`), and every
worker reads it with the numbers, one started since too.

Bounded twice: a deletion older than :data:`KEPT_FOR` is no longer taken (and is removed from
the store at the next deletion), and the store keeps the :data:`KEPT` latest (the oldest
removed by the deletion that passes it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import EngineKind
from .model import Number
from .store import Edit

KIND = "deleted"
"""The store's kind of these records, keyed by Meta's ``phone_number_id``."""
KEPT_FOR = 7 * 24 * 3600.0
"""Seconds a deletion is remembered: Meta's horizon for retrying a webhook (7 days)."""
KEPT = 1_000
"""Deletions the store keeps at most (the latest): a platform deleting more Meta numbers
within :data:`KEPT_FOR` forgets the oldest first."""


@dataclass(frozen=True)
class Deleted:
    """A Meta id a number had and left: Meta's webhooks naming it are that number's."""

    meta_id: str
    number_id: str
    engine: EngineKind
    """The number's engine kind (how its webhooks name their calls: ``WEBHOOK_CALLS``)."""
    at: float
    """When (Unix time: every worker's, after any restart)."""

    def to_record(self) -> dict[str, Any]:
        return {
            "metaID": self.meta_id,
            "numberID": self.number_id,
            "engine": self.engine.value,
            "deletedAt": self.at,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Deleted:
        return cls(
            meta_id=str(record["metaID"]),
            number_id=str(record["numberID"]),
            engine=EngineKind(record["engine"]),
            at=float(record["deletedAt"]),
        )

    def remembered(self, now: float | None = None) -> bool:
        """Whether Meta may still send its webhooks (within :data:`KEPT_FOR`)."""
        return (time.time() if now is None else now) - self.at < KEPT_FOR


def edits(known: Mapping[str, Deleted], before: Number | None, after: Number | None) -> list[Edit]:
    """The store's edits that go with a number changed from ``before`` to ``after``
    (``None``: deleted): when it leaves its Meta id, the id remembered, and the deletions
    past either bound (``known``: the store's, as the catalog read them) removed."""
    if (
        before is None
        or not before.meta_id
        or (after is not None and after.meta_id == before.meta_id)
    ):
        return []
    now = time.time()
    left = Deleted(before.meta_id, before.number_id, before.engine, now)
    others = [d for d in known.values() if d.meta_id != left.meta_id]
    old = [d for d in others if not d.remembered(now)]
    kept = sorted((d for d in others if d.remembered(now)), key=lambda d: d.at)
    over = kept[: max(0, len(kept) + 1 - KEPT)]
    forgotten = [Edit(KIND, d.meta_id, None) for d in old + over]
    return [Edit(KIND, left.meta_id, left.to_record()), *forgotten]
