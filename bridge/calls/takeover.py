"""A moved call's take-over in the directory, as the worker that carries it on makes it: taken
by compare-and-set (only while the old owner's offer stands, or a dead worker's record still
names it), given back when the adoption fails after it (``adopt_call``, :mod:`.handover`).
What the directory's steps are is ``cluster/redis_owner.py``'s; this is when the new owner
takes them, and what it does when Redis's answer is lost.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..errors import BridgeError, DirectoryUnavailable, NotOwner, Undecided
from .model import Call

log = logging.getLogger(__name__)


class Claim(Protocol):
    """Who carries a call, by compare-and-set in the directory (``Directory``'s)."""

    async def take_over(self, call: Call, previous_owner: str, token: str = "") -> None: ...
    async def give_back(self, call: Call, previous_owner: str, token: str) -> bool: ...


async def take(claim: Claim, call: Call, previous: str, token: str, otherwise: str) -> None:
    """Take the call over in the directory; a take-over whose answer was lost (Redis's reply
    timed out, or Redis refused it) is this worker's if the directory says so once the old
    owner has let go: the adoption goes on (letting go of it too left the call to nobody).
    One the directory will not say of (:func:`given_back` ``None``) raises
    :class:`~bridge.errors.Undecided`; ``otherwise`` is what the caller then does. One never
    sent (the directory known away before it) is not this worker's: it is let go of."""
    try:
        await claim.take_over(call, previous, token)
    except NotOwner:
        raise
    except Exception as exc:
        if isinstance(exc, DirectoryUnavailable) and not exc.sent:
            raise  # never sent (the directory known away): not taken here, nothing to give back
        back = await given_back(claim, call, previous, token, otherwise)
        if back is None:
            raise Undecided(str(exc) or type(exc).__name__) from exc
        if back:
            raise
        log.info(
            "call %s: its take-over's answer was lost, and the directory names this worker: "
            "carried on here",
            call.id,
            extra={"call_id": call.id},
        )


async def given_back(
    claim: Claim, call: Call, previous: str, token: str, otherwise: str
) -> bool | None:
    """Whether a call whose adoption failed is not this worker's (given back to the old owner
    while it waits, or never taken): it is let go of. ``False``: the old owner has let go of
    it since it was taken here, and it stays (letting go of it too left it to nobody).
    ``None``: the directory did not answer (the give-back is tried again while Redis comes
    back, a few seconds: ``Directory.give_back``), so nobody can tell whether the old owner
    still carries the call; said once at WARNING with ``otherwise``, what the caller does."""
    try:
        return await claim.give_back(call, previous, token)
    except BridgeError as exc:
        log.warning(
            "call %s: not given back to worker %s in the directory (%s); %s",
            call.id,
            previous or "?",
            exc.message,
            otherwise,
            extra={"call_id": call.id},
        )
        return None
