"""Calls: the model clients see, where calls are found, their events, the manager that runs
them (the state machine), the policies beside it (who takes an inbound call; recovery of
orphans and lost calls), and the per-call runtime that owns each live call's media."""

from ..rtc import ConnectedLeg
from .events import CallEvent, CallEvents
from .inbound import InboundCalls
from .manager import CallManager
from .model import Call, CallState, Direction, EndReason, normalize_phone
from .recovery import Recovery
from .registry import CallRegistry, InMemoryCallRegistry
from .runtime import CallRuntime

__all__ = [
    "Call",
    "CallEvent",
    "CallEvents",
    "CallManager",
    "CallRegistry",
    "CallRuntime",
    "CallState",
    "ConnectedLeg",
    "Direction",
    "EndReason",
    "InMemoryCallRegistry",
    "InboundCalls",
    "Recovery",
    "normalize_phone",
]
