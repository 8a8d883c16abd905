"""Realtime model agents on calls: the bridge as the client of a speech-to-speech model's
WebSocket (OpenAI Realtime, Gemini Live), an attachment of the call beside media forks."""

from .agent import Agent
from .echo import EchoGuard, Verdict
from .gemini import GeminiLive
from .openai import OpenAIRealtime
from .service import AgentService
from .tools import CallControls

__all__ = [
    "Agent",
    "AgentService",
    "CallControls",
    "EchoGuard",
    "GeminiLive",
    "OpenAIRealtime",
    "Verdict",
]
