"""Who takes a new inbound call: this process, another worker, or nobody (busy).

The engine reports a new inbound call (``INCOMING``); :class:`InboundCalls` decides:

1. a call already known here is not taken twice (a webhook and a poll can both report it);
2. with several workers polling one engine, one claims it (``claim``: the directory's
   ``claim:{engine call id}``) and the others let it be;
3. the claimer offers it to a less loaded worker (``place``: ``POST /call/adopt`` there, which
   lands in :meth:`InboundCalls.adopt`);
4. the call rings here — or, at capacity, is declined on the engine and kept as an ended
   ``busy`` record, so operators see the calls capacity turned away.

The call itself is made by the state machine (:meth:`CallManager.add`); this module only
decides where and whether.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..engines import EngineEvent, OffersAgain
from ..errors import AtCapacity, BridgeError, DirectoryUnavailable, NotOwner, ShuttingDown
from ..logs import Repeats
from ..numbers.model import DEFAULT_NUMBER
from .hangup import hang_up_quietly
from .manager import CallManager
from .model import Call, CallState, Direction, EndReason, engine_key

log = logging.getLogger(__name__)

Claim = Callable[[str], Awaitable[bool]]
"""``claim(engine call id)``: does this process take a newly seen inbound engine call?
``DirectoryUnavailable`` when that cannot be told."""

Place = Callable[[str, str, str], Awaitable[bool]]
"""``place(engine call id, peer, number id)``: did a less loaded worker take a call this one
claimed?"""


class Swap(Protocol):
    """``swap(engine call id, held, next)``: the claim on a new inbound call handed from
    ``held`` to ``next`` only while ``held`` holds it; who held it; ``again``: tried again
    once Redis answers, for a few seconds (``Directory.swap_engine_claim``)."""

    async def __call__(
        self, engine_call_id: str, held: str, next_: str, *, again: bool = False
    ) -> str: ...


def settled_claim(worker: str) -> str:
    """A placed call's claim once its placing worker stopped waiting (no answer in time) and
    found ``worker``, its target, holding it: ``worker``'s for good. The target can give it
    back no more, so a call it then cannot ring is its own to decline, never left to nobody."""
    return f"settled:{worker}"


async def _always(engine_call_id: str) -> bool:
    return True


async def _stay(engine_call_id: str, peer: str, number_id: str) -> bool:
    return False


class InboundCalls:
    """The inbound policy of one process (see the module docstring). It registers itself
    with ``manager`` for the engine's ``INCOMING`` events."""

    def __init__(
        self,
        manager: CallManager,
        *,
        claim: Claim | None = None,
        place: Place | None = None,
        polled: Callable[[str], bool] | None = None,
        swap: Swap | None = None,
    ) -> None:
        """Without ``claim`` every new call is this process's; without ``place`` it stays
        here (one process, or an engine whose new calls reach one worker already).
        ``polled(number id)``: whether that number's new calls need ``claim`` and ``place``
        (every worker sees them); without it, every call does. ``swap``: a call placed here
        under a token is taken only while that token holds its claim (the placing worker
        takes it back when it gives up on this one)."""
        self.manager = manager
        self._polled = polled or (lambda number_id: True)
        self._claim = claim or _always
        self._place = place or _stay
        self._swap = swap
        self._away = Repeats()
        """New calls no worker could claim (the directory away), each said once."""
        manager.take_incoming(self.incoming)

    async def incoming(self, event: EngineEvent) -> None:
        """The engine reports a new inbound call."""
        manager = self.manager
        number_id = event.number_id or DEFAULT_NUMBER
        key = engine_key(number_id, event.engine_call_id)
        if manager.registry.by_engine_id(key) is not None:
            return  # already known (a webhook and a poll can both report it)
        # Every worker polls a polled engine's one list: one claims each new call. The other
        # engines' new calls reach one worker already.
        polled = self._polled(number_id)
        if polled:
            try:
                claimed = await self._claim(key)
            except DirectoryUnavailable as exc:
                self._unclaimed(event, key, exc)
                return
            if self._away.ended(key):
                mine = "claimed here" if claimed else "another worker's"
                log.info("inbound engine call %s: %s, the directory back", key, mine)
            if not claimed:
                return  # another worker polled the same engine first and took it
        if polled and await self._place(event.engine_call_id, event.peer or "unknown", number_id):
            return  # a less loaded worker took it
        metadata = event.data.get("metadata")
        await self.ring(
            event.engine_call_id,
            event.peer or "unknown",
            metadata=dict(metadata) if isinstance(metadata, dict) else None,
            number_id=number_id,
        )

    def _unclaimed(self, event: EngineEvent, key: str, exc: DirectoryUnavailable) -> None:
        """No worker can claim a polled engine's new call while the directory is away (each
        would ring it), nor while it came back a moment ago (empty, it may not know yet the
        calls the other workers ring): its engine offers it again at each poll, and the first
        worker to claim it once Redis answers takes it — never a ringing call left for good.
        Said once a call, at WARNING, its end at INFO."""
        engine = self.manager.engine.of(event.number_id or DEFAULT_NUMBER)
        if isinstance(engine, OffersAgain):
            engine.offer_again(event.engine_call_id)
        if self._away.seen(key) == 1:
            log.warning(
                "inbound engine call %s from %s not taken yet: which worker takes it cannot "
                "be told (%s); offered again at each poll until a worker claims it",
                key,
                event.peer or "unknown",
                exc.message,
            )

    async def adopt(
        self,
        engine_call_id: str,
        peer: str,
        number_id: str = DEFAULT_NUMBER,
        token: str = "",
        ring_within: float | None = None,
    ) -> Call:
        """Take a new inbound call another worker discovered and placed here under ``token``:
        its claim is taken from the token, and the call rings here with nothing awaited in
        between (this worker's room cannot change meanwhile). A call this worker cannot take is
        refused, never declined on the engine: the placing worker rings it itself, or declines
        it — no room here (:class:`AtCapacity`), a shutdown begun (:class:`ShuttingDown`), its
        claim no longer the token's (:class:`NotOwner`). A claim taken and then refused is given
        back to the token — unless the placing worker stopped waiting and settled it here
        (:func:`settled_claim`): then the call is this worker's, declined here with its
        ``call.ended``. ``ring_within``: seconds from now past which a call placed here is not
        rung on its take alone (:class:`NotOwner`, the claim given back): the placing worker,
        no longer waiting, rings it itself when the directory cannot tell it otherwise — unless
        it settled the claim here meanwhile, and then it rings here."""
        manager = self.manager
        loop = asyncio.get_running_loop()
        ring_by = loop.time() + ring_within if ring_within is not None else None
        key = engine_key(number_id, engine_call_id)
        known = manager.registry.by_engine_id(key)
        if known is not None:
            return known
        call = self._new_call(engine_call_id, peer, None, number_id)
        tenant = manager.engine.tenant(call.tenant_id)
        await manager.admit(tenant)  # its tenant's calls on every worker: before the claim
        placed = bool(token) and self._swap is not None
        settled = await self._take(key, token) if placed else False
        try:
            manager.check_capacity(tenant)  # the take waited on Redis: room still, no shutdown
            if placed and not settled and ring_by is not None and loop.time() > ring_by:
                raise NotOwner(
                    f"engine call {key}: not rung within {ring_within:g} s of its placing "
                    "(the directory was slow): its finder rings it"
                )
            self._ring(call)
        except (AtCapacity, ShuttingDown, NotOwner) as exc:
            if not placed or await self._given_back(key, token):
                raise  # not rung here: the placing worker rings it
            if isinstance(exc, NotOwner):
                self._ring(call)  # settled here: the placing worker left it to this one
            else:
                await self._decline(call, exc, recorded=True)
        return call

    async def _take(self, key: str, token: str) -> bool:
        """Take a placed call's claim from ``token``; one whose answer was lost is given back
        (the placing worker takes back the claim of a call refused here in any case), unless
        the placing worker settled it here meanwhile: the call is this worker's (``True``).
        One never sent (the directory known away) took nothing: refused at once, nothing to
        give back."""
        assert self._swap is not None
        try:
            held = await self._swap(key, token, self.manager.owner)
        except BridgeError as exc:
            if isinstance(exc, DirectoryUnavailable) and not exc.sent:
                raise  # it cannot have landed, nor been settled here: no give-back to wait on
            if await self._given_back(key, token):
                raise
            return True  # the take landed, and the placing worker stopped waiting since
        if held != token:
            raise NotOwner(f"engine call {key}: its finder gave up on this worker")
        return False

    async def _given_back(self, key: str, token: str) -> bool:
        """Give a placed call's claim taken here back to ``token``: its placing worker rings
        the call. ``False`` when it cannot be: the placing worker stopped waiting and settled
        the claim here (:func:`settled_claim`), and the call is this worker's to ring or end.
        A give-back Redis refuses is tried again as soon as it answers: only the claim says
        whether the placing worker settled it here meanwhile."""
        assert self._swap is not None
        owner = self.manager.owner
        try:
            held = await self._swap(key, owner, token, again=True)
        except BridgeError:
            # Redis away for seconds: the placing worker, if it still waits, takes the claim
            # back on this worker's refusal and rings the call.
            return True
        return held != settled_claim(owner)

    async def ring(
        self,
        engine_call_id: str,
        peer: str,
        *,
        metadata: dict[str, Any] | None = None,
        number_id: str = DEFAULT_NUMBER,
    ) -> Call:
        """Ring the call here, or decline it when there is no room (``busy``) or the bridge
        is shutting down. ``metadata``: what the engine knows of the call (Meta's SIP
        headers: the button or link the user pressed)."""
        manager = self.manager
        call = self._new_call(engine_call_id, peer, metadata, number_id)
        held = manager.admission.take_place(engine_key(number_id, engine_call_id))
        if held and not manager.shutting_down:
            self._ring(call)  # admitted as the simulated network was told to ring
            return call
        try:
            await manager.admit(manager.engine.tenant(call.tenant_id))
        except (AtCapacity, ShuttingDown) as exc:
            await self._decline(call, exc, recorded=isinstance(exc, AtCapacity))
            return call
        self._ring(call)
        return call

    async def _decline(self, call: Call, exc: AtCapacity | ShuttingDown, *, recorded: bool) -> None:
        """Decline a call this worker cannot ring, on the engine, said at WARNING; with
        ``recorded`` it ends ``busy`` (no room) or ``shutdown`` with its ``call.ended`` and
        stays readable."""
        manager = self.manager
        log.warning("declining inbound call from %s: %s", call.peer, exc.message)
        await hang_up_quietly(manager.engine_of(call), call)
        if recorded:
            reason = EndReason.BUSY if isinstance(exc, AtCapacity) else EndReason.SHUTDOWN
            manager.record_end(call, reason, keep=True)

    def _new_call(
        self, engine_call_id: str, peer: str, metadata: dict[str, Any] | None, number_id: str
    ) -> Call:
        manager = self.manager
        return Call(
            id=uuid.uuid4().hex,
            peer=peer,
            direction=Direction.INBOUND,
            owner=manager.owner,
            engine_call_id=engine_call_id,
            state=CallState.RINGING,
            metadata=metadata or {},
            number_id=number_id,
            tenant_id=manager.engine.tenant_of(number_id),
        )

    def _ring(self, call: Call) -> None:
        """The call, admitted, rings here."""
        self.manager.add(call)
        log.info(
            "call %s: inbound from %s is ringing", call.id, call.peer, extra={"call_id": call.id}
        )
        self.manager.events.publish("call.ringing", call)
