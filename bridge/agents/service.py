"""Starts and stops a call's model connectors (``POST/DELETE /call/{callID}/agents``), routes
their tool calls, and runs the configured fallback when an agent cannot be reached again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..attachments.base import AttachmentHost
from ..config.groups import AGENT_PROVIDERS, AgentFallback, AgentSettings
from ..errors import BadRequest, BridgeError, CallStateError, Forbidden, NotFound
from ..http import HostAllow, RedirectRefused, url_parts
from . import events
from .agent import Agent
from .azure import AzureVoiceLive
from .capabilities import Prepared, Remembers
from .deepgram import DeepgramVoiceAgent
from .elevenlabs import ElevenLabsAgent
from .gemini import GeminiLive
from .openai import OpenAIRealtime
from .openai_live import OpenAILive
from .tools import (
    BRIDGE_TOOLS,
    WITHDRAWN,
    CallControls,
    bridge_tools,
    failure,
    run_bridge_tool,
)
from .ultravox import UltravoxCall
from .wire import ModelDialect, ToolCall
from .xai import XaiGrokVoice

log = logging.getLogger(__name__)

PROVIDERS = AGENT_PROVIDERS
MAX_AGENTS = 1
"""Agents one call may have talking at once."""


@dataclass(frozen=True)
class CheckedRequest:
    """An agent request :meth:`AgentService.check` found a call's agent would take."""

    provider: str
    session: dict[str, Any]
    dialect: ModelDialect
    key: str
    """The provider's configured key (``BRIDGE_AGENT_<PROVIDER>_API_KEY``; empty: none)."""
    url: str
    host: str


class AgentService:
    """Model connectors; URLs restricted to the ``BRIDGE_FORK_URL_ALLOW`` hosts, like forks."""

    def __init__(
        self, settings: AgentSettings, allow: tuple[str, ...], http: aiohttp.ClientSession
    ) -> None:
        self.settings = settings
        self.allow = HostAllow(allow)
        self._http = http
        self.controls: Callable[[AttachmentHost], CallControls] | None = None
        """What an agent's tools and fallback act through, per call (set by the API layer
        once the calls exist)."""

    def _dialect(self, provider: str, session: dict[str, Any]) -> tuple[ModelDialect, str]:
        """The provider's dialect and its configured key (``BRIDGE_AGENT_<PROVIDER>_API_KEY``)."""
        s = self.settings
        if provider == "openai-realtime":
            return OpenAIRealtime(session), s.agent_openai_api_key
        if provider == "xai":
            return XaiGrokVoice(session, s.agent_xai_session_s), s.agent_xai_api_key
        if provider == "azure-voice-live":
            return AzureVoiceLive(session), s.agent_azure_voice_live_api_key
        if provider == "deepgram":
            return DeepgramVoiceAgent(session), s.agent_deepgram_api_key
        if provider == "elevenlabs":
            return ElevenLabsAgent(session), s.agent_elevenlabs_api_key
        if provider == "ultravox":
            return UltravoxCall(session), s.agent_ultravox_api_key
        if provider == "openai-live":  # an OpenAI project key serves both OpenAI protocols
            live = OpenAILive(session, buffer_ms=s.agent_openai_live_buffer_ms)
            return live, s.agent_openai_live_api_key or s.agent_openai_api_key
        return GeminiLive(session), s.agent_gemini_api_key

    def check(self, body: dict[str, Any], where: str = "") -> CheckedRequest:
        """An agent request's provider, session and model URL, as a call's agent takes them:
        ``BadRequest`` for what it refuses (an unknown provider, a session its dialect refuses,
        a URL of another scheme, with credentials in it, or one its dialect refuses:
        ``url_refused``), ``Forbidden`` for a host not in ``BRIDGE_FORK_URL_ALLOW``. The one
        check: ``POST /call/{callID}/agents`` runs it, and so does a route's ``agent`` step
        when the route is made (``where`` names the step's field), so a route a call would
        refuse is refused at once."""
        provider = body.get("provider")
        if provider not in PROVIDERS:
            raise BadRequest(f"field '{where}provider' must be one of {', '.join(PROVIDERS)}")
        session = body.get("session") or {}
        if not isinstance(session, dict):
            raise BadRequest(f"field '{where}session' must be an object")
        dialect, default_key = self._dialect(provider, session)
        url = body.get("url", dialect.default_url)
        if url is None:
            raise BadRequest(f"field '{where}url' is required: {provider} has no default endpoint")
        # Ultravox's ``url`` is its REST API's base; every other, the socket's.
        schemes = dialect.url_schemes if isinstance(dialect, Prepared) else ("ws", "wss")
        must = f"field '{where}url' must be a {' or '.join(s + '://' for s in schemes)} URL"
        if not isinstance(url, str):
            raise BadRequest(must)
        parts = url_parts(url)
        if parts is None or parts.scheme not in schemes or not parts.hostname:
            raise BadRequest(must)
        if parts.username is not None or parts.password is not None:
            # (Sent beside the key's headers, or shown with the URL: the key is ``apiKey``.)
            raise BadRequest(
                f"field '{where}url' must not hold credentials: give the key as 'apiKey'"
            )
        if not self.allow.allows(parts):
            raise Forbidden(
                f"field '{where}url': host {parts.hostname[:64]!r} is not in BRIDGE_FORK_URL_ALLOW",
                code="url_not_allowed",
            )
        why = dialect.url_refused(url)
        if why is not None:
            raise BadRequest(f"field '{where}url': {why}")
        return CheckedRequest(provider, session, dialect, default_key, url, parts.hostname)

    async def resume(self, host: AttachmentHost, moved: dict[str, Any]) -> Agent:
        """Open a moved call's agent again here (``Agent.export``): same id, same request, the
        resumption handle where the protocol has one."""
        agent_id = moved.get("agentID")
        if not isinstance(agent_id, str) or not agent_id:
            raise BadRequest("a moved agent needs its 'agentID' (a string)")
        body = {k: v for k, v in moved.items() if k not in ("agentID", "resume", "context")}
        resume = moved.get("resume")
        context = [
            (str(line[0]), str(line[1]))
            for line in moved.get("context") or []
            if isinstance(line, list | tuple) and len(line) == 2
        ]
        return await self.start(
            host,
            body,
            agent_id=agent_id,
            resume=resume if isinstance(resume, str) else None,
            context=context,
        )

    async def start(
        self,
        host: AttachmentHost,
        body: dict[str, Any],
        *,
        agent_id: str | None = None,
        resume: str | None = None,
        context: list[tuple[str, str]] | None = None,
    ) -> Agent:
        checked = self.check(body)
        given = body.get("apiKey")
        if given is not None and not isinstance(given, str):
            raise BadRequest("field 'apiKey' must be a string")
        key = given or checked.key or None
        names = body.get("bridgeTools")
        tools = bridge_tools(names)
        talking = [a for a in host.attached("agent") if a.state != "failed"]  # (holds nothing)
        if len(talking) >= MAX_AGENTS:
            raise CallStateError(f"a call can have {MAX_AGENTS} agent at a time")
        if context and isinstance(checked.dialect, Remembers):
            checked.dialect.remember(context)  # a moved call: what was said opens its session
        agent = Agent(
            host,
            checked.dialect,
            checked.url,
            key,
            tools=tools,
            retries=self.settings.agent_retries,
            on_tool=self._tool,
            on_failed=self._failed,
            agent_id=agent_id,
            resume=resume,
            context=context,
        )
        # The key only when the request gave one: an agent on the configured default key
        # uses the default of whichever worker carries the call (a handover, an adoption).
        agent.request = {
            "provider": checked.provider,
            "url": checked.url,
            "session": checked.session,
        }
        if given:
            agent.request["apiKey"] = given
        if names:
            agent.request["bridgeTools"] = names
        agent.controls = self.controls(host) if self.controls is not None else None
        host.attach(agent)  # counted against the limit while it connects
        try:
            await agent.start(self._http)
        except (aiohttp.ClientError, TimeoutError, OSError, RedirectRefused) as exc:
            host.detach(agent)
            # The reason, never the request (its headers hold the key).
            why = str(exc)[:120] if isinstance(exc, ConnectionError) else type(exc).__name__
            log.warning(
                "call %s: no %s agent at %s: %s", host.call_id, checked.provider, checked.host, why
            )
            raise BadRequest(
                f"cannot open the model's WebSocket or configure its session: {why}",
                code="agent_connect_failed",
            ) from None
        except BaseException:
            host.detach(agent)
            raise
        return agent

    @staticmethod
    def find(host: AttachmentHost, agent_id: str) -> Agent:
        agent: Agent | None = next((a for a in host.attached("agent") if a.id == agent_id), None)
        if agent is None:
            raise NotFound(f"no agent {agent_id[:80]!r} on this call")
        return agent

    async def stop(self, host: AttachmentHost, agent_id: str) -> None:
        agent = self.find(host, agent_id)
        await agent.close(stop="")  # (a close under way already: waited for, told once)

    async def _tool(self, agent: Agent, call: ToolCall) -> None:
        if agent.model.stopping:
            # Read while the stopped agent's socket closes (its call may be over): a stopped
            # agent acts on the call no more, nor asks the app.
            log.info(
                "call %s: agent %s: tool %s called as the agent stopped: not run",
                agent.host.call_id,
                agent.id,
                call.name[:40],
            )
            return
        controls = agent.controls
        granted, said = agent.model.tools, agent.voice.played_out
        answer = (
            await run_bridge_tool(
                controls, call, granted, said, lambda: call.call_id in agent.tool_calls.withdrawn
            )
            if controls
            else None
        )
        if answer is not None:
            why = failure(answer)
            if why is not None and why != WITHDRAWN:  # the caller meets it (no transfer...)
                log.warning(
                    "call %s: agent %s: tool %s failed: %s",
                    agent.host.call_id,
                    agent.id,
                    call.name,
                    why,
                )
            agent.tool_calls.answer(call, answer)
            if call.name == BRIDGE_TOOLS["transfer"].name and answer.get("ok"):
                # The call is a human's now: the model leaves it, as a participant that hands
                # the call over does (it would go on hearing the caller and answering them).
                await agent.close(stop="transferred")  # (a task of the agent: ended by it)
            return
        if not agent.tool_calls.wait(call, f"call {agent.host.call_id}: agent {agent.id}"):
            return
        agent.host.emit(
            events.TOOL_CALL,
            agentID=agent.id,
            provider=agent.dialect.provider,
            toolCallID=call.call_id,
            name=call.name,
            arguments=call.arguments,
        )

    def tool_result(self, host: AttachmentHost, agent_id: str, body: dict[str, Any]) -> None:
        """The app answers a tool call the model made (``agent.tool_call``)."""
        agent = self.find(host, agent_id)
        call = agent.tool_calls.pending.pop(str(body.get("toolCallID")), None)
        asked = f"the answer to tool call {str(body.get('toolCallID'))[:80]}"
        if call is None or not agent.model.current(call.session, asked):
            withdrawn = str(body.get("toolCallID")) in agent.tool_calls.withdrawn
            why = " (the model cancelled it: agent.tool_cancelled)" if withdrawn else ""
            raise NotFound(f"no tool call of that toolCallID waits for an answer{why}")
        agent.tool_calls.answer(call, body.get("output"))

    async def _failed(self, agent: Agent, reason: str) -> None:
        fallback = self.settings.agent_fallback
        controls = agent.controls
        if controls is None or fallback is AgentFallback.KEEP:
            return
        try:
            if fallback is AgentFallback.MESSAGE and self.settings.agent_fallback_file:
                await controls.play(self.settings.agent_fallback_file)
            elif fallback is AgentFallback.HUMAN:
                await controls.transfer(None)
            elif fallback is AgentFallback.HANGUP:
                await controls.hang_up()
        except BridgeError as exc:
            log.warning("call %s: agent fallback %s failed: %s", agent.host.call_id, fallback, exc)
