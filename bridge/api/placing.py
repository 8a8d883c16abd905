"""Where a new call goes: the least-loaded worker with room, and a new inbound call one worker
claimed handed to it (``POST /call/adopt`` there, which lands in ``calls/inbound.py``'s
``InboundCalls.adopt``).

``api/routing.py`` places ``POST /call/make`` and a new call's engine webhook with
:func:`with_room`; :func:`inbound_placer` is the ``place`` of a polled engine's new calls.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import aiohttp

from ..calls.inbound import settled_claim
from ..cluster import Directory, WorkerInfo
from ..errors import DirectoryUnavailable, Undecided
from ..numbers.model import engine_key
from .auth import INTERNAL_HEADER, OWNER_HEADER

log = logging.getLogger(__name__)

ADOPT_TIMEOUT = aiohttp.ClientTimeout(total=6, connect=2)
"""How long the placing worker waits for the target's answer. The target rings a placed call
only within the first half of it (``ringWithin``), so an answer not back by then is a call
not rung there, unless its ``201`` took longer than the other half on its way (its
directory flush, up to 2 s, included): the placing worker rings it itself when the
directory cannot say (Redis away past its retries), never a call rung by nobody."""


async def with_room(directory: Directory) -> list[WorkerInfo]:
    """Live workers with room, least loaded first (by share of capacity); on a tie this worker
    first (no hop)."""
    workers = [w for w in await directory.workers() if w.has_room]
    workers.sort(key=lambda w: (w.calls / w.max_calls, w.id != directory.worker_id))
    return workers


async def _settle(directory: Directory, claim: str, token: str, target: str, answered: bool) -> str:
    """Stop waiting on ``target``, which a new inbound call was offered to under ``token``:
    the claim is this worker's again unless ``target`` took it first (compare-and-set). A
    target that answered (a refusal) rang nothing: the claim is taken back from it too (it
    took it and could not give it back: Redis's answer lost). One that did not answer keeps a
    claim it took, settled (:func:`settled_claim`: it can give it back no more, and rings the
    call or declines it). Who holds the claim now: this worker, ``target``, or another
    (``""``: nobody). Each swap Redis refuses is tried again while it comes back;
    ``DirectoryUnavailable`` past that (``cluster/redis.py`` ``AGAIN_WITHIN``), ``Undecided``
    when Redis had said ``target`` holds the claim (that one did not answer): its settle
    there may have landed, and then ``target`` rings the call."""
    me, held = directory.worker_id, token
    for _ in range(3):  # token → target → token (its give-back) at most, then it stays put
        if held == token:
            next_ = me
        elif held == target:
            next_ = me if answered else settled_claim(target)
        else:
            return target if held == settled_claim(target) else held
        try:
            was = await directory.swap_engine_claim(claim, held, next_, again=True)
        except DirectoryUnavailable as exc:
            if held == target and not answered:
                raise Undecided(exc.message, sent=exc.sent) from exc
            raise
        if was == held:
            return me if next_ == me else target
        held = was
    return held


def inbound_placer(
    directory: Directory, http: aiohttp.ClientSession, secret: str
) -> Callable[[str, str, str], Awaitable[bool]]:
    """``place(engine call id, peer)``: hand a new inbound call this worker claimed to the
    least-loaded worker with room (``POST /call/adopt`` there); ``False`` keeps it here (this
    worker is the least loaded, or the other one did not take it)."""

    async def place(engine_call_id: str, peer: str, number_id: str) -> bool:
        if not directory.shared:
            return False
        try:
            workers = await with_room(directory)
        except DirectoryUnavailable:
            return False
        if not workers or workers[0].id == directory.worker_id:
            return False
        target = workers[0]
        # The claim goes to a token for this one target: it takes the call only while the
        # token holds it, and this worker takes it back the same way when it gives up.
        claim, token = engine_key(number_id, engine_call_id), uuid.uuid4().hex
        ring_within = (ADOPT_TIMEOUT.total or 0.0) / 2
        try:
            if await directory.swap_engine_claim(claim, directory.worker_id, token) != (
                directory.worker_id
            ):
                return False  # the claim is gone (Redis emptied): it rings here, as before
        except DirectoryUnavailable:
            return False
        sent_at = asyncio.get_running_loop().time()
        try:
            async with http.post(
                target.url + "/call/adopt",
                json={
                    "engineCallID": engine_call_id,
                    "peer": peer,
                    "numberID": number_id,
                    "token": token,
                    "ringWithin": ring_within,
                },
                headers={INTERNAL_HEADER: secret, OWNER_HEADER: target.id},
                timeout=ADOPT_TIMEOUT,
                allow_redirects=False,
            ) as resp:
                if resp.status == 201:
                    return True
                why = f"{resp.status} {(await resp.text())[:200]}"
                answered = True  # it rang nothing, whoever holds the claim
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            answered = isinstance(exc, aiohttp.ClientConnectorError)  # never reached: got nothing
        try:
            if await _settle(directory, claim, token, target.id, answered) == target.id:
                return True  # it took the call: it rings it (or declines it) there
        except Undecided as exc:
            # Redis said it took the claim, then nothing: the settle that leaves the call to
            # it may have landed, and it rings the call then. Rung twice, the WhatsApp call
            # would have two bridge calls, each answerable, both carrying its media. Never.
            log.warning(
                "inbound engine call %s: worker %s took it and did not answer in time (%s), and "
                "the directory did not say whether it rings it (%s): not rung here",
                engine_call_id,
                target.id,
                why,
                exc.message,
            )
            return True
        except DirectoryUnavailable as exc:
            if not answered:
                # Not rung there past ringWithin (the target's rule): once that has surely
                # passed, the call is this worker's, as every call it receives while Redis is
                # away; the directory records it when Redis is back (the lease's catch-up).
                await _after(sent_at + (ADOPT_TIMEOUT.total or 0.0))
            log.warning(
                "inbound engine call %s: worker %s did not take it (%s) and the call directory "
                "cannot settle its claim (%s); ringing it here",
                engine_call_id,
                target.id,
                why,
                exc.message,
            )
            return False
        log.warning(
            "inbound engine call %s: worker %s did not take it (%s); ringing it here",
            engine_call_id,
            target.id,
            why,
        )
        return False

    return place


async def _after(when: float) -> None:
    """Sleep until the loop's time ``when`` (at once if it has passed)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, when - loop.time()))
