"""A call's quality bands: ``call.quality`` when a leg's MOS band changes (``calls/quality.py``
samples the legs; this, owned by the call's runtime, remembers each leg's last band)."""

from __future__ import annotations

from collections.abc import Callable

from ..rtc.quality import Quality

BANDS = ((4.0, "good"), (3.6, "fair"), (3.1, "poor"), (0.0, "bad"))
"""MOS bands (ITU-T G.107 Annex B's user satisfaction: satisfied, some, many, nearly all
users dissatisfied)."""


def band(mos: float) -> str:
    return next(name for floor, name in BANDS if mos >= floor)


class QualityBands:
    """Each leg's last band; reports only changes (webhooks get every event)."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self.emit = emit
        self._last: dict[str, str] = {}

    def report(self, leg: str, mos: float, q: Quality, **who: str) -> None:
        """Emit ``call.quality`` if this sample moves the leg to another band, with the
        sample's numbers; a call that stays ``good`` says nothing."""
        key = leg + ":" + ":".join(who.values())
        now, before = band(mos), self._last.get(key, "good")
        self._last[key] = now
        if now != before:
            self.emit(
                "call.quality",
                leg=leg,
                band=now,
                previous=before,
                mos=round(mos, 2),
                lossFraction=round(q.loss_fraction, 4),
                concealedFraction=round(q.concealed_fraction, 4),
                **who,
            )
