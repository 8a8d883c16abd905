"""``Switchboard``: the engine the calls see — one engine per number behind it.

Each number has an engine of its own (its own Graph token and app secret, its own ZuckZapGo
or WADial connection and media sockets, its own simulator), built from the deployment's
settings with the number's engine block in them (:meth:`Number.settings`). The switchboard
follows the catalog: a number created starts its engine, a changed one gets a new engine, a
deleted one takes no new call and its engine closes once its live calls have ended.

What comes in is routed to the right engine:

- every engine's events reach the manager on one queue, each tagged with its ``number_id``
  (the default number's engine *is* that queue's writer: a single-number deployment runs
  exactly as before, with no task in between);
- a Cloud API webhook goes to the number Meta names in ``metadata.phone_number_id`` and is
  verified with that number's app secret (a number nobody knows: ``200`` and one WARNING,
  so Meta stops retrying); other engines' webhooks name their number with ``?number=``;
- a call's control (answer, hang up, media) goes to the engine of the call's number.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from ..config import Settings
from ..engines import (
    ENGINES,
    CallsOver,
    EndsBeforeArrival,
    Engine,
    EngineEvent,
    EngineHealth,
    LegCodecEngine,
    MediaChannel,
    PolledEngine,
    RemoteCall,
    SignedWebhookEngine,
    SipLineEngine,
)
from ..engines.base import emit
from ..errors import NotFound
from ..metrics import Metrics
from ..sip import Doors
from ..tasks import TaskPerKey, TaskSet
from .health import Checks
from .health import check as check_number
from .model import DEFAULT_NUMBER, Number, engine_key
from .retired import RetiredEngines
from .setup_check import SetupCheck
from .tenants import Tenant

if TYPE_CHECKING:
    from .catalog import Catalog

log = logging.getLogger(__name__)

EnginesInUse = Callable[[], list[Engine]]
"""The engines live calls here run on (a retired engine closes when none does)."""


class Switchboard:
    """Engines by number; see the module docstring."""

    def __init__(
        self,
        default: Engine,
        catalog: Catalog | None = None,
        settings: Settings | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.default = default
        self.catalog = catalog
        self.settings = settings
        self.http = http
        self.name = default.name
        self.events: asyncio.Queue[EngineEvent] = default.events
        self.engines: dict[str, Engine] = {DEFAULT_NUMBER: default}
        self._built: dict[str, Number] = {}
        self.retired = RetiredEngines(
            lambda: self.engines_in_use(),
            lambda number_id: number_id in self.engines,
            lambda: self.metrics,
        )
        self._owner: dict[str, str] = {}  # engine call id -> number id (calls of other numbers)
        self._tasks = TaskSet("switchboard")
        self._forwarders = TaskPerKey[str](self._tasks, "events")
        self.unknown_meta_ids: set[str] = set()
        """Meta numbers whose webhooks came here though no number has them (logged once)."""
        self.refused_meta_ids: set[str] = set()
        """Meta numbers whose webhooks failed their signature check (logged once each)."""
        self.engines_in_use: EnginesInUse = list
        self._changing = asyncio.Lock()
        self.metrics: Metrics | None = None
        self.checks = Checks(self._tasks)  # each number's health (numbers/health.py)
        self._check_built = False  # an engine built is checked at once (not at start: below)
        self.setup = SetupCheck(self._tasks)  # Meta's settings against each number's mode
        self.sip_doors = default.doors if isinstance(default, SipLineEngine) else Doors()
        """The worker's one SIP listener per address, every SIP number's engine in it."""
        self.calls_over: CallsOver | None = None
        """Where every number's engine tells the other workers of a call its provider ended
        before the call came (the call directory, given where the app is built)."""

    # -- the Engine protocol's face, for the default number and for what names no number
    @property
    def stats(self) -> Any:
        return self.default.stats

    @property
    def media_before_answer(self) -> bool:
        return self.default.media_before_answer

    @property
    def up(self) -> bool:
        return self.default.up

    async def start(self) -> None:
        """The numbers' engines (the default one is started by its owner)."""
        self._follow_legs(DEFAULT_NUMBER, self.default)
        if self.catalog is not None:
            self.catalog.follow(self._catalog_changed)
            await self.reconcile()
            # The engines built from now on are checked as they are; those of the start, one
            # after another by the health loop's first round (hundreds of numbers must not
            # ask Meta all at once).
            self._check_built = True
            self._tasks.spawn(self.retired.close_forever(), "retire-engines")
            rounds = self.checks.forever(lambda: self.engines, self.check_health)
            self._tasks.spawn(rounds, "number-health")

    async def close(self) -> None:
        await self._tasks.close()
        for number_id, engine in list(self.engines.items()):
            if number_id != DEFAULT_NUMBER:
                await engine.close()
        await self.retired.close()

    async def health(self) -> EngineHealth:
        return await self.default.health()

    def _catalog_changed(self) -> None:
        self._tasks.spawn(self.reconcile(), "reconcile")

    # -- engines follow the catalog
    async def reconcile(self) -> None:
        """Start the engines of new numbers, rebuild changed ones, retire deleted ones."""
        if self.catalog is None or self.settings is None:
            return
        async with self._changing:
            stored = self.catalog.numbers.get(DEFAULT_NUMBER)
            if stored is not None and isinstance(self.default, SipLineEngine):
                # The settings' number's password as the catalog has it: BRIDGE_SIP_PASSWORD
                # when set, else Meta's stored by ``sip/enable`` (defined.py), in use on every
                # worker at its next reload.
                self.default.use_password(stored.secrets.get("sipPassword", ""))
            wanted = {
                n.number_id: n
                for n in self.catalog.numbers.values()
                if n.number_id != DEFAULT_NUMBER
            }
            retiring = []
            for number_id in list(self.engines):
                if number_id == DEFAULT_NUMBER:
                    continue
                number = wanted.get(number_id)
                if number is None or _engine_changed(self._built[number_id], number):
                    retiring.append(self._retire(number_id))
            for number_id, number in wanted.items():
                if number_id in self.engines:
                    self._built[number_id] = number
                    continue
                try:
                    engine = ENGINES[number.engine](number.settings(self.settings), self.http)
                    if isinstance(engine, SipLineEngine):
                        engine.doors = self.sip_doors
                        engine.password_required = True  # 403 until /sip/enable
                except Exception as exc:  # a bad stored record must not stop the others
                    log.warning("number %s: its engine cannot be built: %s", number_id, exc)
                    continue
                try:
                    await engine.start()
                except Exception as exc:  # a SIP certificate gone, a port taken …
                    log.warning("number %s: its engine cannot start: %s", number_id, exc)
                    await engine.close()
                    continue
                self.engines[number_id] = engine
                self._built[number_id] = number
                self._follow_legs(number_id, engine)
                if self._check_built:  # a new or changed number: not unchecked until the round
                    self.checks.start(number_id, self.check_health(number_id))
                self._forwarders.start(number_id, self._forward(number_id, engine))
                log.info(
                    "number %s (%s, %s): engine started", number_id, number.phone, number.engine
                )
            for engine in retiring:  # after the new ones joined: a phone kept is never unserved
                if isinstance(engine, SipLineEngine):
                    engine.take_no_new_calls()

    def _follow_legs(self, number_id: str, engine: Engine) -> None:
        """A ``LegCodecEngine`` answers Meta's G.711 in kind when the number's inbound calls
        go to a PBX phone of that codec (the trunk that answers them, read at each call); an
        ``EndsBeforeArrival`` finds the calls ended before they came in :attr:`calls_over`."""
        if isinstance(engine, LegCodecEngine):
            engine.other_leg_codecs = lambda: self._answering_codecs(number_id)
        if isinstance(engine, EndsBeforeArrival):
            engine.calls_over = lambda: number_calls_over(number_id, self.calls_over)

    def _answering_codecs(self, number_id: str) -> tuple[str, ...]:
        if self.catalog is None:
            return ()
        trunk = self.catalog.answering_trunk(number_id, self.tenant_of(number_id))
        return trunk.codecs if trunk is not None else ()

    # -- health (numbers/health.py)
    def health_of(self, number_id: str) -> dict[str, Any]:
        health = self.checks.shown(number_id)
        setup = self.setup.found.get(number_id)  # shown while Meta's settings differ only
        return {**health, "setup": setup} if setup else health

    async def compare_setup(self, number_id: str) -> None:
        """Meta's settings against the number's mode, now (``setup_check.py``)."""
        await self.setup.compare(number_id, self.engines.get(number_id))

    async def check_health(self, number_id: str) -> None:
        """Check one number now — its health, then Meta's settings against its mode
        (:meth:`compare_setup`) — at start, once its engine is built (or rebuilt) here and every
        ``health.INTERVAL``; a change is logged once (WARNING when it goes bad)."""
        number = self.catalog.number(number_id) if self.catalog is not None else None
        if number is None:
            return
        engine = self.engines.get(number_id)
        result = await check_number(engine, number, self.http)
        if self.engines.get(number_id) is not engine:
            # Deleted (or rebuilt) while it was checked: the answer is about an engine that is
            # gone, and a deleted number's series and health must not come back with it.
            return
        self.checks.record(number, result, self.metrics)
        await self.compare_setup(number_id)

    async def checked(self, number_id: str) -> None:
        """The number checked, for an answer that shows its health: the check its engine's
        build started, awaited, else one now if it has none (never two at once)."""
        await self.checks.done(number_id, lambda: self.check_health(number_id))

    def _retire(self, number_id: str) -> Engine:
        self.checks.forget(number_id)
        self.setup.forget(number_id)
        engine = self.engines.pop(number_id)
        built = self._built.pop(number_id, None)
        # Its calls here go on, on it (their events too, Meta's webhooks about them: the front
        # door finds it by its Meta id) until they end: then it closes.
        events = self._forwarders.pop(number_id)
        self.retired.add(number_id, engine, events, built.meta_id if built is not None else "")
        if isinstance(engine, SignedWebhookEngine):  # Meta signs with the app secret it has now
            engine.also_signed_with(lambda: self._app_secret(number_id))
        log.info("number %s: no new calls; its engine closes when its calls have ended", number_id)
        return engine

    def _app_secret(self, number_id: str) -> str:
        """The app secret of the number as it is now (empty: deleted, or not on Meta)."""
        number = self._built.get(number_id)
        return number.app_secret if number is not None else ""

    async def _forward(self, number_id: str, engine: Engine) -> None:
        # Events of the number's engine onto the manager's one queue, tagged.
        while True:
            event = await engine.events.get()  # (whose call it is: bound by the manager)
            if event.data.get("type") == "number.settings_changed":  # Meta's, compared again
                self.setup.start(number_id, self.engines.get(number_id))
            emit(self.events, dataclasses.replace(event, number_id=number_id))

    # -- which engine
    def engine(self, number_id: str) -> Engine:
        """The engine of a number that takes new calls (404 otherwise)."""
        engine = self.engines.get(number_id or DEFAULT_NUMBER)
        if engine is None:
            raise NotFound(f"no number {number_id[:64]!r} takes calls here", code="unknown_number")
        return engine

    def of(self, number_id: str) -> Engine:
        """The engine a call of ``number_id`` runs on (a retired number's too, while its
        calls last)."""
        engine = self.engines.get(number_id or DEFAULT_NUMBER)
        if engine is not None:
            return engine
        retired = self.retired.of(number_id)
        return retired if retired is not None else self.default

    def _by_call(self, engine_call_id: str) -> tuple[Engine, str]:
        """The engine of an engine key (``numberID:id``, or a bare id: the owner map, else
        the default number) and the engine's own id."""
        number_id, sep, raw = engine_call_id.partition(":")
        if sep and (number_id in self.engines or self.retired.of(number_id) is not None):
            return self.of(number_id), raw
        return self.of(self._owner.get(engine_call_id, DEFAULT_NUMBER)), engine_call_id

    def bind(self, engine_call_id: str, number_id: str) -> None:
        """Remember whose call this is (a call adopted or placed here)."""
        if number_id and number_id != DEFAULT_NUMBER:
            self._owner[engine_call_id] = number_id

    def forget(self, engine_call_id: str) -> None:
        self._owner.pop(engine_call_id, None)

    # -- call control by engine call id (the Engine protocol)
    async def dial(self, phone: str, *, call_id: str = "") -> str:
        return await self.default.dial(phone, call_id=call_id)

    async def dial_from(
        self, number_id: str, phone: str, call_id: str = "", other_leg: tuple[str, ...] = ()
    ) -> str:
        """``other_leg``: the codecs of the leg it is placed for (a PBX phone's)."""
        engine = self.engine(number_id)
        more = {"other_leg": other_leg} if isinstance(engine, LegCodecEngine) else {}
        engine_call_id = await engine.dial(phone, call_id=call_id, **more)
        self.bind(engine_call_id, number_id)
        return engine_call_id

    async def answer(self, engine_call_id: str) -> None:
        engine, raw = self._by_call(engine_call_id)
        await engine.answer(raw)

    async def hangup(self, engine_call_id: str) -> None:
        engine, raw = self._by_call(engine_call_id)
        await engine.hangup(raw)

    async def open_media(self, engine_call_id: str) -> MediaChannel:
        engine, raw = self._by_call(engine_call_id)
        return await engine.open_media(raw)

    def hangup_later(self, engine_call_id: str, why: str) -> None:
        engine, raw = self._by_call(engine_call_id)
        engine.hangup_later(raw, why)

    async def startup_calls(self) -> list[RemoteCall]:
        """Every engine's first listing; the ids are engine keys (``numberID:id``)."""
        listed = list(await self.default.startup_calls())
        for number_id, engine in list(self.engines.items()):
            if number_id == DEFAULT_NUMBER:
                continue
            for remote in await engine.startup_calls():
                listed.append(dataclasses.replace(remote, id=engine_key(number_id, remote.id)))
        return listed

    def tenant_of(self, number_id: str) -> str:
        """The tenant that owns a number (empty: the service's own)."""
        number = self.catalog.number(number_id) if self.catalog is not None else None
        return number.tenant_id if number is not None else ""

    def tenant(self, tenant_id: str) -> Tenant | None:
        """A tenant's record (its ``maxCalls``), when there is one."""
        if not tenant_id or self.catalog is None:
            return None
        return self.catalog.tenants.get(tenant_id)

    def polled(self, number_id: str) -> bool:
        """Whether the number's engine is polled by every worker (one must claim a call)."""
        return isinstance(self.of(number_id), PolledEngine)


@dataclasses.dataclass(frozen=True)
class NumberCallsOver:
    """The app's ``CallsOver`` as one number's engine sees it: its call ids made unique across
    numbers (:func:`engine_key`, as the directory indexes its calls), so no number's webhooks
    end another number's calls."""

    number_id: str
    shared: CallsOver

    async def mark_over(self, engine_call_id: str) -> None:
        await self.shared.mark_over(engine_key(self.number_id, engine_call_id))

    async def marked_over(self, engine_call_id: str) -> bool:
        return await self.shared.marked_over(engine_key(self.number_id, engine_call_id))


def number_calls_over(number_id: str, shared: CallsOver | None) -> CallsOver | None:
    return None if shared is None else NumberCallsOver(number_id, shared)


def _engine_changed(built: Number, now: Number) -> bool:
    return built.engine_inputs() != now.engine_inputs()
