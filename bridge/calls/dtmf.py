"""A call's DTMF, owned by its runtime: key presses out to WhatsApp and in-band ones in.

* Out (``POST /call/dtmf``, a browser's ``RTCDTMFSender``): on a WhatsApp leg that carries
  DTMF out of band (``engines.DtmfLeg``: the Cloud API's RFC 4733) the presses go to the leg;
  on PCM engines :class:`DtmfTones`, an uplink source on the bus, mixes Q.23 tones into what
  WhatsApp hears (on the bus's clock, with the agent's microphone, and through the uplink taps,
  so recordings and forks have them).
* In: :class:`InbandDtmf`, a downlink tap, runs :class:`~bridge.audio.dtmf.DtmfToneDetector`
  on what the WhatsApp peer says (PCM engines only: the Cloud API reports RFC 4733 events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..audio.dtmf import DtmfToneDetector, ToneSequence
from ..audio.pcm import Pcm
from ..media import BusFrame, CallBus

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
        self.detector.feed(frame.pcm)

    def close(self) -> None:
        self.bus.remove_downlink_tap(self._tap)
