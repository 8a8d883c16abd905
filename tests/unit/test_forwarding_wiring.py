"""calls/forwarding.py: pass-through is wired once both legs can take it, whichever is ready
first (a Cloud API call whose agent joined before the WhatsApp leg's media opened forwarded
nothing either way: the half-done wiring was remembered as done)."""

from __future__ import annotations

import itertools
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.calls.forwarding import Forwarding
from bridge.media import LevelMeter
from bridge.trunks.media import TrunkMedia


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


class _Wire:
    """A leg's socket: the payloads it sent, by sequence number."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtp(self, plain: bytes) -> None:
        self.sent.append(plain[12:])

    def send_rtcp(self, plain: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def _g711(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, 7) + payload


@pytest.mark.parametrize("order", list(itertools.permutations(("opened", "joined", "sending"))))
async def test_a_lone_g711_phone_forwards_both_ways_whatever_order_the_call_starts_in(
    order: tuple[str, ...],
) -> None:
    """A WhatsApp call answered into a G.711 phone starts with three events in any order
    (bench.trunk's G.711 point: one call in ~560 forwarded nothing to WhatsApp once): the
    WhatsApp leg's media opened (the runtime's ``on_opened``), the phone joined (its
    participants changed) and the WhatsApp leg's sender running (DTLS up, no wiring call).
    Whatever the order, each side's packets then reach the other as they were (real legs:
    ``TrunkMedia`` stands in for the WhatsApp leg, the same RTP leg and track)."""
    whatsapp = TrunkMedia("wa", "PCMU", 0, None, lambda pcm: None, lambda now: None, _no_key)
    phone = TrunkMedia("phone", "PCMU", 0, None, lambda pcm: None, lambda now: None, _no_key)
    forwarding = Forwarding(bus(), {})  # type: ignore[arg-type]
    to_whatsapp, to_phone = _Wire(), _Wire()
    done: set[str] = set()
    t0 = time.monotonic()
    for n, event in enumerate(order):
        done.add(event)
        if event == "sending":
            whatsapp.leg.wire = to_whatsapp
            whatsapp.start()
        else:
            if event == "joined":
                phone.leg.wire = to_phone
                phone.start()
            leg = whatsapp if "opened" in done else None
            forwarding.update(leg, None, phone if "joined" in done else None)  # type: ignore[arg-type]
        # Packets both ways between the events (each leg's far end sends once it is up).
        phone.leg.receive_rtp(_g711(200 + n, b"\xff" * 160), t0 + 0.02 * n)
        whatsapp.leg.receive_rtp(_g711(900 + n, b"\xff" * 160), t0 + 0.02 * n)
    to_whatsapp.sent.clear()
    to_phone.sent.clear()
    up = [bytes([0x10 + i]) * 160 for i in range(5)]
    down = [bytes([0x60 + i]) * 160 for i in range(5)]
    for i in range(5):
        phone.leg.receive_rtp(_g711(203 + i, up[i]), t0 + 0.02 * (3 + i))
        whatsapp.leg.receive_rtp(_g711(903 + i, down[i]), t0 + 0.02 * (3 + i))
    assert to_whatsapp.sent == up and to_phone.sent == down
    # What was offered before the last event and not carried is counted, nothing after.
    assert set(whatsapp.track.refusals()) <= {"no_sender"} and phone.track.refusals() == {}
    whatsapp.stop()
    phone.stop()


def _no_key(digit: str, ms: int) -> None:
    pass
