"""Keeping each trunk in touch: an ``OPTIONS`` keep-alive every ``keepalive`` seconds
(RFC 3261 §11) and, when the trunk says ``"register": true``, a ``REGISTER`` as an extension
(§10), refreshed before it expires.

One task a trunk, reconciled on every catalog reload (:meth:`Upkeep.reconcile`); what each saw
is :meth:`Upkeep.state` (``GET /trunks/{id}``) and the metrics ``bridge_trunk_up`` and
``bridge_trunk_registered``; a keep-alive that fails (no answer, or a 5xx) is said at WARNING
once while it lasts, its end at INFO, and a REGISTER refused at WARNING when its reason
changes, the registration's return at INFO with how many were refused and for how long. A
``401``/``407`` is answered with the trunk's credentials, once a request, a ``423 Interval Too
Brief`` by asking again for its ``Min-Expires`` (§10.2.8), kept for the refreshes. A
registration is refreshed at 80 % of what the registrar granted, retried every :data:`RETRY`
seconds while it fails, and removed (``Expires: 0``) when the trunk goes or the bridge stops.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from ..logs import Repeats
from ..numbers.catalog import Catalog
from ..numbers.trunks import Trunk
from ..sip import Request, Response, UserAgent
from ..sip.challenged import exchange
from ..sip.headers import Uri, Via, new_branch, new_tag
from ..sip.transaction import ask
from ..tasks import TaskPerKey, TaskSet

log = logging.getLogger(__name__)

OPTIONS_EVERY = 30.0
"""Seconds between looks at a trunk whose keep-alive is off (``keepalive``: 0)."""
EXPIRES = 300
"""Seconds a registration is asked for."""
RETRY = 30.0
"""Seconds before a failed registration is tried again."""


class Upkeep:
    """Every trunk's keep-alive and registration (see the module docstring)."""

    def __init__(self, catalog: Catalog, registry: CollectorRegistry | None) -> None:
        self.catalog = catalog
        self.ua: UserAgent | None = None
        """The trunk user agent the requests go out on, once it listens (:meth:`start`)."""
        self._owner = TaskSet("trunk-upkeep")
        self._keeping = TaskPerKey[str](self._owner, "upkeep")
        """Each trunk's :meth:`_keep`, by id."""
        self._kept: dict[str, tuple[Any, ...]] = {}
        """What each trunk's task was started for (:func:`_key`), by id: a change starts it anew."""
        self._state: dict[str, dict[str, Any]] = {}
        self._down = Repeats()
        """Trunks whose keep-alive fails, by id (said once while it lasts, its end at INFO)."""
        self._refused = Repeats()
        """Trunks whose REGISTERs are refused, by id (its end said at INFO)."""
        self.up = Gauge("bridge_trunk_up", "trunk answers OPTIONS", ["trunk"], registry=registry)
        self.registered = Gauge(
            "bridge_trunk_registered", "trunk registration in force", ["trunk"], registry=registry
        )

    def state(self, trunk_id: str) -> dict[str, Any]:
        """What ``GET /trunks/{id}`` shows beside the record (keep-alive, registration)."""
        seen = self._state.get(trunk_id, {})
        return {"options": seen.get("options"), "registration": seen.get("registration")}

    def start(self, ua: UserAgent) -> None:
        """Keep the catalog's trunks in touch through ``ua``, following the catalog's
        reloads."""
        self.ua = ua
        self.catalog.follow(self.reconcile)
        self.reconcile()

    def reconcile(self) -> None:
        """Start a task for each trunk (anew when its target or credentials changed), stop the
        tasks of trunks that are gone."""
        trunks = self.catalog.trunks
        for trunk_id, kept in list(self._kept.items()):
            trunk = trunks.get(trunk_id)
            if trunk is None or _key(trunk) != kept:
                del self._kept[trunk_id]
                self._keeping.cancel(trunk_id)
                self._state.pop(trunk_id, None)
                self._down.ended(trunk_id)
                self._refused.ended(trunk_id)
                for gauge in (self.up, self.registered):
                    try:
                        gauge.remove(trunk_id)
                    except KeyError:
                        pass
        for trunk_id, trunk in trunks.items():
            if trunk_id not in self._kept and not self._owner.closed:
                self._kept[trunk_id] = _key(trunk)
                self._keeping.start(trunk_id, self._keep(trunk))

    async def close(self) -> None:
        await self._owner.close(timeout=3.0)
        self._kept.clear()

    async def _keep(self, trunk: Trunk) -> None:
        state = self._state.setdefault(trunk.trunk_id, {})
        next_options = next_register = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_options and trunk.keepalive:
                    await self._options(trunk, state)
                    next_options = now + trunk.keepalive
                elif not trunk.keepalive:
                    next_options = now + OPTIONS_EVERY
                if trunk.register and now >= next_register:
                    next_register = now + await self._register(trunk, state, EXPIRES)
                wake = min(next_options, next_register if trunk.register else next_options)
                await asyncio.sleep(max(0.05, wake - time.monotonic()))
        finally:
            if trunk.register and (state.get("registration") or {}).get("state") == "registered":
                await asyncio.shield(self._register(trunk, {}, 0))  # unregister, best effort

    async def _options(self, trunk: Trunk, state: dict[str, Any]) -> None:
        started = time.monotonic()
        resp = await self._request(trunk, "OPTIONS", trunk.uri, f"<{trunk.uri}>")
        up = resp.status < 500 and resp.status != 408
        state["options"] = {
            "up": up,
            "status": resp.status,
            "rttMs": round((time.monotonic() - started) * 1000, 1) if up else None,
            "checkedAt": time.time(),
        }
        self.up.labels(trunk.trunk_id).set(1.0 if up else 0.0)
        if not up and self._down.seen(trunk.trunk_id) == 1:
            log.warning(
                "SIP trunk %s: its keep-alive OPTIONS to %s failed: %d %s (said once until "
                "it answers again)",
                trunk.trunk_id,
                trunk.uri,
                resp.status,
                resp.reason[:120],
            )
        elif up and (failed := self._down.ended(trunk.trunk_id)):
            log.info(
                "SIP trunk %s: answers its keep-alive again (%d failed before)",
                trunk.trunk_id,
                failed,
            )

    async def _register(self, trunk: Trunk, state: dict[str, Any], expires: int) -> float:
        """One REGISTER; seconds until the next (a refresh, or a retry)."""
        proxy = Uri.parse(trunk.uri)
        registrar = f"sip:{proxy.host}" + (f":{proxy.port}" if proxy.port else "")
        aor = f"<sip:{trunk.username}@{proxy.host}>"
        assert self.ua is not None
        contact = self.ua.contact.replace("<sip:", f"<sip:{trunk.username}@", 1)
        if expires:
            expires = max(expires, state.get("minExpires", 0))
        extra = [("Contact", contact), ("Expires", str(expires))]
        # §10.2: every REGISTER of the registration one Call-ID, its CSeq one more each time
        # (a registrar may take a new Call-ID for another binding of the same contact).
        session = state.setdefault("registerSession", {})
        resp = await self._request(
            trunk, "REGISTER", registrar, aor, extra=extra, from_=aor, session=session
        )
        if expires == 0:
            return RETRY
        longer = _min_expires(resp, expires)
        if longer is not None:  # §10.2.8: asked again for the registrar's minimum, kept
            state["minExpires"] = expires = longer
            extra = [("Contact", contact), ("Expires", str(expires))]
            resp = await self._request(
                trunk, "REGISTER", registrar, aor, extra=extra, from_=aor, session=session
            )
        was = state.get("registration") or {}
        if 200 <= resp.status < 300:
            if refused := self._refused.ended(trunk.trunk_id):
                log.info(
                    "SIP trunk %s: registered again (%d REGISTERs refused over %.0f s before)",
                    trunk.trunk_id,
                    refused,
                    time.time() - was.get("since", time.time()),
                )
            granted = _granted(resp, contact, expires)
            state["registration"] = {"state": "registered", "expiresAt": time.time() + granted}
            self.registered.labels(trunk.trunk_id).set(1.0)
            return max(30.0, granted * 0.8) if granted >= 30 else max(1.0, granted * 0.8)
        reason = f"{resp.status} {resp.reason}"[:120]
        if self._refused.seen(trunk.trunk_id) == 1 or was.get("reason") != reason:
            log.warning(
                "SIP trunk %s: REGISTER refused: %s (said again when its reason changes, its "
                "end at INFO)",
                trunk.trunk_id,
                reason,
            )
        now = time.time()
        since = was.get("since", now) if was.get("state") == "failed" else now
        state["registration"] = {"state": "failed", "reason": reason, "at": now, "since": since}
        self.registered.labels(trunk.trunk_id).set(0.0)
        return RETRY

    async def _request(
        self,
        trunk: Trunk,
        method: str,
        uri: str,
        to: str,
        *,
        extra: list[tuple[str, str]] | None = None,
        from_: str = "",
        session: dict[str, Any] | None = None,
    ) -> Response:
        """An out-of-dialog request to the trunk and its final response (a synthetic ``503``
        when the trunk cannot be reached, ``408`` when it does not answer). ``session``: the
        Call-ID and last CSeq the request goes on from (a registration's), kept in it."""
        ua = self.ua
        assert ua is not None  # no task runs before start()
        try:
            conn = await ua.connection_to(Uri.parse(trunk.uri))
        except (OSError, TimeoutError) as exc:
            return Response(status=503, reason=f"Service Unavailable ({exc})")
        kept = {} if session is None else session
        call_id = kept.setdefault("callId", f"{new_branch()[7:]}@{ua.hostname}")
        tag = kept.setdefault("tag", new_tag())

        def build(authorization: tuple[str, str] | None) -> Request:
            seq = kept["cseq"] = int(kept.get("cseq", 0)) + 1
            req = Request(method=method, uri=uri)
            via = Via(conn.via_transport, ua.via_host, None, {"branch": new_branch(), "rport": ""})
            req.add("Via", str(via))
            req.add("Max-Forwards", "70")
            req.add("From", f"{from_ or f'<sip:bridge@{ua.hostname}>'};tag={tag}")
            req.add("To", to)
            req.add("Call-ID", call_id)
            req.add("CSeq", f"{seq} {method}")
            for name, value in extra or []:
                req.add(name, value)
            if authorization is not None:
                req.add(*authorization)
            return req

        credentials = (trunk.username, trunk.password)
        try:
            resp, _ = await exchange(lambda req: ask(ua, req, conn), build, credentials=credentials)
        except (ConnectionError, OSError, TimeoutError) as exc:
            return Response(status=503, reason=f"Service Unavailable ({exc})")
        return resp


def _key(trunk: Trunk) -> tuple[Any, ...]:
    return (trunk.uri, trunk.register, trunk.keepalive, trunk.username, trunk.password)


def _min_expires(resp: Response, asked: int) -> int | None:
    """A ``423 Interval Too Brief``'s ``Min-Expires`` (RFC 3261 §10.2.8) when it is longer
    than ``asked`` and at most a day; else ``None``."""
    if resp.status != 423:
        return None
    try:
        least = int(resp.get("Min-Expires").strip())
    except ValueError:
        return None
    return least if asked < least <= 86_400 else None


def _granted(resp: Response, contact: str, asked: int) -> int:
    """What the registrar granted: our Contact's ``expires``, else ``Expires``, else asked."""
    ours = contact.strip("<>").split(";")[0]
    for value in resp.all("Contact"):
        if ours in value:
            found = re.search(r";\s*expires=(\d+)", value)
            if found:
                return int(found.group(1))
    try:
        return int(resp.get("Expires") or asked)
    except ValueError:
        return asked
