"""A call's quality over time: one row a second per leg, decimated when long, and its events
on the same time axis; the call record (``GET /call/{callID}/report``) built from them."""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

COLUMNS = (
    "packetsReceived",
    "packetsLost",
    "packetsRecovered",
    "concealedMs",
    "stretchedMs",
    "jitterMs",
    "delayMs",
    "rttMs",
    "mos",
)
"""What one row holds besides its time: counts over the row's span (sums), the jitter, delay
and round-trip time (the worst of the span) and the MOS estimate (the worst of the span)."""

_SUM, _MAX, _MIN = 0, 1, 2
_KIND = (_SUM, _SUM, _SUM, _SUM, _SUM, _MAX, _MAX, _MAX, _MIN)
MISSING = -1.0
"""A value the sample did not have (no RTCP yet: no round-trip time)."""

MAX_ROWS = 600
"""Rows one leg keeps (ten minutes at one a second): a longer call halves its resolution each
time the leg fills up, so one leg's series never holds more than ``MAX_ROWS`` rows of
``4 * (1 + len(COLUMNS))`` bytes (24 kB)."""

MAX_EVENTS = 500
"""Events one call keeps (the oldest are dropped, counted in ``eventsDropped``)."""


def _merge(kind: int, a: float, b: float) -> float:
    if a == MISSING:
        return b
    if b == MISSING:
        return a
    if kind == _SUM:
        return a + b
    return max(a, b) if kind == _MAX else min(a, b)


class LegSeries:
    """One leg's rows, in columns of 32-bit floats; ``step`` seconds a row."""

    __slots__ = ("cols", "pending", "pending_n", "step", "times")

    def __init__(self) -> None:
        self.times = array("f")
        self.cols = [array("f") for _ in COLUMNS]
        self.step = 1
        self.pending: list[float] | None = None
        self.pending_n = 0

    def add(self, t: float, values: Iterable[float]) -> None:
        row = list(values)
        if self.pending is None:
            self.pending = [t, *row]
        else:
            p = self.pending
            for i, v in enumerate(row):
                p[i + 1] = _merge(_KIND[i], p[i + 1], v)
        self.pending_n += 1
        if self.pending_n >= self.step:
            self._flush()

    def _flush(self) -> None:
        p, self.pending, self.pending_n = self.pending, None, 0
        assert p is not None
        self.times.append(p[0])
        for col, v in zip(self.cols, p[1:], strict=True):
            col.append(v)
        if len(self.times) >= MAX_ROWS:
            self._halve()

    def _halve(self) -> None:
        """Merge each pair of rows into one: the series keeps its span at half the detail."""
        n = len(self.times) // 2 * 2
        self.times = array("f", self.times[0:n:2]) + self.times[n:]
        for c, col in enumerate(self.cols):
            merged = array("f", (_merge(_KIND[c], col[i], col[i + 1]) for i in range(0, n, 2)))
            self.cols[c] = merged + col[n:]
        self.step *= 2

    def rows(self) -> Iterable[tuple[float, list[float]]]:
        for i, t in enumerate(self.times):
            yield t, [col[i] for col in self.cols]
        if self.pending is not None:
            yield self.pending[0], self.pending[1:]

    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.times, *self.cols))


class Timeline:
    """One call's legs and events. ``t`` is seconds since the call was created."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.legs: dict[str, LegSeries] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.events_dropped = 0
        self.first_audio: dict[str, float] = {}

    def sample(self, now: float, leg: str, values: list[float]) -> None:
        t = round(now - self.started, 1)
        series = self.legs.get(leg)
        if series is None:
            series = self.legs[leg] = LegSeries()
        if values[0] > 0 and leg not in self.first_audio:
            self.first_audio[leg] = t
        series.add(t, values)

    def event(self, now: float, type_: str, data: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.events_dropped += 1
        small = {k: v for k, v in data.items() if isinstance(v, str | int | float | bool)}
        self.events.append({"t": round(now - self.started, 1), "type": type_, **small})

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.legs.values())

    def timeline_json(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for leg, series in self.legs.items():
            for t, values in series.rows():
                row: dict[str, Any] = {"t": round(t, 1), "leg": leg, "step": series.step}
                for name, v in zip(COLUMNS, values, strict=True):
                    row[name] = None if v == MISSING else round(v, 2)
                out.append(row)
        out.sort(key=lambda r: (r["t"], r["leg"]))
        return out

    def summary(self, call: dict[str, Any]) -> dict[str, Any]:
        """The call record's summary: set-up and first audio, MOS, loss, concealment, end."""
        received = lost = concealed = 0.0
        mos: list[tuple[float, float]] = []
        for series in self.legs.values():
            for t, v in series.rows():
                received += v[0]
                lost += v[1]
                concealed += v[3]
                if v[8] != MISSING:
                    mos.append((t, v[8]))
        audio_ms = received * 20
        minutes: dict[int, list[float]] = {}
        for t, m in mos:
            minutes.setdefault(int(t // 60), []).append(m)
        worst = min(minutes.items(), key=lambda kv: sum(kv[1]) / len(kv[1]), default=None)
        first = self.first_audio
        return {
            "callID": call.get("callID"),
            "direction": call.get("direction"),
            "createdAt": call.get("createdAt"),
            "answeredAt": call.get("answeredAt"),
            "endedAt": call.get("endedAt"),
            "durationS": call.get("duration"),
            "endReason": call.get("endReason"),
            "endedBy": call.get("endDetail"),
            "firstAudioS": dict(first),
            "setupS": min(first.values()) if first else None,
            "mosAverage": round(sum(m for _, m in mos) / len(mos), 2) if mos else None,
            "mosWorstMinute": None
            if worst is None
            else {"minute": worst[0], "mos": round(sum(worst[1]) / len(worst[1]), 2)},
            "packetsReceived": int(received),
            "packetsLost": int(lost),
            "lossFraction": round(lost / (received + lost), 4) if received + lost else 0.0,
            "concealedFraction": round(concealed / audio_ms, 4) if audio_ms else 0.0,
            "mediaWarnings": sum(1 for e in self.events if e["type"] == "call.media_warning"),
            "eventsDropped": self.events_dropped,
        }

    def report(self, call: dict[str, Any]) -> dict[str, Any]:
        return {
            "summary": self.summary(call),
            "timeline": self.timeline_json(),
            "events": list(self.events),
        }
