"""``DelayDecision``: how long the Opus receiver holds packets, decided apart from how it plays.

As libwebrtc's NetEq keeps its decision logic (``DecisionLogic``, ``DelayManager``) apart from
the operations it chooses between (expand, accelerate, preemptive expand), the receiver
(:mod:`bridge.audio.receiver`) does the mechanics — decode, FEC, concealment, the stretching
FIFO — and asks this class what to do on each tick.

**How long to hold packets.** Every packet's *slack* is measured at arrival: how long before
the clock will need it (negative: too late). A window of recent slacks is kept and a low
quantile of them is steered to a small margin — enough that all but ~2 % of packets are on
time — by adding or removing one frame of delay at a time: a frame more once the quantile is
under half the margin (of the FEC floor too, below), a frame less once it is a frame and
:data:`SHED_ABOVE` over it (more under wide jitter). On a clean network that is less than one
frame; with jitter it follows the jitter (bounded by ``max_delay``). A large excess (more than
two frames over the floor: a sender's stall released at once, a peer's first half second sent
in one burst) is shed fast (:attr:`DelayDecision.rush`, NetEq's fast accelerate) instead of a
frame at a time with a settling wait between: its pauses first, voiced speech only after
:data:`RUSH_PATIENCE`. Stalls that recur (*delay peaks*, NetEq's peak
detector: :data:`PEAK_GAP`, :data:`PEAK_MEMORY`) keep the cushion the highest of them needs:
neither rule sheds below it while they last. After a loss, when the sender sends in-band
FEC, one frame more is kept for ``loss_memory`` seconds so that the next packet of a later loss
is usually there in time for its FEC; a frame that floor alone wants (every packet on time) is
insurance, bought in a long pause (:attr:`DelayDecision.for_fec`).

**Delay accounting.** Every change of how the RTP timeline maps onto the receiver's clock (a
concealed frame, a stretch that moves the next decode by a tick, a sender's timeline nudge)
moves that mapping — its *anchor* — and every stored slack with it (:meth:`follow_anchor`).

Pure and synchronous: times are the seconds of the receiver's clock.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

FRAME_SECONDS = 0.02
SHED_ABOVE = 0.002
"""How far above a frame more than the floor the low quantile must be before a frame is shed
(at least; see :data:`SHED_SPREAD`)."""
SHED_SPREAD = 0.1
"""...and at least this share of the spread of the slacks (median − low quantile): under wide
jitter (0–80 ms) the low quantile of 100 packets swings by more than a frame, and at a fixed
2 ms each swing shed a frame in whatever pause came next, short gaps between words among them,
which PESQ-WB marks down (Opus 0–80 ms seeds 2 and 3: −0.19 and −0.14 against the ideal; +0.01
and −0.04 with this, for 1 ms more mean delay). A steady line (drift) keeps the 2 ms."""
RUSH_ABOVE = 0.02
"""How far beyond the line a frame is shed at (:data:`SHED_ABOVE`) the low quantile must be for
the receiver to *rush* (:attr:`DelayDecision.rush`): a large excess of delay (a sender's stall
released at once, a peer's first half second sent in one burst) is shed as NetEq's fast
accelerate and flush shed it, several periods or whole frames of a pause a tick, with no
settling wait between removals (voiced speech only after :data:`RUSH_PATIENCE`). Under it the
careful rule sheds the rest (a pause first, voiced speech after a wait), as it was tuned
against PESQ-WB."""
RUSH_PATIENCE = 0.5
"""Seconds a rush sheds in pauses alone (whole frames of them, keeping
:data:`~bridge.audio.stretch.KEEP_PAUSE` of each) before voiced speech may lose periods too:
PESQ-WB marks speech played up to 1.5 times as fast down, a shorter pause hardly (the
browser's ``stall`` profile, 400 ms every 5 s: 1.89 with speech rushed at once and pauses cut
whole only over 300 ms of excess; 2.30 with pauses cut whole at any excess; 2.36 with that
and this wait, 0.25-1 s alike; 1.5 s: 2.27). A tone, or speech with no pause, waits this long
before its rush starts (``bench.delay_recovery``'s tone: a 400 ms stall back in 1.67 s, not
1.15)."""
PEAK_GAP = 0.06
"""Seconds a packet must arrive later than the line of the fastest recent ones for a *delay
peak* (NetEq's delay peak detector works on the same relative arrival delays): a sender's stall,
or a stall of a process that hosts both ends. Its height (how late the packet that waited
longest came) is the cushion a stall like it needs. A packet no later than the window's jitter
and a frame is no peak: the quantile covers it (0–80 ms of jitter makes none)."""
LINE_LEAK = 0.0005
"""Seconds a packet by which the line of the fastest packets rises (25 ms/s) unless a packet
comes faster: it follows a sender's clock drift and a longer path within seconds, not a stall's
burst (whose 20 packets move it 10 ms)."""
PEAK_MEMORY = 10.0
"""Seconds within which a second delay peak makes stalls the network's pattern rather than a
hiccup: then the highest of the peaks within 10 s of the latest is a cushion (NetEq's peak
detector's target: "grows on a delay peak, shrinks slowly"), kept by the careful rule and the
rush alike until the latest peak is 10 s old; only what is over it is rushed. With no pattern,
a backlog (an outage's, a peer's start burst) is rushed down to the floor, but delay grown on
late packets (a stall shorter than an outage) is not rushed for 10 s: it is the target's own,
the cushion the next stall needs if one comes. The reverted first rush kept only a second large
*excess* whole: between excesses it shed to two frames over the floor, so each stall after lost
packets (300 ms every 2 s: one a stall), and a process whose stalls skip its clock's ticks (the
stalled-fork test: client and bridge in one process) piled their backlogs up to the receiver's
64 packets, then lost them (1.4 s of delay, then silence), as main does too."""
LONG_PAUSE = 0.1
"""Seconds played in a pause in a row before a frame for FEC alone (:attr:`DelayDecision.for_fec`)
goes in: a pause between phrases, not a gap between words (a frame put in the 40 ms gap at 0.72
s of the bench's speech cost it 0.07 PESQ-WB, Opus 3 % loss seed 2; 60-200 ms measured alike)."""


class DelayDecision:
    """The receiver's delay control: whether the delay should grow or shrink on this tick,
    and whether waiting a frame for FEC is worth it (see the module docstring)."""

    def __init__(
        self,
        *,
        min_delay: float,
        max_delay: float,
        margin: float,
        window: int,
        quantile: float,
        loss_memory: float,
    ) -> None:
        if not 0 <= min_delay <= max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.margin = margin
        self.quantile = quantile
        self.loss_memory = loss_memory
        self.window = window
        """Slacks kept: the latest packets'."""
        self._slack: deque[float] = deque(maxlen=window)
        self._ordered: list[float] = []
        """The same slacks, kept sorted as they come and go (no sort on every tick)."""
        self._offset = 0.0
        """Added to every stored slack: the delay added (+) or removed (-) since it was stored."""
        self._anchor: float | None = None
        """When RTP time 0 would be needed, in seconds of our clock (see the module docstring)."""
        self._settle = 0
        self._want_since: float | None = None
        self.last_loss = -1e9
        """When a frame was last missing (lost, or waited for)."""
        self.urgent = False
        """Packets are late right now (a jitter spike, not drift): conceal a frame at once."""
        self.step = False
        """The delay wanted moved by much more than a drift does (a loss, more jitter)."""
        self.for_fec = False
        """The frame wanted is the FEC floor's alone: every packet is on time, and the frame
        only puts the next packet of a later loss at hand (a step too, in a long pause)."""
        self.rush = False
        """The delay is far above what packets need (:data:`RUSH_ABOVE`): shed it fast."""
        self.rush_voiced = False
        """...and it has lasted :data:`RUSH_PATIENCE`: voiced speech may lose periods too."""
        self._rush_since: float | None = None
        """When the current rush began."""
        self._peaks: deque[tuple[float, float]] = deque(maxlen=8)
        """(arrival, height) of the latest delay peaks (:data:`PEAK_GAP`; kept across a new
        stream: they are the network's)."""
        self._late_at = -1e9
        """When packets were last late on a tick (the low quantile under zero)."""
        self._line: float | None = None
        """Arrival less RTP time of the fastest recent packets (:data:`LINE_LEAK`)."""
        self.target = 0.0
        """The delay aimed for (W3C ``jitterBufferTargetDelay``, per sample)."""
        self._quiet_for = 0.0
        """Seconds played in a row that were a pause (:meth:`played`)."""

    def reset(self) -> None:
        """A new stream: forget every slack and the anchor."""
        self._slack.clear()
        self._ordered.clear()
        self._offset = 0.0
        self._anchor = None
        self._settle = 0
        self._rush_since = None

    def observe(self, slack: float) -> None:
        """A packet arrived ``slack`` seconds before the clock will need it."""
        stored, window = slack - self._offset, self._slack
        if len(window) == window.maxlen:
            ordered = self._ordered
            del ordered[bisect_left(ordered, window[0])]  # the oldest leaves
        window.append(stored)
        insort(self._ordered, stored)

    def waited(self, now: float) -> float:
        """Seconds the current change of delay has been wanted."""
        return now - self._want_since if self._want_since is not None else 0.0

    def follow_anchor(self, anchor: float) -> None:
        """Move every stored slack by how much the RTP timeline's mapping onto our clock moved
        in this tick; a move of a frame (the next decode a tick earlier or later) is a change
        of delay that the slacks must show before the delay is judged again."""
        if self._anchor is not None:
            shift = anchor - self._anchor
            self._offset += shift
            if abs(shift) >= FRAME_SECONDS / 2:
                self._settle = 5
                self._want_since = None
        self._anchor = anchor

    def quantiles(self) -> tuple[float, float]:
        """The low quantile and the median of recent slacks, at the current delay."""
        ordered = self._ordered
        low = ordered[int(self.quantile * len(ordered))] + self._offset
        return low, ordered[len(ordered) // 2] + self._offset

    def high(self) -> float:
        """The high quantile of recent slacks (the fastest packets'), at the current delay."""
        ordered = self._ordered
        return ordered[int((1 - self.quantile) * (len(ordered) - 1))] + self._offset

    def delay_for(self, slack: float) -> float:
        """How long a packet that arrived ``slack`` seconds before its due time on the line
        the recent slacks were measured against should wait: as long as all but the low
        quantile of those packets were later than it, within ``max_delay`` (0 when too few
        were seen to say)."""
        if len(self._slack) < 10:
            return 0.0
        low, _ = self.quantiles()
        return min(self.max_delay, max(0.0, slack - low + self.margin))

    def played(self, pause: bool) -> None:
        """A frame was played: a pause (``stretch.is_pause``) or not."""
        self._quiet_for = self._quiet_for + FRAME_SECONDS if pause else 0.0

    def step_here(self, paused: bool) -> bool:
        """Whether the step wanted goes in on this tick (``paused``: the last samples played
        were a pause); a step for FEC alone only in a long pause (:data:`LONG_PAUSE`)."""
        return self._quiet_for >= LONG_PAUSE if self.for_fec else paused

    def worth_waiting_for_fec(self) -> bool:
        """A frame and the packet after it (whose FEC could rebuild it) are missing: whether
        that packet is likely still to come within the delay allowed."""
        if len(self._slack) >= 10:
            low, median = self.quantiles()
            if low >= self.margin / 2 + FRAME_SECONDS:
                return False  # the next packet is usually here by now: it is lost too
            if median + FRAME_SECONDS > self.max_delay:
                return False
        return True

    def arrived(self, rtp_seconds: float, arrival: float) -> None:
        """A packet of (extended) RTP time ``rtp_seconds`` arrived at ``arrival``: a delay peak
        if it came :data:`PEAK_GAP` or more after the line of the fastest recent packets (the
        packets of one stall, within a second, are one peak, as high as the latest of them came;
        over a second late is a sender that stopped, or a new timeline: not a peak)."""
        relative, line = arrival - rtp_seconds, self._line
        if line is None or abs(relative - line) > 2.0:
            self._line = relative
            return
        self._line = line = min(relative, line + LINE_LEAK)
        late, peaks = relative - line, self._peaks
        if late < PEAK_GAP or late > 1.0:
            return
        if (
            len(self._ordered) >= 10
            and late < 2 * (self.high() - self.quantiles()[1]) + FRAME_SECONDS
        ):
            return  # within the jitter the window holds (twice its upper half: a stall's
            # packets, in its low tail, leave that be): the quantile covers it
        if peaks and arrival - peaks[-1][0] < 1.0:
            peaks[-1] = (peaks[-1][0], max(late, peaks[-1][1]))
        else:
            peaks.append((arrival, late))

    def cushion(self, now: float) -> float:
        """The delay recurring peaks need kept (:data:`PEAK_MEMORY`): the highest of those
        within 10 s of the latest, if the one before it came within 10 s too and the latest is
        under 10 s old; 0 for a lone peak, or none."""
        peaks = self._peaks
        if len(peaks) < 2 or now - peaks[-1][0] > PEAK_MEMORY:
            return 0.0
        latest = peaks[-1][0]
        if latest - peaks[-2][0] > PEAK_MEMORY:
            return 0.0
        return max(height for at, height in peaks if latest - at <= PEAK_MEMORY)

    def direction(self, now: float, *, sender_fec: bool) -> int:
        """+1 if the delay should grow, -1 if it should shrink, 0 if it is right; sets
        :attr:`urgent` and :attr:`step`."""
        self.urgent = self.step = self.for_fec = self.rush = self.rush_voiced = False
        if len(self._slack) < 3:
            return 0
        low, median = self.quantiles()
        floor = self.margin
        fec_floor = sender_fec and now - self.last_loss < self.loss_memory
        if fec_floor:
            floor += FRAME_SECONDS  # keep the next packet at hand for its FEC
        grow_below = floor - self.margin / 2
        self.target = max(0.0, median - low + floor)
        held = median  # how long a typical packet waits now
        want = 0
        # A frame more only once the low quantile is well inside the margin (half of it), not
        # as soon as it dips below: a whole frame is dear (20 ms more, mostly stretched in
        # speech), and a quantile a fraction of a millisecond under the margin is still on time
        # (NetEq's preemptive expand likewise waits for the level to fall below 3/4 of its
        # target). The FEC floor too: a next packet 2 ms inside it still carries its FEC in
        # time, and its frame, grown at once for 0.1-2 ms, was stretched in the voiced speech
        # right after the loss (Opus 3 % loss seeds 1 and 2: -0.03 and -0.04 against the
        # ideal); the wait for FEC (``worth_waiting_for_fec``) draws the same line.
        shed_above = max(SHED_ABOVE, SHED_SPREAD * (median - low))
        # What a stall like the recent ones would leave of the slack: its packets arrive the
        # cushion after the fastest ones (jitter the window already holds is not counted twice).
        cushion = self.cushion(now)
        kept = min(low, self.high() - cushion) if cushion else low
        if low < grow_below and held + FRAME_SECONDS <= self.max_delay:
            want = 1
        elif kept > floor + FRAME_SECONDS + shed_above and held - FRAME_SECONDS >= self.min_delay:
            want = -1
        if low < 0:
            self._late_at = now
        if want < 0:
            excess = kept - floor
            # Delay grown on packets late (a stall shorter than an outage) is the target's
            # own: with no pattern yet it shrinks the careful way for PEAK_MEMORY, the cushion
            # a stall 2-10 s later needs; only a backlog (an outage's, a start burst) rushes.
            self.rush = excess > FRAME_SECONDS + shed_above + RUSH_ABOVE and (
                cushion > 0 or now - self._late_at > PEAK_MEMORY
            )
        if not self.rush:
            self._rush_since = None
        elif self._rush_since is None:
            self._rush_since = now
        else:
            self.rush_voiced = now - self._rush_since >= RUSH_PATIENCE
        if want < 0 and self._settle > 0 and not self.rush:
            # A removal waits until the last change shows in the slacks; a rush does not (the
            # stored slacks move with the anchor at once, and it stops a frame short).
            want = 0
        if self._settle > 0:
            self._settle -= 1
        if want == 0:
            self._want_since = None
            return 0
        if self._want_since is None:
            self._want_since = now
        if want > 0 and low < 0:
            self.urgent = True  # a stretch would come too late
        # A drift moves the slacks by microseconds a tick; a loss or more jitter by much more.
        self.step = want > 0 and floor - low >= FRAME_SECONDS / 2
        if want > 0 and fec_floor and low >= self.margin:
            # Packets are on time: the frame is the FEC floor's alone, insurance for a later
            # loss, and waits for a long pause as a step (:meth:`step_here`).
            self.step = self.for_fec = True
        return want


class CountedJitter:
    """The jitter of packets only counted, not played (an idle leg's, ``rtc/uplink.py``),
    learned against a steady line through the first of them: when playing resumes, its first
    packet waits as long as the path needs, where a receiver that resumed bare would conceal
    at the first late packet (heard as a dip in a recording's first frames).

    Only the window's latest slacks are kept while counting (one float a packet); the decision
    learns them when playing resumes, the one time they are read: the same window, the same
    quantiles as observing each packet as it came, without keeping a sorted list up to date
    for every packet of a leg that may never resume."""

    def __init__(self, decision: DelayDecision) -> None:
        self._decision = decision
        self._anchor: float | None = None
        """When RTP time 0 would be due on that line, in seconds of the receiver's clock."""
        self._slacks: deque[float] = deque(maxlen=decision.window)
        """The latest counted packets' slacks against that line (since it was last drawn)."""

    @property
    def counting(self) -> bool:
        return self._anchor is not None

    def counted(self, rtp_seconds: float, arrival: float) -> None:
        """A packet of RTP time ``rtp_seconds`` (extended) was counted at ``arrival``."""
        anchor = self._anchor
        if anchor is not None:
            slack = anchor + rtp_seconds - arrival
            if abs(slack) <= 1.0:
                self._slacks.append(slack)
                return
        # The first, or the timeline jumped: a new line through this packet.
        self._slacks.clear()
        self._anchor = arrival - rtp_seconds
        self._slacks.append(0.0)

    def resume(self, rtp_seconds: float, arrival: float) -> float:
        """The first packet played again: the seconds it waits before playing starts."""
        assert self._anchor is not None
        slack, self._anchor = self._anchor + rtp_seconds - arrival, None
        decision = self._decision
        decision.reset()
        for counted in self._slacks:
            decision.observe(counted)
        self._slacks.clear()
        return decision.delay_for(slack)
