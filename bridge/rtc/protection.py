"""How the downlink protects itself against loss: decided from the far end's reports.

The browser's RTCP receiver reports (RFC 3550 §6.4.1) say, every second or few, what share of
the bridge's packets it lost since the last one. :class:`LossProtection` turns them into what
the sender does (the track applies it: ``rtc/tracks.py``), apart from the doing (as NetEq keeps
its decision logic apart from expand and accelerate):

* **Unknown link** (no report yet): in-band FEC planned for :data:`UNKNOWN_LOSS`, so the first
  lost packets of a call are rebuilt too; no RED.
* **Loss seen**: the estimate jumps to a report's loss at once and decays with a half-life of
  :data:`DECAY_HALF_LIFE`; FEC is planned for half as much again (at least
  :data:`MIN_PLANNED`, at most :data:`MAX_PLANNED` %: RFC 6716 §2.1.7, libopus spends LBRR bits
  in proportion). A browser that offered RED (RFC 2198) gets the previous frame again in each
  packet instead from :data:`RED_ONE_AT`, two frames from :data:`RED_TWO_AT` — a whole copy
  beats FEC's sketch of it, so FEC is then off and the primary keeps its full bit rate.
* **Clean again**: :data:`HOLD` seconds after the last report of any loss, everything is off:
  a clean link pays nothing for protection (no LBRR bits, no RED copies).

What the encoder runs at follows (:class:`EncoderSettings`; the track applies it): while FEC is
on, the protected bit rate and complexity — LBRR data takes bits from the frame itself, and on
the bench's speech 48 kbit/s at complexity 8 with FEC scores on a clean link what 40 kbit/s at
complexity 5 scores without; while RED is on, the plain SILK setting (a copy of each frame
rides beside it, so the frame must stay small); on a clean link, CELT at 72 kbit/s, complexity
2, when the browser lets the bridge send that much: it scores better than SILK at 40 kbit/s for
a third of the encoder's CPU, for 32 kbit/s more (docs/quality.md, *The clean-link setting*).

Transport-wide feedback (transport-cc) would tell loss within 100 ms, but
aiortc negotiates neither its header extension nor its feedback (for audio or video), so no
browser sends it to the bridge: the receiver reports are what there is to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNKNOWN_LOSS = 10
"""The loss (%) FEC is planned for before the first report (a browser's link is unknown)."""
MIN_PLANNED = 10
MAX_PLANNED = 30
"""Bounds of the planned loss (%) once loss was seen: at 40–48 kbit/s, planning 10 % rebuilds
3 % loss as well as planning 3 % does, and more than 30 % only takes bits from the frame."""
DECAY_HALF_LIFE = 4.0
"""Seconds for the loss estimate to halve without a lossier report."""
HOLD = 15.0
"""Seconds without any reported loss after which the link counts as clean again."""
RED_ONE_AT = 0.02
"""From this loss on, a browser that offered RED gets it; below, in-band FEC at the floor
rebuilds the odd lost packet for a third of the bits a copy of every frame costs."""
RED_TWO_AT = 0.10
"""From this loss on, RED carries the two previous frames (two losses in a row are then
rebuilt too)."""


@dataclass(frozen=True)
class EncoderSetting:
    """One way the downlink's Opus encoder runs."""

    bitrate: int
    complexity: int
    celt: bool = False
    """CELT-only (no in-band FEC possible), or libopus' own choice (SILK for 16 kHz voice)."""


@dataclass(frozen=True)
class EncoderSettings:
    """The encoder's setting for each :class:`Protection` (module docstring)."""

    plain: EncoderSetting
    protected: EncoderSetting
    clean: EncoderSetting | None = None
    """On a clean link; ``None``: the plain setting (a browser that caps the bit rate below it,
    or the clean-link setting turned off)."""

    def for_(self, now: Protection) -> EncoderSetting:
        if now.fec:
            return self.protected
        if now.clean and self.clean is not None:
            return self.clean
        return self.plain  # RED on, or a link not known clean (FEC turned off)


@dataclass(frozen=True)
class Protection:
    """What the downlink sender does now."""

    expected_loss: int
    """The loss (%) in-band FEC is planned for; 0: FEC off."""
    red_depth: int
    """How many previous frames each packet carries again (RFC 2198); 0: plain Opus."""
    clean: bool = False
    """The far end has reported, and no loss for :data:`HOLD` s: what needs no protection."""

    @property
    def fec(self) -> bool:
        return self.expected_loss > 0


class LossProtection:
    """Decides :class:`Protection` from the far end's loss reports (module docstring)."""

    def __init__(self, *, fec: bool = True, red: bool = False, unknown: int = UNKNOWN_LOSS) -> None:
        self.fec = fec
        self.red = red
        self.known = False
        self.estimate = 0.0
        """The loss fraction now: the latest lossy report, decayed since."""
        self._at = 0.0
        self._last_loss_at: float | None = None
        self.reports = 0
        self.now = Protection(unknown if fec else 0, 0)
        """What to do now; before the first report, FEC planned for ``unknown`` %."""

    def report(self, fraction_lost: float, now: float) -> Protection:
        """One receiver report's loss fraction (0–1), received at ``now`` (monotonic s)."""
        fraction = max(0.0, min(1.0, fraction_lost))
        self.reports += 1
        if self.known:
            self.estimate *= 0.5 ** (max(0.0, now - self._at) / DECAY_HALF_LIFE)
        self.known = True
        self._at = now
        if fraction > 0:
            self._last_loss_at = now
            self.estimate = max(self.estimate, fraction)
        self.now = self._decide(now)
        return self.now

    def _decide(self, now: float) -> Protection:
        last = self._last_loss_at
        if last is None or now - last >= HOLD:
            self.estimate = 0.0
            return Protection(0, 0, clean=True)
        if self.red and (self.estimate >= RED_ONE_AT or not self.fec):
            return Protection(0, 2 if self.estimate >= RED_TWO_AT else 1)
        if not self.fec:
            return Protection(0, 0)
        planned = math.ceil(self.estimate * 150)
        return Protection(max(MIN_PLANNED, min(MAX_PLANNED, planned)), 0)
