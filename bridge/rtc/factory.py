"""``SessionFactory``: the one place that turns a call's offer into a configured session."""

from __future__ import annotations

from ..config import IceSettings, MediaSettings
from ..media import CallBus, Role
from .connected import ConnectedLeg
from .ice import server_rtc_configuration
from .session import DtmfCallback, StateCallback, WebRTCSession
from .turn import TurnProvider


class SessionFactory:
    """Makes browser sessions with the media and ICE settings and fresh TURN credentials."""

    def __init__(self, media: MediaSettings, ice: IceSettings, turn: TurnProvider) -> None:
        self.media = media
        self.ice = ice
        self.turn = turn

    async def create(
        self,
        call_id: str,
        bus: CallBus,
        on_state: StateCallback,
        *,
        participant_id: str = "agent",
        role: Role = Role.AGENT,
        on_dtmf: DtmfCallback | None = None,
    ) -> WebRTCSession:
        grant = await self.turn.grant(f"bridge-{call_id[:12]}")
        configuration = server_rtc_configuration(self.ice, grant)
        return WebRTCSession(
            call_id,
            bus,
            self.media,
            self.ice,
            on_state,
            configuration,
            participant_id=participant_id,
            role=role,
            on_dtmf=on_dtmf,
        )

    async def connected(self, name: str) -> ConnectedLeg:
        """An agent's always-connected leg (``connected.py``), named for the agent."""
        grant = await self.turn.grant(f"agent-{name[:12]}")
        return ConnectedLeg(name, self.media, self.ice, server_rtc_configuration(self.ice, grant))
