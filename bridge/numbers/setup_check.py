"""Whether Meta's settings for a number agree with how the bridge runs it: its SRTP key
exchange (``srtp_key_exchange_protocol`` against the number's media) and its SIP servers
(switched on while the bridge signals on Graph). Compared with every health check (at start,
when a number's engine is built or rebuilt, then every few minutes), after the bridge changes
the settings and when Meta says they changed (``account_settings_update``); each new
difference is logged once at WARNING and shown on ``GET /numbers/{numberID}`` under
``health.setup`` (absent while there is none). The comparison Meta's webhook asks for runs in
a task of the owner's that the number's deletion or rebuild ends (:meth:`SetupCheck.forget`)."""

from __future__ import annotations

import logging

from ..engines import Engine, SettingsEngine
from ..errors import EngineError, NotFound
from ..tasks import TaskPerKey, TaskSet

log = logging.getLogger(__name__)


class SetupCheck:
    """The last comparison of every number whose provider settings the bridge can read."""

    def __init__(self, tasks: TaskSet) -> None:
        self._running = TaskPerKey[str](tasks, "setup")
        """Each number's comparison under way in a task (Meta said its settings changed)."""
        self.found: dict[str, list[str]] = {}
        self._of: dict[str, Engine] = {}
        """The engine each number was last compared on: a comparison still reading Meta as
        its number's engine was rebuilt (its mode changed) or retired is about an engine gone,
        and kept no result (it put the old mode's mismatch back over the new engine's)."""

    async def compare(self, number_id: str, engine: Engine | None) -> list[str] | None:
        """Compare one number now (``None``: nothing to compare, or Meta did not answer)."""
        if not isinstance(engine, SettingsEngine):
            return None
        self._of[number_id] = engine
        try:
            differences = await engine.calling_settings.mismatches()
        except NotFound:
            return None  # a SIP number without the Graph API: nothing to read them with
        except EngineError as exc:
            log.info("number %s: Meta's settings cannot be read now: %s", number_id, exc)
            return None
        if self._of.get(number_id) is not engine:
            return None  # rebuilt or deleted meanwhile (the new engine's comparison counts)
        before = self.found.get(number_id)
        self.found[number_id] = differences
        for difference in differences:
            if before is None or difference not in before:
                log.warning("number %s: %s", number_id, difference)
        if before and not differences:
            log.info("number %s: Meta's settings agree with the bridge again", number_id)
        return differences

    def start(self, number_id: str, engine: Engine | None) -> None:
        """Compare one number again in a task of the owner's (Meta said its settings changed):
        one at a time a number, the newest (one under way read Meta before the change)."""
        if not isinstance(engine, SettingsEngine):
            return
        self._running.start(number_id, self.compare(number_id, engine))

    def forget(self, number_id: str) -> None:
        """The number's engine retired (deleted, or rebuilt): its comparison under way ends,
        about an engine gone, rather than asking Meta on about a number that is not here."""
        self.found.pop(number_id, None)
        self._of.pop(number_id, None)
        self._running.cancel(number_id)
