"""How the downlink protects itself against loss: decided from the far end's reports.

The browser's RTCP receiver reports (RFC 3550 §6.4.1) say what share of our packets it lost.
:class:`LossProtection` turns them into what the sender does, apart from the doing (the track
applies it: ``rtc/tracks.py``), as NetEq keeps its decision logic apart from expand:

* **Unknown link** (no report yet): in-band FEC planned for :data:`UNKNOWN_LOSS`, so a call's
  first lost packets are rebuilt too; no RED.
* **Loss seen**: the estimate jumps to a report's loss and decays with a half-life of
  :data:`DECAY_HALF_LIFE`; FEC is planned for half as much again (within :data:`MIN_PLANNED`
  and :data:`MAX_PLANNED` %: libopus spends LBRR bits in proportion, RFC 6716 §2.1.7). A
  browser that offered RED gets the previous frame again from :data:`RED_ONE_AT`, two from
  :data:`RED_TWO_AT`, and FEC off: a whole copy beats FEC's sketch of it.
* **Clean again**: :data:`HOLD` seconds after the last loss, everything is off.

The encoder's setting follows (:class:`EncoderSettings`): with FEC, the protected bit rate and
complexity (LBRR takes bits from the frame itself); with RED, plain SILK (a copy rides beside
each frame); on a clean link, CELT when the browser takes its bit rate — better than SILK at a
third of the CPU (docs/quality.md, *The clean-link setting*).

Transport-wide feedback would tell loss within 100 ms, but aiortc negotiates none, so no
browser sends it: the receiver reports are what there is to follow.
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
