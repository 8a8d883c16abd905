"""The call events a model agent publishes (SSE ``GET /call/events`` and signed webhooks, like
every call event), each with ``agentID`` and ``provider``; the fields beyond those are named
per event below (``docs/agents.md`` and the OpenAPI ``CallEvent`` say the same)."""

from __future__ import annotations

CONNECTED = "agent.connected"
"""The model's socket is open and its session configured."""
RECONNECTED = "agent.reconnected"
"""A dropped or closing socket was opened again: ``resumed`` (a resumption handle was used)."""
FAILED = "agent.failed"
"""The model could not be reached again: ``reason``, ``attempts``; the fallback runs."""
STOPPED = "agent.stopped"
"""Taken off the call (``DELETE /call/{callID}/agents/{agentID}``), or gone by itself:
``reason`` ``ended_by_model`` (the model closed the conversation) or ``transferred`` (it
handed the call to a human)."""
SPEECH_STARTED = "agent.speech.started"
"""The model heard the caller start talking: ``echo`` (the bridge found no caller voice above
the agent's own echo: no barge-in), ``callerDbfs``, ``agentDbfs``, ``agentPlaying``, ``by``
(``model``, or ``bridge`` when the model's turn detection is off and the bridge's VAD heard it)."""
SPEECH_STOPPED = "agent.speech.stopped"
INTERRUPTED = "agent.interrupted"
"""The agent's voice was cut: ``itemID``, ``heardMs``, ``droppedMs``, ``by`` (``model`` or
``bridge``: a barge-in; ``hold``: the call was put on hold), ``cancelled`` (the bridge sent the
model ``response.cancel`` for a response still being generated)."""
TRANSCRIPT = "agent.transcript"
"""What the model heard or said, when it sends transcripts: ``role``, ``text``."""
TOOL_CALL = "agent.tool_call"
"""A tool the app answers: ``toolCallID``, ``name``, ``arguments``."""
TOOL_CANCELLED = "agent.tool_cancelled"
"""The model withdrew a tool call the app was asked (Gemini ``toolCallCancellation``, Deepgram
``FunctionCallCancelled``): ``toolCallID``, ``name``. It wants no answer (one is ``404``)."""

ALL = (
    CONNECTED,
    RECONNECTED,
    FAILED,
    STOPPED,
    SPEECH_STARTED,
    SPEECH_STOPPED,
    INTERRUPTED,
    TRANSCRIPT,
    TOOL_CALL,
    TOOL_CANCELLED,
)
