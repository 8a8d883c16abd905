"""What the call manager's policies may do with the calls: narrow protocols the manager
satisfies, handed to each policy instead of the manager itself (issue 47), so a policy's reach
is written in its signature and checked by mypy.

* :class:`EndsCalls`: the ends from below (``endings.py``): know the call's engine, end it.
* :class:`AnswersCalls`: answering (``answering.py``): find the call and its runtime, tell
  its engine, activate it.
* :class:`MovesCalls`: the engine's events (``engine_events.py``): ring, activate and end calls
  found by their engine id, announce what is not about a call, pass new inbound calls on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..engines import Engine, EngineEvent
from ..metrics import Metrics
from ..numbers.switchboard import Switchboard
from .artifacts import ArtifactSink
from .events import CallEvents
from .model import Call, EndReason
from .registry import CallRegistry
from .runtime import CallRuntime


class EndsCalls(Protocol):
    """What ``Endings`` needs of the manager."""

    shutting_down: bool

    def engine_of(self, call: Call) -> Engine: ...

    async def end(self, call: Call, reason: EndReason, **data: Any) -> None: ...


class AnswersCalls(Protocol):
    """What ``answering.answer`` needs of the manager."""

    def get(self, call_id: str) -> Call: ...

    def runtime(self, call_id: str) -> CallRuntime: ...

    def engine_of(self, call: Call) -> Engine: ...

    def activate(self, call: Call) -> None: ...


class MovesCalls(Protocol):
    """What ``EngineEvents`` needs of the manager."""

    engine: Switchboard
    events: CallEvents
    metrics: Metrics
    registry: CallRegistry
    artifacts: ArtifactSink | None
    incoming: Callable[[EngineEvent], Awaitable[None]] | None

    def find_runtime(self, call_id: str) -> CallRuntime | None: ...

    def ring(self, call: Call) -> None: ...

    def activate(self, call: Call) -> None: ...

    def end_soon(self, call: Call, reason: EndReason, **data: Any) -> None: ...
