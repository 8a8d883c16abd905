"""An agent's connected leg lent to a call on another worker (issue 49).

The leg lives where the agent's socket is (worker A); the call where WhatsApp's leg is (worker
B). When the agent wins a ring on B, B asks A over the desk's bus (``lend {callID, tenant,
agent, url, worker}``); A joins the call's PCM stream on B — ``GET /call/{callID}/stream``
with the cluster's internal secret, the same relay a handover uses — and runs it through a bus
of its own that the leg is attached to, exactly as a remote PCM engine runs into a call's bus
(``engines/pump.py``): what the call says reaches the agent, what the agent says reaches the
call as that stream's voice. A answers ``lent {callID, ok}``; B's ``accepted`` says ``leg``
accordingly (``false``: the app sends the per-call offer). The stream ends with the call (or
with the agent's session): the leg parks again.

One hop more than a leg on the call's worker (a WebSocket between workers, 20 ms frames), and
no offer, ICE or DTLS on the call's path either. The agent's key presses (RFC 4733 on the leg)
go to the call as the stream's ``dtmf`` messages: the call's ``call.dtmf``, and on to WhatsApp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..calls import ConnectedLeg
from ..engines.channels import MediaChannel
from ..engines.pump import EnginePump
from ..engines.socket import PcmStreamMedia
from ..errors import BridgeError
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
    and where each agent's socket is, this worker's id, and the route run of a call here."""

    store: DeskStore
    worker_id: str

    def run_of(self, call_id: str) -> RouteRun | None: ...


class Lending:
    """Both sides of lending across workers (see the module docstring)."""

    def __init__(self, desk: LendingDesk, open_stream: OpenStream, url: str) -> None:
        self.desk = desk
        self.open_stream = open_stream
        self.url = url
        """Where this worker's internal routes are (the other worker opens our stream there)."""
        self._lent: dict[tuple[AgentKey, str], RemoteCall] = {}
        """The legs of this worker's agents on calls of other workers, by agent and call."""

    # -- on the call's worker
    async def ask(self, key: AgentKey, call_id: str) -> bool:
        """Ask the worker holding the agent's socket to lend its leg to ``call_id`` (here);
        ``True`` once it did."""
        record = await self.desk.store.agent(*key)
        if record is None or record.worker == self.desk.worker_id:
            return False
        run = self.desk.run_of(call_id)
        if run is None:
            return False
        await self.desk.store.publish(
            {
                "op": "lend",
                "callID": call_id,
                "tenant": key[0],
                "agent": key[1],
                "url": self.url,
                "worker": self.desk.worker_id,
            }
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_WAIT
        while (left := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(run.inbox.get(), left)
            except TimeoutError:
                break
            if message.get("op") == "lent" and message.get("callID") == call_id:
                return bool(message.get("ok"))
        log.warning("call %s: agent %s's worker did not lend its leg in time", call_id, key[1])
        return False

    # -- on the agent's worker
    def asked(self, session: AgentSession, message: dict[str, Any]) -> None:
        session.spawn(self._lend(session, message), f"lend:{message.get('callID')}")

    async def _lend(self, session: AgentSession, message: dict[str, Any]) -> None:
        call_id = str(message.get("callID"))
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
            await self.desk.store.publish({"op": "lent", "callID": call_id, "ok": False})
            return
        self._lent[(session.key, call_id)] = remote
        try:  # from here on the leg is given back however this ends (a failed publish too)
            await self.desk.store.publish({"op": "lent", "callID": call_id, "ok": True})
            await remote.ended.wait()
        finally:
            self._lent.pop((session.key, call_id), None)
            await remote.close()

    def let_go(self, key: AgentKey, call_id: str) -> None:
        """The agent is off that call (``transferred`` to another): its stream closes, which
        takes it off the call there, and its leg parks."""
        remote = self._lent.get((key, call_id))
        if remote is not None:
            remote.ended.set()
