"""The one webhook front door of every number (``/engine/webhook``).

Meta sends the webhooks of every number of an app to the app's one URL, and a platform points
all its apps at one bridge: the body's ``metadata.phone_number_id`` names the number, and that
number's engine verifies the signature with its own app secret. A number nobody here has gets
``200`` (Meta retries anything else) and one WARNING naming the id. A webhook about a call live
on a number's retired engine (the number rebuilt or deleted since) goes to that engine, on
either road, checked with the app secret it was built with or the number's now (rotated
meanwhile): the engine that carries a call hears Meta about it. A worker left with no Cloud API
number still takes, with no API token, a webhook naming a Meta number deleted lately
(remembered in the numbers' store, ``deleted.py``: on every worker, one started since too): a
cluster's router forwards it to the worker that carries the call, whose engine verifies it, and
the rest is acknowledged; any other webhook without a token there is ``401``. Engines whose
webhooks are not signed (ZuckZapGo) name their number with ``?number=<numberID>`` and need an
API token. One body may carry changes of several numbers (Meta batches them): each number
here named in it gets the body (:func:`also_for`) and takes its own changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from ..engines import WEBHOOK_CALLS, SignedWebhookEngine, WebhookCalls, WebhookEngine
from ..errors import BadRequest, Forbidden, NotFound, json_object
from .model import engine_key

if TYPE_CHECKING:
    from .switchboard import Switchboard

log = logging.getLogger(__name__)


def signs_webhooks(switchboard: Switchboard) -> bool:
    """Whether Meta's front door is open: a number here on the Cloud API, or a retired one
    still carrying calls (its number deleted: Meta's terminate must still reach it)."""
    engines = [*switchboard.engines.values(), *(r.engine for r in switchboard.retired)]
    return any(isinstance(e, SignedWebhookEngine) for e in engines)


def signed_door(switchboard: Switchboard, query: Mapping[str, str]) -> bool:
    """Whether a webhook with this query goes to an engine that checks its own signature
    (so it needs no API token): ``?number=`` naming one, or, without it, Meta's front door
    when any number is on the Cloud API. Else a body may still be Meta's (no token, only
    Meta's signature) when a Meta number deleted lately is remembered
    (:func:`body_may_tell`): :func:`names_deleted` reads it."""
    if "number" in query:
        return isinstance(switchboard.engines.get(query["number"]), SignedWebhookEngine)
    return signs_webhooks(switchboard)


def body_may_tell(switchboard: Switchboard, query: Mapping[str, str]) -> bool:
    """Whether a webhook :func:`signed_door` refuses may be Meta's all the same, by its body:
    Meta's door (no ``?number=``) while a Meta number deleted lately is remembered."""
    catalog = switchboard.catalog
    return "number" not in query and catalog is not None and catalog.remembers_deleted()


def names_deleted(switchboard: Switchboard, raw: bytes) -> bool:
    """Whether a Meta webhook names a number deleted lately (no number has its Meta id now,
    the store remembers one had: ``deleted.py``): Meta's, about a call another worker may
    still carry, or late. It goes through Meta's door with no API token: the router forwards
    it to the worker that carries the call, whose engine checks the signature; else it is
    acknowledged, as an unknown number's."""
    return _deleted(switchboard, raw) is not None


def webhook_engine(
    switchboard: Switchboard, raw: bytes, query: Mapping[str, str]
) -> WebhookEngine | None:
    """The engine a webhook is for: ``?number=`` names it; else, where numbers are on the
    Cloud API (or the body names one deleted here: :func:`names_deleted`), Meta's
    ``metadata.phone_number_id`` does — the engine that carries a call it
    names (a retired one: the number was rebuilt or deleted meanwhile), else the number's (a
    body that names none goes to the default number's engine, which refuses it if it is not
    its own); else the one engine that takes webhooks. ``None``: a Meta number nobody here
    has (acknowledged, logged once)."""
    if "number" in query:
        engine = switchboard.engines.get(query["number"])
        if not isinstance(engine, WebhookEngine):
            raise NotFound(f"no number {query['number'][:64]!r} takes webhooks here")
        return engine
    if signs_webhooks(switchboard) or names_deleted(switchboard, raw):
        # No token was asked for: only an engine that verifies the signature may take it.
        meta_id, phone = _meta_number(raw)
        catalog = switchboard.catalog
        number = catalog.by_meta_id(meta_id) if meta_id and catalog else None
        if number is None and phone and catalog:  # account_update names the phone
            number = catalog.by_phone(f"+{phone}")
            if number is None and catalog.default is not None and not catalog.default.phone:
                number = catalog.default  # the settings' number: its phone may be unknown here
        named = meta_id or phone or None
        carrier = _carrier(switchboard, raw, meta_id)
        if carrier is not None:
            return carrier
        engine = switchboard.engines.get(number.number_id) if number is not None else None
        if isinstance(engine, SignedWebhookEngine):
            return engine
        if named is None:
            signed = (
                switchboard.default
                if isinstance(switchboard.default, SignedWebhookEngine)
                else None
            )
            if signed is not None:
                return signed  # it answers a body it cannot verify with 401/400
            raise BadRequest(
                "a webhook that is not Meta's needs ?number=<numberID> and an API token",
                code="webhook_not_supported",
            )
        if named not in switchboard.unknown_meta_ids and len(switchboard.unknown_meta_ids) < 10_000:
            switchboard.unknown_meta_ids.add(named)
            log.warning(
                "webhook for Meta number %s, which no number here has: acknowledged, ignored",
                named,
            )
        return None
    takers = [e for e in switchboard.engines.values() if isinstance(e, WebhookEngine)]
    if len(takers) == 1:
        return takers[0]
    if isinstance(switchboard.default, WebhookEngine):
        return switchboard.default
    if not takers:
        raise BadRequest(
            f"the {switchboard.name} engine takes no webhooks", code="webhook_not_supported"
        )
    raise BadRequest(
        "several numbers take webhooks here: name one with ?number=<numberID>",
        code="webhook_not_supported",
    )


def also_for(
    switchboard: Switchboard, raw: bytes, query: Mapping[str, str], first: WebhookEngine
) -> list[SignedWebhookEngine]:
    """The engines of the other numbers here a Meta webhook names besides ``first``'s (the
    one :func:`webhook_engine` found): one POST may carry several numbers' changes, and each
    engine takes its own (``webhook.for_number``). None when ``?number=`` names the engine."""
    catalog = switchboard.catalog
    if "number" in query or catalog is None:
        return []
    found: list[SignedWebhookEngine] = []
    for meta_id in dict.fromkeys(_meta_ids(raw)):
        number = catalog.by_meta_id(meta_id)
        engine = switchboard.engines.get(number.number_id) if number is not None else None
        if isinstance(engine, SignedWebhookEngine) and engine is not first and engine not in found:
            found.append(engine)
    return found


def _carrier(switchboard: Switchboard, raw: bytes, meta_id: str) -> SignedWebhookEngine | None:
    """The retired engine of the Meta number (rebuilt or deleted while a call was live) that
    carries a call the webhook names: the call stays on it until it ends, its end from Meta
    too. Only its own calls' webhooks reach it: a new call is its number's engine's now (or
    nobody's)."""
    for retired in switchboard.retired.of_meta(meta_id):
        engine = retired.engine
        if isinstance(engine, SignedWebhookEngine) and engine.carries_call_in(raw):
            return engine
    return None


def number_of(switchboard: Switchboard, engine: WebhookEngine) -> str:
    """The id of the number whose engine ``engine`` is, or was (retired, while its calls
    last); empty: none here."""
    found = next((n for n, e in switchboard.engines.items() if e is engine), "")
    return found or switchboard.retired.number_of(engine)


def refused_signature(switchboard: Switchboard, raw: bytes, why: str, number: str = "") -> None:
    """A webhook the number's app secret does not verify (another app's secret, or forged):
    logged once per Meta number (a bounded few), since Meta or an attacker may repeat it
    (``number``: the number here it was refused for, else the one the body names first)."""
    meta_id, phone = _meta_number(raw)
    named = number or meta_id or phone or "?"
    if named in switchboard.refused_meta_ids or len(switchboard.refused_meta_ids) >= 1_000:
        return
    switchboard.refused_meta_ids.add(named)
    log.warning("webhook for Meta number %s refused: %s", named, why)


def webhook_calls(switchboard: Switchboard, raw: bytes, query: Mapping[str, str]) -> WebhookCalls:
    """The calls a webhook names, as engine keys (``numberID:id``: what the directory
    indexes), without verifying it. A Meta number retired here is read as its retired engine
    read it, first: a call of it may live on another worker, which carries it to its end —
    the number deleted since (it takes no new call), or its Meta id another number's now (the
    router goes where the directory finds the call, before the new number's keys). A number
    deleted before this worker started is read so too (``deleted.py``): its calls live
    elsewhere."""
    meta_id = "" if "number" in query else _meta_number(raw)[0]
    earlier = _former(switchboard, meta_id)
    if earlier is not None and not _taken(switchboard, meta_id):
        about, number_id = dataclasses.replace(earlier[1](raw), new_call=False), earlier[0]
    else:
        try:
            engine = webhook_engine(switchboard, raw, query)
        except (BadRequest, NotFound):
            engine = None
        about = engine.webhook_calls(raw) if engine is not None else WebhookCalls()
        number_id = number_of(switchboard, engine) if engine is not None else ""
    keys = [engine_key(number_id, i) for i in about.engine_call_ids]
    if earlier is not None and earlier[0] != number_id:
        old = [engine_key(earlier[0], i) for i in earlier[1](raw).engine_call_ids]
        keys = old + keys
    return dataclasses.replace(about, engine_call_ids=tuple(keys))


def _deleted(
    switchboard: Switchboard, raw: bytes
) -> tuple[str, Callable[[bytes], WebhookCalls]] | None:
    """The number a Meta webhook names that was deleted lately (no number has its Meta id
    now), and how its engine read the calls a webhook names."""
    meta_id, _ = _meta_number(raw)
    return None if _taken(switchboard, meta_id) else _former(switchboard, meta_id)


def _former(
    switchboard: Switchboard, meta_id: str
) -> tuple[str, Callable[[bytes], WebhookCalls]] | None:
    """The number Meta's ``meta_id`` was lately, remembered in the store (``deleted.py``),
    whether or not a number has it now, and how its kind of engine reads the calls a
    webhook names (with no engine built: it may have been deleted before this worker
    started)."""
    catalog = switchboard.catalog
    former = catalog.deleted_meta(meta_id) if catalog is not None else None
    read = WEBHOOK_CALLS.get(former.engine) if former is not None else None
    return (former.number_id, read) if former is not None and read is not None else None


def _taken(switchboard: Switchboard, meta_id: str) -> bool:
    """Whether a number here has Meta's ``meta_id`` now."""
    catalog = switchboard.catalog
    return catalog is not None and bool(meta_id) and catalog.by_meta_id(meta_id) is not None


def verify_subscription(switchboard: Switchboard, query: Mapping[str, str]) -> str:
    """Meta's ``GET`` check: answered by whichever number's verify token matches."""
    signed = [e for e in switchboard.engines.values() if isinstance(e, SignedWebhookEngine)]
    if not signed:
        raise NotFound(f"the {switchboard.name} engine has no webhook verification")
    for engine in signed:
        try:
            return engine.verify_subscription(query)
        except Forbidden:
            continue
    raise Forbidden("verify token matches no number's", code="verify_token_mismatch")


MANY_NUMBERS = 100
"""The most numbers one webhook body is handed to (a body from anyone may name thousands)."""
NAMED_LIMIT = 64
"""Characters kept of the number a webhook names (Meta's ids and phones are under 20 digits):
an unsigned body names it, and the front door remembers it to log once."""


def _meta_number(raw: bytes) -> tuple[str, str]:
    """Meta's ``phone_number_id`` named by a Cloud API webhook, or (``account_update``) the
    number's phone digits, each clipped to :data:`NAMED_LIMIT`; empty strings where it names
    neither (or is not Meta's shape)."""
    meta_id, phone = _named(raw)
    return meta_id[:NAMED_LIMIT], phone[:NAMED_LIMIT]


def _named(raw: bytes) -> tuple[str, str]:
    return next(_names(raw), ("", ""))


def _meta_ids(raw: bytes) -> list[str]:
    """Every ``phone_number_id`` a Meta webhook's changes name, in order (the first
    :data:`MANY_NUMBERS`, each clipped as :func:`_meta_number` clips it)."""
    ids = (meta_id[:NAMED_LIMIT] for meta_id, _phone in _names(raw) if meta_id)
    return list(dict.fromkeys(ids))[:MANY_NUMBERS]


def _names(raw: bytes) -> Iterator[tuple[str, str]]:
    """Each change's number: its Meta ``phone_number_id`` or, for ``account_update``, its
    phone digits (``("", phone)``)."""
    try:
        body = json_object(raw)
    except BadRequest:
        return
    if body.get("object") != "whatsapp_business_account":
        return
    # Read before any signature is checked: a shape from anyone (a truthy ``entry`` that is
    # no list was a 500 with a traceback) finds no number, and the answer is the 401.
    entries = body.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        found = entry.get("changes") if isinstance(entry, dict) else None
        for change in found if isinstance(found, list) else ():
            value = change.get("value") if isinstance(change, dict) else None
            metadata = value.get("metadata") if isinstance(value, dict) else None
            if isinstance(metadata, dict) and metadata.get("phone_number_id"):
                yield str(metadata["phone_number_id"]), ""
                continue
            if not isinstance(value, dict):
                continue
            # Meta's webhooks about a number, not a call, name it otherwise: account_update
            # its phone, account_settings_update its id inside phone_number_settings.
            settings = value.get("phone_number_settings")
            if isinstance(settings, dict) and settings.get("phone_number_id"):
                yield str(settings["phone_number_id"]), ""
            elif isinstance(value.get("phone_number"), str | int):
                yield "", str(value["phone_number"]).lstrip("+")
