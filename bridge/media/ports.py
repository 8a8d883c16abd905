"""The typed ends a 20 ms frame moves between on the worker clock (``media/clock.py``).

A leg that lives in this worker is a *clocked port*: in the clock's receive phase it hands its
frame to a :class:`FrameSink` (``accept``), in its send phase it takes its frame from a
:class:`FrameSource` (``take``) — the same tick, no task, no queue between them.

Every in-worker leg has one door into the call, the same for all: the
``media/conference.py`` ``CallPort`` that ``Conference.join`` gives it, at once the sink for
what the leg received and the source of what it sends (a :class:`ClockedPort`, and a
:class:`FrameSource`); the conference routes both by the leg's role:

- a browser's or a trunk phone's port accepts its microphone frame (to the mix) and gives its
  track what the participant hears (its ``DownlinkSink``, a jitter buffer);
- the WhatsApp side's port (a clocked WhatsApp leg, DTLS or SDES, or the simulator's far end,
  plugged in by ``engines/pump.py``) accepts the WhatsApp user's frame (the bus's downlink)
  and gives the leg's sender this tick's uplink frame;
- :class:`Plug` is where a leg's sender takes from while its port may or may not be plugged in
  (a ringing call has no bus yet: its sender sends silence).
"""

from __future__ import annotations

from typing import Protocol

from ..audio.pcm import Pcm


class FrameSink(Protocol):
    """Where a 20 ms 16 kHz frame goes on the clock's receive phase."""

    def accept(self, pcm: Pcm) -> None:
        """Take one frame (never blocks, never waits)."""


class FrameSource(Protocol):
    """Where a sender takes its 20 ms frame from on the clock's send phase."""

    def take(self, now: float) -> Pcm | None:
        """The frame for the tick at ``now`` (monotonic), ``None`` for none (silence)."""

    def detach(self) -> None:
        """The sender is gone: drop what waits."""


class ClockedPort(FrameSink, Protocol):
    """The call as a clocked leg sees it (its ``CallPort``): it accepts the leg's received
    frames, gives the leg the frames to send, and hears when the leg ends by itself."""

    def take(self, now: float) -> Pcm | None:
        """The frame the leg sends for the tick at ``now``, ``None`` for none (silence)."""

    def ended(self, why: str) -> None:
        """The leg failed or closed (its media is over); ``why`` for the log."""


class Plug:
    """A sender's source that a :class:`ClockedPort` is plugged into, or not: ``None``
    (silence) while nothing is (see the module docstring)."""

    def __init__(self) -> None:
        self.port: ClockedPort | None = None
        self.taken = 0
        """Frames taken from a plugged port."""
        self.empty = 0
        """Ticks a plugged port had no frame (nothing to send: silence)."""

    def take(self, now: float) -> Pcm | None:
        port = self.port
        if port is None:
            return None
        pcm = port.take(now)
        if pcm is None:
            self.empty += 1
        else:
            self.taken += 1
        return pcm

    def detach(self) -> None:
        """The sender stopped: nothing waits here (the port stays plugged until its owner
        unplugs it, so the leg's end still reaches it)."""
