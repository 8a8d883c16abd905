"""Routes: what happens to an inbound call on a number — ring agents, voicemail, a prompt, a
hang-up — as an ordered list of steps, with opening hours. This module is the routes' wire
format (parse, check, show); :mod:`.runner` runs them on a call.

``{"name", "numbers": [numberID…] | "default", "steps": [step…], "hours"?}`` where a step is one
of ``ring {group | agents, strategy, timeoutS}``, ``sip {uri, trunkID?, timeoutS?, headers?}``
(a SIP target rung through a trunk), ``agent {provider, url?, session?, bridgeTools?}`` (the
body of ``POST /call/{callID}/agents``, without a key: a route keeps no secret), ``voicemail
{greeting?, maxS?}``, ``play {assetId}``, ``hangup {}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..config import AGENT_PROVIDERS
from ..errors import BadRequest
from ..numbers.trunks import parse_headers, parse_uri
from .hours import Hours, hours_json, parse_hours
from .tokens import check_agent_id

STRATEGIES = ("simultaneous", "sequential", "longest-idle")
MAX_STEPS = 16
MAX_NUMBERS = 1000
DEFAULT_RING_S = 30.0
DEFAULT_VOICEMAIL_S = 60.0
PROVIDERS = AGENT_PROVIDERS
"""The model agents an ``agent`` step may start (``agents/service.py`` checks the rest)."""
BRIDGE_TOOLS = ("hangup", "transfer", "dtmf", "hold")


@dataclass(frozen=True)
class Step:
    kind: str
    """``ring``, ``sip``, ``agent``, ``voicemail``, ``play`` or ``hangup``."""
    body: dict[str, Any]

    @property
    def timeout_s(self) -> float:
        return float(self.body.get("timeoutS", DEFAULT_RING_S))


@dataclass(frozen=True)
class Route:
    route_id: str
    tenant_id: str | None
    name: str
    numbers: tuple[str, ...] | None
    """``None``: the default route of its tenant (every number without a route of its own)."""
    steps: tuple[Step, ...]
    hours: Hours | None
    closed: tuple[Step, ...]
    raw: dict[str, Any]

    def open_at(self, epoch: float) -> bool:
        """Whether a call at ``epoch`` runs :attr:`steps` (else :attr:`closed`)."""
        return self.hours is None or self.hours.open_at(epoch)

    def view(self) -> dict[str, Any]:
        return {"routeID": self.route_id, "tenantID": self.tenant_id, **self.raw}


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"field {field!r} must be a number from {lo:g} to {hi:g}")
    return float(value)


def _asset(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise BadRequest(f"field {field!r} must be an audio asset id")
    return value


def parse_step(step: Any, where: str) -> Step:
    if not isinstance(step, dict) or len(step) != 1:
        raise BadRequest(f"field {where!r} must be an object with one step kind", code="bad_step")
    kind, body = next(iter(step.items()))
    if not isinstance(body, dict):
        raise BadRequest(f"field '{where}.{kind}' must be an object", code="bad_step")
    if kind == "ring":
        return Step(kind, _ring(body, f"{where}.ring"))
    if kind == "sip":
        return Step(kind, _sip(body, f"{where}.sip"))
    if kind == "agent":
        return Step(kind, _agent(body, f"{where}.agent"))
    if kind == "voicemail":
        out: dict[str, Any] = {
            "maxS": _number(
                body.get("maxS", DEFAULT_VOICEMAIL_S), f"{where}.voicemail.maxS", 1, 600
            )
        }
        if body.get("greeting") is not None:
            out["greeting"] = _asset(body["greeting"], f"{where}.voicemail.greeting")
        return Step(kind, out)
    if kind == "play":
        return Step(kind, {"assetId": _asset(body.get("assetId"), f"{where}.play.assetId")})
    if kind == "hangup":
        return Step(kind, {})
    raise BadRequest(f"field {where!r}: unknown step {str(kind)[:30]!r}", code="bad_step")


def _ring(body: dict[str, Any], where: str) -> dict[str, Any]:
    group, agents = body.get("group"), body.get("agents")
    if (group is None) == (agents is None):
        raise BadRequest(f"field {where!r} takes one of 'group' or 'agents'", code="bad_step")
    out: dict[str, Any] = {}
    if group is not None:
        out["group"] = check_agent_id(group, f"{where}.group")
    else:
        if not isinstance(agents, list) or not 0 < len(agents) <= 100:
            raise BadRequest(f"field '{where}.agents' must list 1 to 100 agent ids")
        out["agents"] = list(dict.fromkeys(check_agent_id(a, f"{where}.agents") for a in agents))
    strategy = body.get("strategy", "simultaneous")
    if strategy not in STRATEGIES:
        raise BadRequest(f"field '{where}.strategy' must be one of {', '.join(STRATEGIES)}")
    out["strategy"] = strategy
    out["timeoutS"] = _number(body.get("timeoutS", DEFAULT_RING_S), f"{where}.timeoutS", 0.1, 3600)
    return out


def _sip(body: dict[str, Any], where: str) -> dict[str, Any]:
    """A SIP target (its trunk is checked against the catalog by the API, and again when the
    step runs: ``TrunkService.add_participant``)."""
    out: dict[str, Any] = {"uri": parse_uri(body.get("uri"), f"{where}.uri")}
    trunk = body.get("trunkID")
    if trunk is not None:
        if not isinstance(trunk, str) or not 0 < len(trunk) <= 64:
            raise BadRequest(f"field '{where}.trunkID' must be a trunk id")
        out["trunkID"] = trunk
    if body.get("headers") is not None:
        out["headers"] = dict(parse_headers(body["headers"], f"{where}.headers"))
    out["timeoutS"] = _number(body.get("timeoutS", DEFAULT_RING_S), f"{where}.timeoutS", 1, 600)
    return out


def _agent(body: dict[str, Any], where: str) -> dict[str, Any]:
    """A model agent's request, as ``POST /call/{callID}/agents`` takes it, minus ``apiKey``:
    routes are shown to whoever reads them and kept unsealed, so the agent uses the configured
    key (``BRIDGE_AGENT_<PROVIDER>_API_KEY``). Its URL and session are checked when the route
    is made by the check a call's agent goes through (``AgentService.check``)."""
    if "apiKey" in body:
        raise BadRequest(
            f"field '{where}.apiKey': a route keeps no model key; the configured "
            "BRIDGE_AGENT_<PROVIDER>_API_KEY is used",
            code="bad_step",
        )
    unknown = set(body) - {"provider", "url", "session", "bridgeTools"}
    if unknown:
        raise BadRequest(f"field '{where}.{sorted(unknown)[0][:40]}' is not known", code="bad_step")
    if body.get("provider") not in PROVIDERS:
        raise BadRequest(f"field '{where}.provider' must be one of {', '.join(PROVIDERS)}")
    url = body.get("url")  # left out: the provider's default, where it has one (checked there)
    if "url" in body and (not isinstance(url, str) or not 0 < len(url) <= 2048):
        raise BadRequest(f"field '{where}.url' must be a URL of at most 2048 characters")
    if not isinstance(body.get("session", {}), dict):
        raise BadRequest(f"field '{where}.session' must be an object")
    tools = body.get("bridgeTools", [])
    if not isinstance(tools, list) or any(t not in BRIDGE_TOOLS for t in tools):
        raise BadRequest(f"field '{where}.bridgeTools' lists only {', '.join(BRIDGE_TOOLS)}")
    return dict(body)


def _steps(value: Any, where: str) -> tuple[Step, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_STEPS:
        raise BadRequest(f"field {where!r} must list 1 to {MAX_STEPS} steps", code="bad_step")
    return tuple(parse_step(s, f"{where}[{i}]") for i, s in enumerate(value))


def parse_route(body: dict[str, Any], tenant_id: str | None, route_id: str | None = None) -> Route:
    """A route from ``POST /routes``'s body (numbers are checked by the caller)."""
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        raise BadRequest("field 'name' must be 1-100 characters")
    numbers = body.get("numbers")
    if numbers == "default":
        listed: tuple[str, ...] | None = None
    elif (
        isinstance(numbers, list)
        and 0 < len(numbers) <= MAX_NUMBERS
        and all(isinstance(n, str) and 0 < len(n) <= 64 for n in numbers)
    ):
        listed = tuple(dict.fromkeys(numbers))
    else:
        raise BadRequest("field 'numbers' must list number ids or be \"default\"")
    steps = _steps(body.get("steps"), "steps")
    hours: Hours | None = None
    closed: tuple[Step, ...] = ()
    raw = {"name": name, "numbers": numbers, "steps": [{s.kind: s.body} for s in steps]}
    if body.get("hours") is not None:
        hours = parse_hours(body["hours"])
        closed = _steps(body["hours"].get("closed", [{"hangup": {}}]), "hours.closed")
        raw["hours"] = {**hours_json(body["hours"]), "closed": [{s.kind: s.body} for s in closed]}
    return Route(route_id or uuid.uuid4().hex, tenant_id, name, listed, steps, hours, closed, raw)


def route_from_stored(stored: dict[str, Any]) -> Route:
    return parse_route(stored["body"], stored.get("tenantID"), stored["routeID"])


def stored(route: Route) -> dict[str, Any]:
    return {"routeID": route.route_id, "tenantID": route.tenant_id, "body": route.raw}


def pick(routes: list[Route], tenant_id: str | None, number_id: str) -> Route | None:
    """The route of a call on ``number_id`` of ``tenant_id``: one listing the number first,
    then the tenant's default one (the service's routes apply to every tenant's calls)."""
    mine = [r for r in routes if r.tenant_id in (tenant_id, None)]
    mine.sort(key=lambda r: (r.tenant_id is None, r.route_id))  # the tenant's own first
    for route in mine:
        if route.numbers is not None and number_id in route.numbers:
            return route
    return next((r for r in mine if r.numbers is None), None)
