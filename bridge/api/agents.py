"""``/call/{callID}/agents``: realtime model agents on a call (OpenAI Realtime, Gemini Live),
and the app's answers to their tool calls."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..agents import CallControls
from ..attachments import AttachmentHost, PlaybackService
from ..calls import CallManager
from ..calls.runtime import CallRuntime
from ..errors import CallStateError
from ..media import Role
from .keys import AGENTS, MANAGER
from .schema import read_body

routes = web.RouteTableDef()


class RuntimeControls(CallControls):
    """What an agent's tools and fallback do, through the call's runtime and the manager."""

    def __init__(self, manager: CallManager, runtime: CallRuntime, playback: PlaybackService):
        self._manager = manager
        self._runtime = runtime
        self._playback = playback

    async def hang_up(self) -> None:
        await self._manager.hangup(self._runtime.call_id)

    async def transfer(self, participant_id: str | None) -> str:
        if participant_id is None:
            sessions = self._runtime.participants.sessions.values()
            humans = [s for s in sessions if s.role is not Role.AGENT]
            if not humans:
                raise CallStateError("no human participant on this call to hand it to")
            participant_id = humans[0].participant_id
        await self._runtime.participants.roles.transfer(participant_id)
        return participant_id

    async def send_dtmf(self, digits: str) -> None:
        await self._runtime.dtmf.send(digits, source="agent")

    async def hold(self, held: bool) -> None:
        await self._runtime.hold.set(held)  # (a resume stops the music an app's hold started)

    async def play(self, file: str) -> None:
        await self._playback.start(self._runtime, {"file": file})


def show_agents(runtime: CallRuntime) -> None:
    """The call's snapshot lists its agents from now on."""
    runtime.call.agents = lambda: [a.snapshot() for a in runtime.attached("agent")]


def controls_for(
    manager: CallManager, playback: PlaybackService
) -> Callable[[AttachmentHost], CallControls]:
    """The agents' way to act on a call (``AgentService.controls``)."""

    def controls(host: AttachmentHost) -> CallControls:
        runtime = manager.runtime(host.call_id)
        show_agents(runtime)
        return RuntimeControls(manager, runtime, playback)

    return controls


@routes.post("/call/{callID}/agents")
async def start_agent(request: web.Request) -> web.Response:
    body = await read_body(request, "AgentRequest")
    runtime = request.app[MANAGER].runtime(request.match_info["callID"])
    show_agents(runtime)
    agent = await request.app[AGENTS].start(runtime, body)
    return web.json_response({**agent.snapshot(), "callID": runtime.call_id}, status=201)


@routes.delete("/call/{callID}/agents/{agentID}")
async def stop_agent(request: web.Request) -> web.Response:
    runtime = request.app[MANAGER].runtime(request.match_info["callID"])
    agent_id = request.match_info["agentID"]
    await request.app[AGENTS].stop(runtime, agent_id)
    return web.json_response({"agentID": agent_id, "stopped": True})


@routes.post("/call/{callID}/agents/{agentID}/tools")
async def tool_result(request: web.Request) -> web.Response:
    """The app's answer to an ``agent.tool_call`` the bridge does not answer itself."""
    body = await read_body(request, "AgentToolResult")
    runtime = request.app[MANAGER].runtime(request.match_info["callID"])
    request.app[AGENTS].tool_result(runtime, request.match_info["agentID"], body)
    return web.json_response({"toolCallID": body["toolCallID"], "accepted": True})
