"""A model session's planned end, the connection's child (:class:`~.connection.ModelConnection`
owns the socket and reopens it): the bridge renewing a session before the provider's cap (when:
:mod:`.upkeep`), the model saying it will close (Gemini's ``goAway``, a GPT-Live session
``expired``), or an error with which the protocol ends the session (Deepgram's every
``Error``). Each closes the current socket on purpose, and the connection's loop reads why
(:meth:`PlannedEnd.take`) to open the next session without calling it a failure.

A renewal and a ``goAway`` keep the caller's audio of the gap (:meth:`~.outbox.Outbox.hold`,
bounded): the next session opens only once the old socket closed (a dialect holds one
session's state, and a resumption handle or a ``priorCallId`` names a session that ended), so
what the caller says meanwhile goes up on the new session once it is ready, rather than being
lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from enum import Enum

import aiohttp

from ..tasks import TaskSet
from . import upkeep
from .outbox import Outbox
from .wire import ModelDialect, ModelError

log = logging.getLogger(__name__)


class Why(Enum):
    """Why the bridge closes the current socket itself."""

    RENEWAL = "renewal"
    """The provider's cap is near: the bridge renews the session (:meth:`PlannedEnd.renew`)."""
    GOAWAY = "goaway"
    """The model said it will close (Gemini's ``goAway``): a session's planned end."""
    ERROR = "error"
    """The model's error ended the session (the dialect's ``ends_session``)."""


class PlannedEnd:
    """See the module docstring."""

    def __init__(self, dialect: ModelDialect, out: Outbox, tasks: TaskSet, where: str) -> None:
        self.dialect = dialect
        self.out = out
        self._tasks = tasks
        self.where = where
        self.why: Why | None = None
        """Why the current socket is being closed by plan (``None``: it is not)."""
        self.model_errors = 0
        """Errors the model reported (not the known races)."""

    def close(self, ws: aiohttp.ClientWebSocketResponse, why: Why) -> None:
        """Close ``ws`` now (a task of the connection's), for ``why``."""
        self._begin(why)
        self._tasks.spawn(ws.close(), why.value)

    def error(self, event: ModelError, ws: aiohttp.ClientWebSocketResponse | None) -> bool:
        """The model reported ``event`` (not a known race) on the session open on ``ws``
        (``None``: none is): logged — the first at WARNING, the rest at INFO, so a server
        repeating itself floods no log (one of the account, the agent's end, always at
        WARNING) — and ``ws`` closed when the error ends the session or is the account's.
        ``True`` for the account's: the agent fails rather than reopen."""
        level = logging.INFO if self.model_errors and not event.account else logging.WARNING
        self.model_errors += 1
        log.log(level, "%s: the model reported %s: %s", self.where, event.code, event.message[:200])
        if ws is None or not (event.account or event.ends_session):
            return False
        self.close(ws, Why.ERROR)
        return event.account

    def _begin(self, why: Why) -> None:
        self.why = why
        if why is not Why.ERROR:
            self.out.hold()  # the caller's audio of the gap: for the next session

    async def renew(
        self, ws: aiohttp.ClientWebSocketResponse, cap: float, quiet: Callable[[], bool]
    ) -> None:
        """Close a session capped at ``cap`` seconds before the provider does, when it is due
        (:func:`~.upkeep.renewal_due`), with the dialect's goodbye: the loop opens a new one."""
        await upkeep.renewal_due(cap, quiet)
        log.info("%s: renewing the session before the provider's cap", self.where)
        self._begin(Why.RENEWAL)
        for message in self.dialect.closing():
            await ws.send_str(json.dumps(message))
        await ws.close()

    def take(self) -> Why | None:
        """Why the socket that just closed was closed by plan (``None``: it was not), forgotten
        for the next one."""
        why, self.why = self.why, None
        return why
