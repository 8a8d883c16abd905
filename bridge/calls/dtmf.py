"""A call's DTMF, owned by its runtime (:class:`CallDtmf`): key presses out to WhatsApp and
in from it, whichever way they travel.

* Out (``POST /call/dtmf``, a browser's ``RTCDTMFSender``): on a WhatsApp leg that carries
  DTMF out of band (``engines.DtmfLeg``: the Cloud API's RFC 4733) the presses go to the leg;
  on PCM engines :class:`DtmfTones`, an uplink source on the bus, mixes Q.23 tones into what
  WhatsApp hears (on the bus's clock, with the agent's microphone, and through the uplink taps,
  so recordings and forks have them).
* In: :class:`InbandDtmf`, a downlink tap, runs :class:`~bridge.audio.dtmf.DtmfToneDetector`
  on what the WhatsApp peer says (PCM engines only: the Cloud API reports RFC 4733 events).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..audio.dtmf import DtmfToneDetector, ToneSequence
from ..audio.pcm import Pcm
from ..engines import DtmfLeg
from ..engines.channels import MediaChannel, MediaClosed
from ..errors import CallStateError
from ..media import BusFrame, CallBus, Role
from ..metrics import Metrics
from ..tasks import TaskSet
from .model import Call, CallState

log = logging.getLogger(__name__)

MAX_QUEUED = 128
"""Key presses a call may have waiting to be played; more are refused (409)."""


class DtmfTones:
    """Queued key presses as in-band tones: an ``UplinkSource`` added to the bus while it has
    presses to play (the bus removes it when it runs out; :meth:`add` adds it back)."""

    to_downlink = False

    def __init__(self, bus: CallBus) -> None:
        self.bus = bus
        self._tones = ToneSequence(MAX_QUEUED)
        self._done: deque[tuple[int, Callable[[], None] | None]] = deque()
        self._on_bus = False

    @property
    def queued(self) -> int:
        return len(self._tones)

    def add(
        self, digits: str, duration_ms: int, gap_ms: int, done: Callable[[], None] | None
    ) -> None:
        """Queue presses (``ValueError`` when full); ``done`` once the last gap has played."""
        self._tones.add(digits, duration_ms, gap_ms)
        self._done.append((len(digits), done))
        if not self._on_bus and not self.bus.closed:
            self._on_bus = True
            self.bus.add_source(self)

    def next_frame(self) -> Pcm | None:
        step = self._tones.next_frame()
        if step is None:
            return None
        pcm, finished = step
        for _ in finished:
            left, done = self._done[0]
            if left > 1:
                self._done[0] = (left - 1, done)
                continue
            self._done.popleft()
            if done is not None:
                done()
        return pcm

    def finished(self) -> None:
        self._on_bus = False

    def close(self) -> None:
        self._tones.clear()
        self._done.clear()
        if self._on_bus:
            self.bus.remove_source(self)


class InbandDtmf:
    """The downlink tap that hears the WhatsApp peer's key presses (see the module doc)."""

    def __init__(self, bus: CallBus, on_digit: Callable[[str, int], None]) -> None:
        self.bus = bus
        self.detector = DtmfToneDetector(on_digit)
        bus.add_downlink_tap(self._tap)

    def _tap(self, frame: BusFrame) -> None:
        self.detector.feed(frame.pcm, frame.energy)  # summed once already, for the bus's meter

    def close(self) -> None:
        self.bus.remove_downlink_tap(self._tap)


class WhatsAppMedia(Protocol):
    """What key presses need of the call's engine media (``calls/engine_media.py``)."""

    @property
    def channel(self) -> MediaChannel | None: ...

    async def open(self) -> None: ...


class CallDtmf:
    """A call's key presses both ways: out to WhatsApp (:meth:`send`, a browser's presses
    passed on), in from it (:meth:`on_whatsapp`, the one way in). See the module docstring."""

    def __init__(
        self,
        call: Call,
        bus: CallBus,
        media: WhatsAppMedia,
        metrics: Metrics,
        emit: Callable[..., None],
        tasks: TaskSet,
    ) -> None:
        self.call = call
        self.bus = bus
        self.media = media
        self.metrics = metrics
        self.emit = emit
        self._tasks = tasks
        self._tones: DtmfTones | None = None
        self._closed = False

    async def send(
        self, digits: str, duration_ms: int = 100, gap_ms: int = 60, source: str = "api"
    ) -> str:
        """Send key presses to the WhatsApp peer: RFC 4733 on a leg that carries it (cloudapi),
        else in-band tones mixed into the uplink. Returns ``rfc4733`` or ``inband``;
        ``call.dtmf.sent`` follows once the last press (and its gap) went out."""
        if self._closed or self.call.state is not CallState.ACTIVE:
            raise CallStateError(f"call {self.call.id} is {self.call.state}, not active")
        if self.media.channel is None:  # nobody used the bus yet: the key presses do
            self.bus.add_user("dtmf")
            await self.media.open()
        if self._closed or not self.call.live:
            raise CallStateError(f"call {self.call.id} has ended")
        channel = self.media.channel
        data = {"digits": digits, "durationMs": duration_ms, "gapMs": gap_ms, "source": source}

        def sent(method: str) -> Callable[[], None]:
            def done() -> None:
                if not self._closed:
                    self.emit("call.dtmf.sent", **data, method=method)

            return done

        try:
            if isinstance(channel, DtmfLeg):
                channel.send_dtmf(digits, duration_ms, gap_ms, sent("rfc4733"))
                method = "rfc4733"
            else:
                if self._tones is None:
                    self._tones = DtmfTones(self.bus)
                self._tones.add(digits, duration_ms, gap_ms, sent("inband"))
                method = "inband"
        except ValueError as exc:
            raise CallStateError(f"call {self.call.id}: {exc}") from None
        except MediaClosed as exc:
            raise CallStateError(f"call {self.call.id}: the WhatsApp leg is down ({exc})") from None
        self.metrics.dtmf.labels("sent", source).inc(len(digits))
        return method

    def on_browser(self, participant_id: str, role: Role, digit: str, duration_ms: int) -> None:
        """A browser pressed a key (its ``RTCDTMFSender``): tell everyone and, from a
        participant WhatsApp hears (agent, barge), pass it on like ``POST /call/dtmf``."""
        if self._closed or not self.call.live:
            return
        self.metrics.dtmf.labels("received", "agent").inc()
        self.emit(
            "call.dtmf",
            digit=digit,
            durationMs=duration_ms,
            source="agent",
            participantID=participant_id,
        )
        if role not in (Role.AGENT, Role.BARGE) or self.bus.conference.held:
            return
        duration = max(40, min(2000, duration_ms))
        self._tasks.spawn(self._pass_on(digit, duration), "dtmf-agent")

    async def _pass_on(self, digit: str, duration_ms: int) -> None:
        try:
            await self.send(digit, duration_ms, 60, source="agent")
        except CallStateError as exc:
            log.info("call %s: agent's key press not passed on: %s", self.call.id, exc.message)

    def on_whatsapp(self, digit: str, duration_ms: int) -> None:
        """The WhatsApp user pressed a key: the one way in, whether the press was heard as
        tones on a PCM engine's downlink (:class:`InbandDtmf`) or reported by the engine (an
        RFC 4733 ``DTMF`` event on the Cloud API leg)."""
        if self._closed or not self.call.live:
            return
        self.metrics.dtmf.labels("received", "whatsapp").inc()
        self.emit("call.dtmf", digit=digit, durationMs=duration_ms, source="whatsapp")

    def close(self) -> None:
        self._closed = True
        if self._tones is not None:
            self._tones.close()
