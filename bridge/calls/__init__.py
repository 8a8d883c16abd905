"""Calls: the model clients see, where calls are found, their events, the manager that runs
them, and the per-call runtime that owns each live call's media."""

from .events import CallEvent, CallEvents
from .manager import CallManager
from .model import Call, CallState, Direction, EndReason, normalize_phone
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
    "Direction",
    "EndReason",
    "InMemoryCallRegistry",
    "normalize_phone",
]
