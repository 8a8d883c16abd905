"""An agent's connected leg lent to a call on another worker (issue 49).

The leg lives where the agent's socket is (worker A); the call where WhatsApp's leg is (worker
B). When the agent wins a ring on B, B asks A over the desk's bus (``lend {callID, tenant,
agent, url, worker, request}``); A joins the call's PCM stream on B — ``GET /call/{callID}/stream``
with the cluster's internal secret, the same relay a handover uses — and runs it through a bus
of its own that the leg is attached to, exactly as a remote PCM engine runs into a call's bus
(``engines/pump.py``): what the call says reaches the agent, what the agent says reaches the
call as that stream's voice. A answers ``lent {callID, request, ok}``; B's ``accepted`` says
``leg`` accordingly (``false``: the app sends the per-call offer). The stream ends with the call
(or with the agent's session): the leg parks again.

Each ask has its own ``request`` id and takes only the answer that names it: an answer that
comes after its ask gave up (:data:`ANSWER_WAIT`), or one to an ask for another agent of the
call (a transfer rings a group after the first agent's ask), is dropped, said at DEBUG (a late
answer is normal). One that lent the leg after all is told to let it go (``unlend {tenant,
agent, callID, request}``): the call's worker said ``leg: false``, so the app offers a leg of
its own.

One hop more than a leg on the call's worker (a WebSocket between workers, 20 ms frames), and
no offer, ICE or DTLS on the call's path either. The agent's key presses (RFC 4733 on the leg)
go to the call as the stream's ``dtmf`` messages: the call's ``call.dtmf``, and on to WhatsApp.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..calls import ConnectedLeg
from ..engines.channels import MediaChannel
from ..engines.pump import EnginePump
from ..engines.socket import PcmStreamMedia
from ..errors import BridgeError
from ..logs import Repeats
from ..media import CallBus
from ..tasks import TaskSet
from .store import AgentKey, DeskStore

if TYPE_CHECKING:
    from .runner import RouteRun
    from .session import AgentSession

log = logging.getLogger(__name__)

OpenStream = Callable[[str, str, str], Awaitable[MediaChannel]]
"""``open(url, worker, call id)``: the call's PCM stream on the worker that carries it."""
ANSWER_WAIT = 3.0
"""Seconds the call's worker waits for the agent's worker to say whether it lent the leg."""


class RemoteCall:
    """The agent's leg on a call of another worker, through that call's PCM stream."""

    def __init__(self, call_id: str, leg: ConnectedLeg, channel: MediaChannel) -> None:
        self.call_id = call_id
        self.leg = leg
        self.channel = channel
        self.bus = CallBus(call_id)
        self.pump = EnginePump(self.bus, channel, on_closed=self._ended)
        self.ended = asyncio.Event()
        self._tasks = TaskSet(f"lent[{call_id[:12]}]")

    def start(self) -> None:
        self.pump.start()
        self.leg.attach(self.call_id, self.bus, lambda *_: None, self._key)

    def _key(self, _leg: Any, digit: str, duration_ms: int) -> None:
        """The agent pressed a key on the lent leg: to the call's worker, over the stream."""
        channel = self.channel
        if isinstance(channel, PcmStreamMedia) and not self._tasks.closed:
            self._tasks.spawn(self._send_key(channel, digit, duration_ms), "lent-key")

    async def _send_key(self, channel: PcmStreamMedia, digit: str, duration_ms: int) -> None:
        try:
            await channel.send_key(digit, duration_ms)
        except ConnectionError as exc:
            log.info("call %s: a key of the lent leg not passed on: %s", self.call_id, exc)

    def _ended(self, exc: BaseException | None) -> None:
        self.ended.set()  # the call ended (its worker closed the stream) or the stream broke

    async def close(self) -> None:
        """The leg parks again, the stream and the bus close (idempotent)."""
        if self.leg.attached_to == self.call_id:
            self.leg.release()
        await self._tasks.close()
        await self.pump.close()
        self.bus.close()


class LendingDesk(Protocol):
    """What lending uses of the desk (``Desk`` is one): the store the workers talk through
    and where each agent's socket is, this worker's id, the route run of a call here, and the
    desk's tasks."""

    store: DeskStore
    worker_id: str

    def run_of(self, call_id: str) -> RouteRun | None: ...

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None: ...


class Lending:
    """Both sides of lending across workers (see the module docstring)."""

    def __init__(self, desk: LendingDesk, open_stream: OpenStream, url: str) -> None:
        self.desk = desk
        self.open_stream = open_stream
        self.url = url
        """Where this worker's internal routes are (the other worker opens our stream there)."""
        self._lent: dict[tuple[AgentKey, str], tuple[str, RemoteCall]] = {}
        """The legs of this worker's agents on calls of other workers, by agent and call, with
        the request that lent each."""
        self._asking: dict[str, asyncio.Future[bool]] = {}
        """This worker's asks waiting for their answer, by request id (each gone when its
        ask ends, within :data:`ANSWER_WAIT`)."""
        self.unanswered = Repeats(size=256)
        """Asks no agent's worker answered in time, by call and agent: a moved call's look
        for its agent's leg asks again every quarter second (``handoffs.leg_back``), said
        once while that worker stays silent, and its end once."""

    # -- on the call's worker
    async def ask(self, key: AgentKey, call_id: str) -> bool:
        """Ask the worker holding the agent's socket to lend its leg to ``call_id`` (here);
        ``True`` once it did."""
        record = await self.desk.store.agent(*key)
        if record is None or record.worker == self.desk.worker_id:
            return False
        if self.desk.run_of(call_id) is None:
            return False
        request = uuid.uuid4().hex
        answer = self._asking[request] = asyncio.get_running_loop().create_future()
        try:
            await self.desk.store.publish(
                {
                    "op": "lend",
                    "callID": call_id,
                    "tenant": key[0],
                    "agent": key[1],
                    "url": self.url,
                    "worker": self.desk.worker_id,
                    "request": request,
                }
            )
            async with asyncio.timeout(ANSWER_WAIT):
                lent = await answer
        except TimeoutError:
            if self.unanswered.seen(f"{call_id} {key[1]}") == 1:
                log.warning(
                    "call %s: agent %s's worker did not answer the ask for its leg within "
                    "%g s (said once while it stays silent)",
                    call_id,
                    key[1],
                    ANSWER_WAIT,
                )
            return False
        finally:
            del self._asking[request]
        silent = self.unanswered.ended(f"{call_id} {key[1]}")
        if silent:
            log.info(
                "call %s: agent %s's worker answered again, after %d unanswered asks",
                call_id,
                key[1],
                silent,
            )
        return lent

    def answered(self, message: dict[str, Any]) -> None:
        """A ``lent`` on the bus: the answer to the ask it names; else (an ask that gave up,
        another worker's) dropped, and a leg lent after all let go."""
        if message.get("worker") != self.desk.worker_id:
            return  # another worker's ask
        answer = self._asking.get(str(message.get("request")))
        if answer is not None and not answer.done():
            answer.set_result(bool(message.get("ok")))
            return
        log.debug(
            "call %s: agent %s's late answer to a lend dropped (ok: %s)",
            message.get("callID"),
            message.get("agent"),
            message.get("ok"),
        )
        if message.get("ok"):  # lent after its ask gave up ("leg": false went out): let go
            unlend = {k: message.get(k) for k in ("tenant", "agent", "callID", "request")}
            self.desk.spawn(self.desk.store.publish({"op": "unlend", **unlend}), "unlend")

    # -- on the agent's worker
    def asked(self, session: AgentSession, message: dict[str, Any]) -> None:
        session.spawn(self._lend(session, message), f"lend:{message.get('callID')}")

    async def _lend(self, session: AgentSession, message: dict[str, Any]) -> None:
        call_id = str(message.get("callID"))
        request = str(message.get("request"))
        reply = {
            "op": "lent",
            "callID": call_id,
            "request": request,
            "tenant": session.key[0],
            "agent": session.key[1],
            "worker": message.get("worker"),  # the asking worker's, whose answer this is
        }
        leg = session.leg
        ok = False
        if leg is not None and leg.usable:
            try:
                channel = await self.open_stream(
                    str(message.get("url")), str(message.get("worker")), call_id
                )
                remote = RemoteCall(call_id, leg, channel)
                remote.start()
                ok = True
            except (ConnectionError, OSError, BridgeError) as exc:
                log.warning("call %s: the agent's leg not lent across workers: %s", call_id, exc)
        if not ok:
            await self.desk.store.publish({**reply, "ok": False})
            return
        self._lent[(session.key, call_id)] = (request, remote)
        try:  # from here on the leg is given back however this ends (a failed publish too)
            await self.desk.store.publish({**reply, "ok": True})
            await remote.ended.wait()
        finally:
            if self._lent.get((session.key, call_id), (None,))[0] == request:
                del self._lent[(session.key, call_id)]
            await remote.close()

    def let_go(self, key: AgentKey, call_id: str, request: str | None = None) -> None:
        """The agent is off that call (``transferred`` to another; ``request``: only the leg
        that request lent, whose ask gave up): its stream closes, which takes it off the call
        there, and its leg parks."""
        lent = self._lent.get((key, call_id))
        if lent is not None and request in (None, lent[0]):
            lent[1].ended.set()
