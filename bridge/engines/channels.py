"""What the pump moves a call's audio through: an engine's media channel, and the
capabilities a channel may add (each a protocol below, checked with ``isinstance``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..audio.pcm import Pcm
from ..audio.receiver import ReceiverStats
from ..media.ports import ClockedPort, Plug
from ..media.stats import LevelMeter, ReceiveStats

if TYPE_CHECKING:  # the protocols name them; importing aiortc stays the engines' choice
    from ..rtc.passthrough import PassThrough
    from ..rtc.quality import Quality


class MediaClosed(ConnectionError):
    """The engine's media channel for a call has closed."""


class MediaFatal(MediaClosed):
    """The media channel cannot work (e.g. a format mismatch): do not reconnect."""


class MediaChannel(Protocol):
    """A full-duplex 16 kHz mono s16 PCM channel to the engine for one call."""

    async def send(self, pcm: Pcm) -> None:
        """Send one 20 ms bus frame towards the WhatsApp peer."""

    async def recv(self) -> Pcm:
        """Next chunk of the peer's audio (any length); raises :class:`MediaClosed` at end."""

    async def close(self) -> None:
        """Close the channel (idempotent)."""


@runtime_checkable
class ClockedChannel(Protocol):
    """A media channel that is a leg of this worker's own (the Cloud API's WhatsApp side,
    whose receiver already de-jitters on the worker clock and whose sender is paced by it; the
    simulator's far end, which keeps no clock of its own): the pump joins the call for it as the
    WhatsApp side and plugs the port it gets into it (:meth:`plug`), and moves nothing itself:
    no task, no queue, no reframing, no second de-jitter stage."""

    def plug(self, port: ClockedPort) -> None:
        """From now on hand each frame it makes to ``port.accept`` and send what
        ``port.take`` gives, each in its phase of the clock (a WhatsApp leg's receive and send
        phases; the simulator's engine phase), and tell ``port.ended`` when the leg fails or
        closes (at once if it has already)."""

    async def close(self) -> None:
        """Unplug (idempotent); a WhatsApp leg itself stays its owner's to close."""


@runtime_checkable
class OpensInBackground(Protocol):
    """A media channel that opens (and reopens) its socket in the background (the polled
    engines' ``ReconnectingChannel``): whoever needs the socket open waits for it."""

    async def wait_connected(self, timeout: float) -> bool:
        """Whether a socket is open within ``timeout`` seconds."""


class WebRTCLeg(Protocol):
    """A WebRTC peer connection carrying a call's WhatsApp side (the cloudapi engine's
    ``WhatsAppPeer``, an ``rtc.PeerLeg``): the runtime samples its RTP/RTCP quality like the
    browser's, labelled ``leg="whatsapp"``, and forwards Opus packets through it."""

    mos: float | None
    codec: str
    """What it speaks with Meta: ``opus``, or ``PCMU``/``PCMA`` when it answered a G.711 offer
    (``audio.additional_codecs``): packets are forwarded only to a leg of the same codec."""

    @property
    def receive_stats(self) -> ReceiveStats:
        """Its Opus receiver's counters (the metrics sum them with ``leg="whatsapp"``)."""

    @property
    def timeline_stats(self) -> tuple[ReceiverStats | None, float | None]:
        """Its receiver's cumulative counters and the last round-trip time (seconds), read
        once a second for the call's timeline (``calls/reports.py``)."""

    def forward_to(
        self,
        offer: Callable[[int, int, bytes, float], bool] | None,
        needs_pcm: Callable[[float], bool] | None = None,
        meters: tuple[LevelMeter, ...] = (),
    ) -> None:
        """Packets from here go there: also hand each Opus packet it receives, untouched, to
        ``offer(seq, timestamp, payload, at)``, ``at`` its arrival (pass-through to the
        browser), which says whether it carried each; ``None`` stops. While it does and
        ``needs_pcm(at)`` says no, they are not decoded (nothing on the bus needs them) but for
        a level sample a second, into ``meters``."""

    def forward_from(self, allowed: Callable[[], bool]) -> PassThrough | None:
        """Packets from there go here: send the browser's Opus packets (offered to the
        returned ``PassThrough``) untouched while ``allowed()``; ``None`` if it cannot."""

    @property
    def far_end_loss(self) -> float:
        """The share of what it sends that WhatsApp's receiver reports lost (latest sample)."""

    async def sample_quality(self) -> Quality | None:
        """The change of its RTP/RTCP counters since the last sample."""

    def leg_json(self) -> dict[str, Any]:
        """Its numbers for ``GET /call/{callID}/stats``."""


@runtime_checkable
class WebRTCChannel(Protocol):
    """A media channel that is carried by a WebRTC peer connection of its own (the cloudapi
    engine's): the runtime reaches that peer directly as :attr:`leg`."""

    @property
    def leg(self) -> WebRTCLeg:
        """The peer connection under the channel."""


@runtime_checkable
class DtmfLeg(Protocol):
    """A media channel that carries DTMF out of band (cloudapi: RFC 4733 events); on the
    others the runtime mixes in-band tones into the uplink instead."""

    def send_dtmf(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None = None
    ) -> None:
        """Queue key presses (``ValueError`` when the queue is full, ``MediaClosed`` when the
        leg is down); ``done`` is called once the last one was sent."""


class LegPort:
    """An in-worker leg's side of its door into the call (a leg to Meta's; the sim's far end's,
    on its engine phase): what its receiver decodes goes to the plugged port on the clock's
    receive phase (nowhere while none is: a ringing call has no listener), what its sender
    encodes is taken from it on the send phase (:attr:`source`: silence while none is), and
    the leg's end is told to it once."""

    def __init__(self) -> None:
        self.source = Plug()
        """What the leg's sender (``OpusBusTrack``) takes its frames from."""
        self.frames = 0
        """Frames the leg decoded (plugged or not)."""
        self.over: str | None = None
        """Why the leg's media ended (it failed or closed), once it has."""

    def received(self, pcm: Pcm) -> None:
        """The leg's receiver's frame of this tick (its ``Playout``, the receive phase)."""
        self.frames += 1
        port = self.source.port
        if port is not None:
            port.accept(pcm)

    def plug(self, port: ClockedPort) -> None:
        """The call's door from now on; a leg already over tells it at once."""
        if self.over is not None:
            port.ended(self.over)
            return
        self.source.port = port

    def unplug(self) -> None:
        self.source.port = None

    def end(self, why: str) -> None:
        """The leg failed or closed: tell the plugged port, once (idempotent)."""
        if self.over is not None:
            return
        self.over = why
        port, self.source.port = self.source.port, None
        if port is not None:
            port.ended(why)
