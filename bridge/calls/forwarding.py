"""The pass-through policy of one call: when Opus packets go untouched between the WhatsApp
leg and the agent's browser (the mechanics are ``rtc/passthrough.py``'s).

On a call whose WhatsApp side is a WebRTC leg, packets are forwarded untouched while nothing
else is mixed in: towards the browser while it hears only the WhatsApp user (one participant,
no hold, nothing played to it); towards WhatsApp while it hears only the agent (not muted,
nothing played, no key tones). Each sender checks that per packet (a yes is kept for 20 ms:
``PassThrough.permitted``), so mixing can start and stop mid-call; this module only wires the
two ends when the agent or the leg changes.

It also says when a forwarded direction need not be decoded at all: while its packets are
forwarded (each offer says whether the target's sender carried its packet) and nothing reads
its PCM on the bus (no recorder, fork, socket, model agent or
speech detector: the bus's taps), the sending leg's playout only counts them
(``rtc/uplink.py``'s idle leg). A tap added, or mixing begun, is heard from the next packet.

A phone alone on the call that speaks the WhatsApp leg's codec (``trunks/media.py``: Opus on an
Opus trunk, or G.711 when Meta offered it and the leg was answered with it,
``audio.additional_codecs``; issue 48) is wired the same way, with the same objects: WhatsApp's
packets to it through a ``PassThrough`` into its track (``TrunkMedia.forward_from``, as a
browser's) while it hears only the WhatsApp user, its packets to WhatsApp while WhatsApp hears
only it. Both directions are still decoded for the conference while something on the bus reads
them; only packets of one 20 ms frame are forwarded (what each leg's peer was told to expect). A
browser that joins then unwires it, and a WhatsApp leg on G.711 is decoded and coded again for
the browser (its own codec stays the one negotiated with Meta).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ..engines import WebRTCLeg
from ..media import CallBus, LevelMeter
from ..rtc import WebRTCSession

if TYPE_CHECKING:
    from ..rtc.passthrough import PassThrough


class PhonePackets(Protocol):
    """A trunk leg's RTP as pass-through sees it (``trunks/media.py`` ``TrunkMedia``), in the
    WhatsApp leg's codec (Opus, or G.711 when Meta was answered with it)."""

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """The phone's sender takes WhatsApp's packets offered to the returned pass-through
        while ``allowed()`` (as a WebRTC leg's :meth:`forward_from`)."""

    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """The phone's packets also to ``offer`` as they arrive, with that time; a packet
        ``offer`` carried is decoded only while ``needs_pcm(at)``, else its level sampled into
        ``meters`` (as a WebRTC leg's :meth:`forward_to`)."""


class HalfWiring(NamedTuple):
    """A wiring one of whose ends had not opened yet: the pass-throughs it made (``down``:
    WhatsApp → browser, ``up``: browser → WhatsApp), taken again by the next try rather than
    made anew."""

    session: WebRTCSession
    leg: WebRTCLeg
    down: PassThrough | None
    up: PassThrough | None


class Forwarding:
    """Which browser session WhatsApp's packets go to, and the checks that allow it."""

    def __init__(self, bus: CallBus, sessions: dict[str, WebRTCSession]) -> None:
        self.bus = bus
        self.sessions = sessions
        self._to: WebRTCSession | None = None
        """The browser session WhatsApp's packets are forwarded to."""
        self._half: HalfWiring | None = None
        self._phone: PhonePackets | None = None
        """The phone WhatsApp's packets are forwarded to (no browser on the call)."""

    def update(
        self,
        leg: WebRTCLeg | None,
        session: WebRTCSession | None,
        phone: PhonePackets | None = None,
    ) -> None:
        """Wire ``leg`` and the agent's ``session`` for pass-through (or unwire them); with no
        browser, ``phone`` (the only participant, on the leg's codec) instead."""
        if leg is None:
            return
        if session is None and phone is not None:
            if phone is not self._phone:
                self._unwire_phone(leg)
                self._wire_phone(leg, phone)
            return
        if self._phone is not None:
            self._unwire_phone(leg)
        if session is self._to and session is not None:
            return
        if self._to is not None:
            self._to.forward_to(None)
            self._to.report_loss_beyond(None)
        self._to = None
        if session is None or not session.media.opus_passthrough or leg.codec != "opus":
            # A browser speaks Opus: a WhatsApp leg on G.711 is decoded and coded for it.
            self._half = None
            leg.forward_to(None)
            return
        bus, conference, sessions = self.bus, self.bus.conference, self.sessions
        # A direction already made on a try before keeps its PassThrough: a new one mid-stream
        # would number the packets it forwards afresh (baresip saw four at another offset).
        half, self._half = self._half, None
        if half is not None and (half.session, half.leg) != (session, leg):
            half = None
        down = half.down if half is not None else None
        if down is None:
            down = session.forward_from(lambda: len(sessions) == 1 and not conference.mixed)
        if down is None:
            leg.forward_to(None)
        else:
            # A packet the browser's sender did not carry (mixing began, it does not run) is
            # decoded: the offer says so; else only while something on the bus reads it.
            leg.forward_to(
                down.offer,
                lambda at: bus.downlink_tapped,
                (bus.stats.whatsapp_in, session.sent_level),  # what each side's meter hears
            )

        def agent_only() -> bool:
            return (
                len(sessions) == 1
                and not conference.mixed
                and not bus.muted
                and not bus.has_sources
            )

        up = half.up if half is not None else None
        if up is None:
            up = leg.forward_from(agent_only)
        if up is None:
            session.forward_to(None)
        else:
            session.forward_to(
                up.offer,
                lambda at: bus.uplink_tapped,
                (session.mic_level, bus.stats.whatsapp_out),
            )
            # The browser's packets reach WhatsApp as they are: its FEC must cover the loss on
            # the WhatsApp leg too (the larger of the two in the reports it gets).
            session.report_loss_beyond(lambda: leg.far_end_loss if agent_only() else 0.0)
        # Remembered only once both ends took it: a leg whose media has not opened yet (no
        # sender, no receiver) is wired again when it opens (``on_opened``), not skipped as
        # done — which left such a call forwarding nothing either way.
        self._to = session if down is not None and up is not None else None
        if self._to is None:
            self._half = HalfWiring(session, leg, down, up)

    def _wire_phone(self, leg: WebRTCLeg, phone: PhonePackets) -> None:
        bus, conference, sessions = self.bus, self.bus.conference, self.sessions
        if self._to is not None:  # the browser that had it is gone
            self._to.forward_to(None)
            self._to.report_loss_beyond(None)
            self._to = None

        def phone_only() -> bool:
            # One participant, the agent, nothing played or held: ``conference.mixed`` is false.
            return not sessions and not conference.mixed

        def phone_alone_heard() -> bool:
            return phone_only() and not bus.muted and not bus.has_sources

        down = phone.forward_from(phone_only)
        if down is None:
            leg.forward_to(None)
        else:
            # Decoded whenever the phone's sender did not carry the packet (the offer says):
            # a packet it refused (not one 20 ms frame, a key waiting, a hold) is its to
            # encode from the bus.
            leg.forward_to(down.offer, lambda at: bus.downlink_tapped, (bus.stats.whatsapp_in,))
        up = leg.forward_from(phone_alone_heard)
        if up is None:
            phone.forward_to(None)
        else:
            # While its packets are not decoded, what WhatsApp hears is metered from them
            # (the call report's level of what was sent), as a browser's is.
            phone.forward_to(up.offer, lambda at: bus.uplink_tapped, (bus.stats.whatsapp_out,))
        self._phone = phone if up is not None else None  # as for a browser: wired again later

    def _unwire_phone(self, leg: WebRTCLeg) -> None:
        phone, self._phone = self._phone, None
        if phone is None:
            return
        phone.forward_to(None)
        leg.forward_to(None)  # nothing offered to the phone's pass-through: its run ends
