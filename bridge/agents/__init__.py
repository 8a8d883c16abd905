"""Realtime model agents on calls: the bridge as the client of a speech-to-speech model's
WebSocket (OpenAI Realtime, xAI Grok Voice, Azure Voice Live, Gemini Live,
Deepgram Voice Agent, ElevenLabs Agents, Ultravox, OpenAI GPT-Live), an attachment of the call
beside media forks."""

from .agent import Agent
from .azure import AzureVoiceLive
from .deepgram import DeepgramVoiceAgent
from .echo import EchoGuard, Verdict
from .elevenlabs import ElevenLabsAgent
from .gemini import GeminiLive
from .openai import OpenAIRealtime
from .openai_live import OpenAILive
from .service import AgentService
from .tools import CallControls
from .ultravox import UltravoxCall
from .xai import XaiGrokVoice

__all__ = [
    "Agent",
    "AgentService",
    "AzureVoiceLive",
    "CallControls",
    "DeepgramVoiceAgent",
    "EchoGuard",
    "ElevenLabsAgent",
    "GeminiLive",
    "OpenAILive",
    "OpenAIRealtime",
    "UltravoxCall",
    "Verdict",
    "XaiGrokVoice",
]
