"""Aiming a PCM engine's uplink frames at the tick its clock takes them on.

An engine that speaks in 60 ms frames (ZuckZapGo's media socket) takes ours on its own clock,
and our frames are cut from the bus's 20 ms ticks, so a 60 ms frame can be completed on any of
three ticks: the one that leaves it waiting least for the engine's tick saves up to 40 ms of
the round trip, every frame of the call. :class:`TickAim` learns the engine's phase from when
its frames arrive and says when a frame completed now would wait a tick or more: the socket
(``socket.py``) then drops one quiet frame, moving its boundary a tick later (20 ms of
silence, never speech). docs/performance.md tells how each rule below was found and measured.

* **Only later, never sooner.** A queueing engine sends each frame on the first of its ticks
  with nothing older queued, so a frame sent sooner only joins its queue for the rest of the
  call; the boundary only moves later.
* **An engine with no clock** (it sends back what it gets at once) has no tick to aim at: each
  drop is also a probe, and when the engine's next frame follows ours twice in a row the aim
  stops for the call (:attr:`TickAim.follows`).
* **A standing backlog.** A frame that once missed its tick (a busy host) leaves every later
  frame waiting a tick more, which the engine's frames do not show. :class:`TickAim` counts the
  frames we sent against the ticks the engine took them on (:meth:`TickAim.sent`); when more
  are sent than taken (:meth:`TickAim.backlog`) the socket sheds one whole batch of silence, and
  the engine sends the queued frame in its stead. A shed is a probe too, as a drop is.
"""

from __future__ import annotations

from ..audio.pcm import FRAME_MS

AHEAD = 0.006
"""Seconds a frame should reach the engine before its tick, beyond the socket's one-way
delay: the engine's reader may be a wake-up behind, and our next send may be a few ms later
than this one (a busy host). An engine that queues never gives back a tick its frame missed
(every later frame waits one tick more, 60 ms, for the rest of the call), so the margin is
worth its few ms."""
TICK = FRAME_MS / 1000
GUARD = 0.004
"""Seconds past the frame's own aim in which the aim is left alone: a frame estimated there
still makes its tick (by ``AHEAD - GUARD``), and moving it a tick later would make it miss that
tick for sure. Past the guard it is estimated to miss, or to make it by too little for a busy
host: a tick later it waits 20 ms less for the next. Inside :data:`AHEAD`, so no boundary is
kept where a frame is estimated to miss (at 10 ms, two clocked phases in nine waited a whole
period on every frame: docs/performance.md)."""

SURE = 0.0025
"""Seconds from the engine's estimated tick within which the count of what it holds does not
say whether a batch made that tick (the estimate's jitter): a standing frame is seen when a
batch came later than that past its tick and a later one earlier than that before its own."""


class TickAim:
    """The engine's frame clock, learnt from when its frames arrive, and where our frame
    boundary should be against it.

    ``period``: the engine's frame (s); ``opening``: how long the socket took to open (s): a
    TCP handshake and the upgrade's request and answer, two round trips, of which half bounds
    the one-way delay a frame must be sent ahead by. A frame counts only when it comes a
    period (±¼) after the one before, so a burst after a stall teaches nothing. An arrival
    earlier than predicted moves the estimate at once (the network only ever delays); a later
    one by a sixteenth (a drifting clock walks slowly, jitter does not last).
    """

    def __init__(self, period: float, opening: float = 0.0) -> None:
        self.period = period
        self.ahead = AHEAD + opening / 2
        """Seconds before the engine's tick a frame is aimed to be sent."""
        self.due: float | None = None
        """When the engine's next frame is expected (``time.monotonic()``)."""
        self._last: float | None = None
        self.shifts = 0
        """Frame boundaries moved (a quiet frame dropped)."""
        self.follows = False
        """The engine's frames follow ours (module docstring): nothing to aim at."""
        self._followed = 0
        """Drops in a row the engine's next frame followed."""
        self._probing: float | None = None
        """A frame was dropped (or a batch shed) since the engine's last frame: how much later
        than its clock predicts its next one comes if it follows ours (a tick, or a period)."""
        self._confirming = False
        """The engine's answer to a probe followed ours: does the frame after it keep to it?"""
        self.queued = 0
        """Our frames the engine holds, by the count of what we sent against its ticks."""
        self._sent_at: float | None = None
        self.shed = 0
        """Queued frames shed (a whole batch of silence not sent)."""

    def heard(self, t: float) -> None:
        """An engine frame of one period arrived at ``t``."""
        last, self._last = self._last, t
        probing, self._probing = self._probing, None
        if last is None:
            return
        late = t - last - self.period
        if probing is not None:
            # As late as our frames after the drop (a tick) or the shed (a period) were, and
            # the frame after it keeps that new phase (a clocked engine's frame that a busy
            # host made late is followed by one on its old phase), twice in a row: the engine
            # follows ours. Once mistaken, a clocked engine was never aimed again.
            if abs(late - probing) < TICK / 4:
                self._confirming = True
            else:
                self._followed = 0
        elif self._confirming:
            self._confirming = False
            self._followed = self._followed + 1 if abs(late) < TICK / 4 else 0
            self.follows = self._followed >= 2
        if abs(late) > self.period / 4:
            return
        due = self.due
        if due is None:
            self.due = t + self.period
            return
        err = (t - due + self.period / 2) % self.period - self.period / 2
        self.due = t + self.period if err < 0 else due + err / 16 + self.period

    def shift(self, now: float) -> int:
        """For a frame completed at ``now``: ``-1`` to drop a frame (the boundary a tick
        later) when held a tick more it would still reach the engine :attr:`ahead` before
        the tick it would wait for; ``0`` to leave it (also while the engine's clock is
        unknown, when the engine has none, or until the engine's frame after a drop came)."""
        if self.due is None or self.follows or self._probing is not None or self._confirming:
            return 0  # (probing: one drop at a time, the engine's answer to it heard first)
        slack = (self.due - now - self.ahead) % self.period  # the wait for the engine's tick
        return -1 if TICK <= slack < self.period - GUARD else 0

    def waiting(self, now: float) -> int:
        """Our frames the engine still holds when a batch sent at ``now`` reaches it: it took
        one queued frame on each of its ticks since our last batch (its ticks are when its
        frames leave it, before :attr:`due` by the one-way delay: ``ahead - AHEAD`` is two).
        One or more: that batch would wait a tick more than its aim (:attr:`backlog`)."""
        last, due = self._sent_at, self.due
        if due is None or last is None or self.follows:
            return 0
        tick = due - (self.ahead - AHEAD)  # (a frame sent after it waits for the next)
        # A batch within SURE of a tick may have made it or not: counted both ways, the
        # engine took what it could (an engine with no clock's "ticks" are just there).
        p = self.period
        ticks = int((now - tick + SURE) // p) - int((last - tick - SURE) // p)
        return max(0, self.queued - ticks)

    def backlog(self, now: float) -> bool:
        """A frame of ours stands queued in the engine ahead of a batch sent at ``now`` (not
        asked while a drop or a shed waits for the engine's answer)."""
        return self._probing is None and not self._confirming and self.waiting(now) > 0

    def sent(self, now: float) -> None:
        """The socket sent a batch at ``now``."""
        self.queued = self.waiting(now) + 1
        self._sent_at = now

    def skipped(self, now: float) -> None:
        """The socket shed a batch of silence at ``now`` (:meth:`backlog`): the engine sends
        the frame that stood queued on the tick that batch would have waited for."""
        self.queued = self.waiting(now)
        self._sent_at = now
        self.shed += 1
        self._probing = self.period

    def dropped(self) -> None:
        """The socket dropped a frame as :meth:`shift` said."""
        self.shifts += 1
        self._probing = TICK
