"""The desk: people who answer calls (agents with a signed token and a socket, their presence
as every worker sees it) and routes (ring groups, voicemail, prompts, opening hours).

Above ``calls/``: a route runs on an inbound call as an attachment of its runtime and drives
it through the call manager; agents' media is a browser's leg like any other."""

from .routes import Route, parse_route
from .service import Desk
from .session import AgentSession
from .store import GRACE, AgentRecord, DeskStore, MemoryDeskStore
from .tokens import AgentClaims, AgentTokens, key_for

__all__ = [
    "GRACE",
    "AgentClaims",
    "AgentRecord",
    "AgentSession",
    "AgentTokens",
    "Desk",
    "DeskStore",
    "MemoryDeskStore",
    "Route",
    "key_for",
    "parse_route",
]
