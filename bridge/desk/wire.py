"""The agent socket's messages (``GET /agents/connect``): one JSON text frame each, both ways,
with a ``"type"``.

Agent → bridge: ``presence {state}``, ``accept {callID}``, ``decline {callID}``, ``offer {sdp}``
(the always-connected leg), ``transfer {callID, group, music?, timeoutS?}`` and ``hangup
{callID}`` (the call the agent is on), ``ping``.
Bridge → agent: ``hello {agentID, groups, state}``, ``answer {sdp}``, ``presence {state}``,
``ringing {callID, from, number, payload}``, ``call.taken {callID}``, ``accepted {callID, leg}``,
the call's own events
(``call.active``, ``call.ended`` …, as SSE has them), ``error {code, message}``, ``pong``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest, json_object

MAX_MESSAGE = 64 * 1024
"""Bytes of one agent message (an SDP offer fits many times over)."""


class BadMessage(ValueError):
    """An agent's message the bridge cannot act on (answered with an ``error`` message)."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AgentMessage:
    type: str
    state: str | None = None
    call_id: str | None = None
    sdp: str | None = None
    group: str | None = None
    music: str | None = None
    timeout_s: float = 30.0


def parse(text: str) -> AgentMessage:
    if len(text) > MAX_MESSAGE:
        raise BadMessage(f"a message is at most {MAX_MESSAGE} bytes", "too_large")
    try:
        body = json_object(text)
    except BadRequest:  # nested too deeply too: it once disconnected the agent
        raise BadMessage("a message is one JSON object") from None
    if not isinstance(body.get("type"), str):
        raise BadMessage("a message is a JSON object with a string 'type'")
    kind = body["type"]
    if kind == "presence":
        state = body.get("state")
        if state not in ("available", "busy", "away"):
            raise BadMessage('field \'state\' must be "available", "busy" or "away"', "bad_state")
        return AgentMessage(kind, state=state)
    if kind in ("accept", "decline", "hangup", "transfer"):
        call_id = body.get("callID")
        if not isinstance(call_id, str) or not 0 < len(call_id) <= 64:
            raise BadMessage("field 'callID' must name a call", "bad_call_id")
        if kind == "transfer":
            return _transfer(body, call_id)
        return AgentMessage(kind, call_id=call_id)
    if kind == "offer":
        sdp = body.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise BadMessage("field 'sdp' must be the offer's SDP (candidates gathered)", "bad_sdp")
        return AgentMessage(kind, sdp=sdp)
    if kind == "ping":
        return AgentMessage(kind)
    raise BadMessage(f"unknown message type {kind[:40]!r}", "unknown_type")


def _transfer(body: dict[str, Any], call_id: str) -> AgentMessage:
    """``transfer {callID, group, music?, timeoutS?}``: as ``POST /call/transfer`` to a group."""
    group, music, timeout = body.get("group"), body.get("music"), body.get("timeoutS", 30)
    if not isinstance(group, str) or not 0 < len(group) <= 64:
        raise BadMessage("field 'group' must name a group of agents", "bad_group")
    if music is not None and (not isinstance(music, str) or not 0 < len(music) <= 128):
        raise BadMessage("field 'music' must be an audio asset id", "bad_music")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 1 <= timeout <= 600
    ):
        raise BadMessage("field 'timeoutS' must be a number from 1 to 600", "bad_timeout")
    return AgentMessage("transfer", call_id=call_id, group=group, music=music, timeout_s=timeout)


def control(message: AgentMessage, key: tuple[str | None, str]) -> dict[str, Any]:
    """A ``transfer`` or ``hangup`` passed to the worker carrying the call (:func:`from_control`
    reads it back)."""
    return {
        "tenant": key[0],
        "agent": key[1],
        "type": message.type,
        "callID": message.call_id,
        "group": message.group,
        "music": message.music,
        "timeoutS": message.timeout_s,
    }


def from_control(body: dict[str, Any]) -> AgentMessage:
    return AgentMessage(
        str(body.get("type")),
        call_id=str(body.get("callID")),
        group=body.get("group"),
        music=body.get("music"),
        timeout_s=float(body.get("timeoutS") or 30.0),
    )


def ringing(call: dict[str, Any]) -> dict[str, Any]:
    """What an agent sees of a call ringing it (``call`` is the call's snapshot)."""
    return {
        "type": "ringing",
        "callID": call["callID"],
        "from": call.get("peer"),
        "number": call.get("numberID"),
        "payload": call.get("metadata") or {},
    }


def taken(call_id: str) -> dict[str, Any]:
    return {"type": "call.taken", "callID": call_id}


def error(code: str, message: str, call_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if call_id is not None:
        body["callID"] = call_id
    return body
