"""Tools the bridge answers itself (announced to the model only when the app asks for them
in ``bridgeTools``), and the way every other tool call goes: to the app as an
``agent.tool_call`` event, answered through ``POST /call/{callID}/agents/{agentID}/tools``."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from ..audio.dtmf import DIGITS
from ..errors import BadRequest, BridgeError
from ..logs import Repeats
from .wire import Tool, ToolCall

log = logging.getLogger(__name__)


class CallControls(Protocol):
    """What an agent's tools and fallbacks may do to its call (the API layer provides it)."""

    async def hang_up(self) -> None: ...

    async def transfer(self, participant_id: str | None) -> str:
        """Hand the call to a human participant (the first non-agent one when ``None``);
        returns who took it."""

    async def send_dtmf(self, digits: str) -> None: ...

    async def hold(self, held: bool) -> None:
        """Hold or resume the caller as ``POST /call/hold`` does (a resume stops the hold's
        music)."""

    async def play(self, file: str) -> None:
        """Play a file of ``BRIDGE_MEDIA_DIR`` to the caller."""


BRIDGE_TOOLS: dict[str, Tool] = {
    "hangup": Tool(
        "hang_up",
        "End the phone call. Say goodbye first.",
        {"type": "object", "properties": {}},
    ),
    "transfer": Tool(
        "transfer_to_human",
        "Hand the phone call to a human agent.",
        {
            "type": "object",
            "properties": {"participantID": {"type": "string", "description": "who (optional)"}},
        },
    ),
    "dtmf": Tool(
        "send_dtmf",
        "Press keys on the phone line (an IVR menu): digits 0-9, * and #.",
        {
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": f"^[{DIGITS}]{{1,32}}$"}},
            "required": ["digits"],
        },
    ),
    "hold": Tool(
        "hold_call",
        "Put the caller on hold (held true) or take them off hold (held false).",
        {
            "type": "object",
            "properties": {"held": {"type": "boolean"}},
            "required": ["held"],
        },
    ),
}
_BY_NAME = {tool.name: key for key, tool in BRIDGE_TOOLS.items()}
SAID_FIRST = frozenset({"hangup", "transfer", "hold"})
"""The bridge's tools that take the caller from the agent: run once what the agent said
before calling them (its goodbye, a "please hold") has played, which the model sent with the
call, faster than real time (Deepgram's are declared ``defer_until_eot`` for the same)."""
WITHDRAWN = "withdrawn by the model"
"""The answer of a bridge tool the model withdrew before it ran: not run (nor sent)."""
MAX_PENDING = 32
"""Tool calls one agent may have waiting for the app's answer."""


class ToolCalls:
    """One agent's tool calls between the model and the app: those waiting for the app's
    answer (at most :data:`MAX_PENDING`: :meth:`wait`) and those the model withdrew
    (``ToolCancelled``: never answered). ``send`` takes a call's result to the model;
    ``current(session, what)`` says whether the session that asked is still the model's."""

    def __init__(
        self, send: Callable[[ToolCall, Any], None], current: Callable[[int, str], bool]
    ) -> None:
        self.pending: dict[str, ToolCall] = {}
        """The model's tool calls waiting for the app's answer."""
        self.withdrawn: deque[str] = deque(maxlen=64)
        """Tool calls the model withdrew: never answered."""
        self._send = send
        self._current = current
        self._full = Repeats(size=1)  # the app left MAX_PENDING waiting: said once while so

    def wait(self, call: ToolCall, where: str) -> bool:
        """Keep ``call`` for the app's answer; ``False`` when :data:`MAX_PENDING` wait already:
        it is answered as failed then, said once at WARNING while the app leaves them so."""
        if len(self.pending) >= MAX_PENDING:
            if self._full.seen("full") == 1:
                log.warning(
                    "%s: %d tool calls wait for the app's answer (POST .../tools): the model's "
                    "next ones are answered as failed until it answers",
                    where,
                    MAX_PENDING,
                )
            self.answer(call, {"error": "too many tool calls waiting"})
            return False
        self._full.ended("full")
        tool_call_id = call.call_id  # (the model's id for this tool call: no WhatsApp call's)
        self.pending[tool_call_id] = call
        return True

    def withdraw(self, call_ids: Iterable[str], where: str) -> list[ToolCall]:
        """The model withdrew ``call_ids``: never answered (an answer the app still sends is
        ``404``, a bridge tool's is dropped: :meth:`answer`); those that waited for the app."""
        waited = []
        for call_id in call_ids:
            self.withdrawn.append(call_id)
            call = self.pending.pop(call_id, None)
            if call is not None:
                waited.append(call)
        log.info("%s: the model withdrew tool calls %s", where, ", ".join(call_ids)[:200])
        return waited

    def answer(self, call: ToolCall, output: Any) -> None:
        """A tool call's result, to the session that asked: not when the model withdrew the
        call meanwhile, nor once that session is over (a new one never asked for it)."""
        asked = f"the answer to tool call {call.call_id[:80]}"
        if call.call_id not in self.withdrawn and self._current(call.session, asked):
            self._send(call, output)


def failure(output: Any) -> str | None:
    """What went wrong, when a tool's answer says it failed (an object with ``"ok": false``
    or an ``error``, as the bridge's own tools answer): the protocols with an error form for
    a tool's result use it (ElevenLabs ``is_error``, Ultravox ``errorType``)."""
    if not isinstance(output, dict) or (output.get("ok") is not False and "error" not in output):
        return None
    return str(output.get("error") or "the tool failed")


def bridge_tools(names: Any) -> list[Tool]:
    """The request's ``bridgeTools``: a list of ``hangup``, ``transfer``, ``dtmf``, ``hold``."""
    if names is None:
        return []
    if not isinstance(names, list) or not all(n in BRIDGE_TOOLS for n in names):
        raise BadRequest(f"bridgeTools must be a list of {', '.join(BRIDGE_TOOLS)}")
    return [BRIDGE_TOOLS[n] for n in dict.fromkeys(names)]


async def run_bridge_tool(
    controls: CallControls,
    call: ToolCall,
    granted: list[Tool],
    played_out: Callable[[], Awaitable[None]],
    withdrawn: Callable[[], bool] = lambda: False,
) -> dict[str, Any] | None:
    """Answer one of the bridge's tools the request asked for (``granted``: its
    ``bridgeTools``); ``None`` when the call is not one of them (a tool of that name the app
    did not ask for is the app's). ``played_out`` waits for the agent's voice queued so far
    (:data:`SAID_FIRST`); a call the model ``withdrawn()`` meanwhile (a barge-in ended the
    wait, and the model its call) is not run: :data:`WITHDRAWN`."""
    key = _BY_NAME.get(call.name)
    if key is None or BRIDGE_TOOLS[key] not in granted:
        return None
    args = call.arguments
    held = args.get("held", True)
    if key == "hold" and not isinstance(held, bool):  # (``"false"`` is no false: say so)
        return {"ok": False, "error": "'held' must be true or false"}
    if key in SAID_FIRST and (key != "hold" or held):
        await played_out()
        if withdrawn():
            return {"ok": False, "error": WITHDRAWN}
    try:
        if key == "hangup":
            await controls.hang_up()
            return {"ok": True}
        if key == "transfer":
            pid = args.get("participantID")
            return {
                "ok": True,
                "participantID": await controls.transfer(pid if isinstance(pid, str) else None),
            }
        if key == "dtmf":
            digits = str(args.get("digits") or "")
            await controls.send_dtmf(digits)
            return {"ok": True, "digits": digits}
        await controls.hold(held)
        return {"ok": True}
    except BridgeError as exc:  # (said by the service, with its call)
        return {"ok": False, "error": str(exc)[:200]}
