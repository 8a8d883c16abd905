"""calls/forwarding.py: pass-through is wired once both legs can take it, whichever is ready
first (a Cloud API call whose agent joined before the WhatsApp leg's media opened forwarded
nothing either way: the half-done wiring was remembered as done)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bridge.calls.forwarding import Forwarding
from bridge.media import LevelMeter


class End:
    """One leg as the policy sees it: it can forward only once its media is open."""

    def __init__(self, opened: bool, codec: str = "opus") -> None:
        self.opened = opened
        self.codec = codec
        self.forwarding_to: Any = None
        self.far_end_loss = 0.0
        self.media = SimpleNamespace(opus_passthrough=True)
        self.mic_level = self.sent_level = LevelMeter()

    def forward_from(self, allowed: Any) -> Any:
        return SimpleNamespace(offer=object(), permitted=allowed) if self.opened else None

    def forward_to(self, offer: Any, needs_pcm: Any = None, meters: Any = ()) -> None:
        if self.opened:  # as WebRTCLeg.forward_to: nothing to hand packets to before it opens
            self.forwarding_to = offer

    def report_loss_beyond(self, loss: Any) -> None:
        pass


def bus() -> Any:
    stats = SimpleNamespace(whatsapp_in=LevelMeter(), whatsapp_out=LevelMeter())
    conference = SimpleNamespace(mixed=False)
    return SimpleNamespace(
        conference=conference,
        muted=False,
        has_sources=False,
        stats=stats,
        downlink_tapped=False,
        uplink_tapped=False,
    )


def test_the_agent_before_the_whatsapp_legs_media_is_wired_when_it_opens() -> None:
    browser, whatsapp = End(opened=True), End(opened=False)
    sessions = {"agent": browser}
    forwarding = Forwarding(bus(), sessions)  # type: ignore[arg-type]
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # the agent joined first
    assert whatsapp.forwarding_to is None and browser.forwarding_to is None
    whatsapp.opened = True
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # the leg's on_opened
    assert whatsapp.forwarding_to is not None and browser.forwarding_to is not None


def test_a_wired_agent_is_not_wired_again() -> None:
    browser, whatsapp = End(opened=True), End(opened=True)
    forwarding = Forwarding(bus(), {"agent": browser})  # type: ignore[arg-type]
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]
    first = whatsapp.forwarding_to
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]
    assert first is not None and whatsapp.forwarding_to is first


def test_a_direction_wired_is_kept_while_the_other_waits_for_its_end() -> None:
    """The browser's sender opens after its offer: WhatsApp → browser waits for it, and the
    browser → WhatsApp direction wired at once is not made anew meanwhile (a new PassThrough
    mid-stream renumbers what it forwards: baresip saw four packets at another offset)."""
    browser, whatsapp = End(opened=False), End(opened=True)
    made = []
    forward_from = whatsapp.forward_from
    whatsapp.forward_from = lambda allowed: made.append(forward_from(allowed)) or made[-1]  # type: ignore[method-assign]
    forwarding = Forwarding(bus(), {"agent": browser})  # type: ignore[arg-type]
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # the offer: no sender yet
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # a recording started
    assert len(made) == 1 and whatsapp.forwarding_to is None
    browser.opened = True
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # the browser's leg opened
    assert len(made) == 1 and whatsapp.forwarding_to is not None
    forwarding.update(whatsapp, None)  # type: ignore[arg-type]  # the agent left
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]  # and came back
    assert len(made) == 2


def test_a_whatsapp_leg_on_g711_is_never_forwarded_to_a_browser() -> None:
    """Meta answered in G.711 (for a PBX phone); a browser joining hears it decoded and coded
    again as Opus: nothing is forwarded either way."""
    browser, whatsapp = End(opened=True), End(opened=True, codec="PCMA")
    forwarding = Forwarding(bus(), {"agent": browser})  # type: ignore[arg-type]
    forwarding.update(whatsapp, browser)  # type: ignore[arg-type]
    assert whatsapp.forwarding_to is None and browser.forwarding_to is None
