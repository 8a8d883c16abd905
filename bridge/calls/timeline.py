"""A call's quality over time: one row a second per leg, decimated when long, and its events
on the same time axis; the call record (``GET /call/{callID}/report``) built from them."""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

MISSING = -1.0
"""A value the sample did not have (no RTCP yet: no round-trip time; no frames: no level)."""

_SUM, _MAX, _MIN, _MEAN, _MEAN_DB = range(5)


class Column(NamedTuple):
    name: str
    kind: int
    """How rows merge: a sum (counts over the span), the worst (max, min), a mean, or a mean
    of power for a level in dB."""
    scale: float
    """0: a 32-bit float; else a 16-bit integer of ``value * scale`` (clamped)."""


COLUMNS_SPEC = (
    Column("packetsReceived", _SUM, 0),
    Column("packetsLost", _SUM, 0),
    Column("packetsRecovered", _SUM, 0),
    Column("concealedMs", _SUM, 0),
    Column("stretchedMs", _SUM, 0),
    Column("jitterMs", _MAX, 10),
    Column("delayMs", _MAX, 10),
    Column("rttMs", _MAX, 10),
    Column("mos", _MIN, 100),
    Column("kbpsReceived", _MEAN, 10),
    Column("kbpsSent", _MEAN, 10),
    Column("levelReceivedDbfs", _MEAN_DB, 10),
    Column("levelSentDbfs", _MEAN_DB, 10),
    Column("lossReportedPercent", _MAX, 10),
)
COLUMNS = tuple(c.name for c in COLUMNS_SPEC)
"""What one row holds besides its time: counts over the row's span (sums); the jitter, delay
and round-trip time (the worst of the span); the MOS estimate (the worst of the span); the
payload bit rates received from and sent to the leg (kbit/s, the span's mean); the levels of
what the leg sent and was sent (dBFS, the span's mean power); the loss the leg's receiver
reports of what the bridge sends it (RTCP, the latest quality sample: the worst of the span)."""
_KIND = tuple(c.kind for c in COLUMNS_SPEC)
_SCALE = tuple(c.scale for c in COLUMNS_SPEC)
_SENT_LEVEL = COLUMNS.index("levelSentDbfs")
_MOS = COLUMNS.index("mos")
_LOSS_OUT = COLUMNS.index("lossReportedPercent")
_NONE16 = -32768
"""A MISSING value in a 16-bit column."""

MAX_ROWS = 600
"""Rows one leg keeps (ten minutes at one a second): a longer call halves its resolution each
time the leg fills up, so one leg's series never holds more than ``MAX_ROWS`` rows of
42 bytes (the time and the sums as 32-bit floats, the rest as 16-bit integers): 25 kB."""

MAX_EVENTS = 500
"""Events one call keeps (the oldest are dropped, counted in ``eventsDropped``)."""


def _merge(kind: int, a: float, b: float, weight: float = 0.5) -> float:
    """``a`` (the earlier span) and ``b`` merged; ``weight``: ``b``'s share of a mean."""
    if a == MISSING:
        return b
    if b == MISSING:
        return a
    if kind == _SUM:
        return a + b
    if kind == _MEAN:
        return a + (b - a) * weight
    if kind == _MEAN_DB:
        power = 10 ** (a / 10) * (1 - weight) + 10 ** (b / 10) * weight
        return 10 * math.log10(power) if power > 0 else min(a, b)
    return max(a, b) if kind == _MAX else min(a, b)


def _store(scale: float, v: float) -> float:
    if not scale:
        return v
    return _NONE16 if v == MISSING else max(-32767, min(32767, round(v * scale)))


def _load(scale: float, v: float) -> float:
    if not scale:
        return v
    return MISSING if v == _NONE16 else v / scale


class LegSeries:
    """One leg's rows, in columns (see :data:`COLUMNS_SPEC`); ``step`` seconds a row."""

    __slots__ = ("cols", "pending", "pending_n", "step", "times")

    def __init__(self) -> None:
        self.times = array("f")
        self.cols: list[array[Any]] = [array("h" if c.scale else "f") for c in COLUMNS_SPEC]
        self.step = 1
        self.pending: list[float] | None = None
        self.pending_n = 0

    def add(self, t: float, values: Iterable[float]) -> None:
        row = list(values)
        if self.pending is None:
            self.pending = [t, *row]
        else:
            p, weight = self.pending, 1 / (self.pending_n + 1)
            for i, v in enumerate(row):
                p[i + 1] = _merge(_KIND[i], p[i + 1], v, weight)
        self.pending_n += 1
        if self.pending_n >= self.step:
            self._flush()

    def _flush(self) -> None:
        p, self.pending, self.pending_n = self.pending, None, 0
        assert p is not None
        self.times.append(p[0])
        for col, scale, v in zip(self.cols, _SCALE, p[1:], strict=True):
            col.append(_store(scale, v))
        if len(self.times) >= MAX_ROWS:
            self._halve()

    def _halve(self) -> None:
        """Merge each pair of rows into one: the series keeps its span at half the detail."""
        n = len(self.times) // 2 * 2
        self.times = array("f", self.times[0:n:2]) + self.times[n:]
        for c, col in enumerate(self.cols):
            kind, scale = _KIND[c], _SCALE[c]
            merged = (
                _merge(kind, _load(scale, col[i]), _load(scale, col[i + 1])) for i in range(0, n, 2)
            )
            self.cols[c] = array(col.typecode, (_store(scale, v) for v in merged)) + col[n:]
        self.step *= 2

    def rows(self) -> Iterable[tuple[float, list[float]]]:
        for i, t in enumerate(self.times):
            yield t, [_load(scale, col[i]) for col, scale in zip(self.cols, _SCALE, strict=True)]
        if self.pending is not None:
            yield self.pending[0], self.pending[1:]

    def nbytes(self) -> int:
        return self.times.itemsize * len(self.times) + sum(a.itemsize * len(a) for a in self.cols)


class Timeline:
    """One call's legs and events. ``t`` is seconds since the call was created."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.legs: dict[str, LegSeries] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.events_dropped = 0
        self.first_audio: dict[str, float] = {}
        """When each leg's first packet (or frame) came, since the call was created."""
        self.first_sent: dict[str, float] = {}
        """When the bridge first sent each leg audio."""
        self.offered: dict[str, float] = {}
        """When each leg's media was offered (a browser's offer; the WhatsApp side's: the
        call's creation, which its offer comes or goes with)."""
        self.answered: float | None = None
        self.totals = [0.0, 0.0, 0.0, 0]
        """Packets received and lost, MOS sum and count so far: the call's quality as its
        neighbours' reports compare it (:meth:`quality`), without reading the rows."""

    def _t(self, now: float) -> float:
        return round(now - self.started, 1)

    def offer(self, now: float, leg: str) -> None:
        """``leg``'s media was offered at ``now`` (its first offer counts)."""
        self.offered.setdefault(leg, self._t(now))

    def sample(self, now: float, leg: str, values: Sequence[float]) -> None:
        t = self._t(now)
        series = self.legs.get(leg)
        if series is None:
            series = self.legs[leg] = LegSeries()
        if values[0] > 0 and leg not in self.first_audio:
            self.first_audio[leg] = t
        if values[_SENT_LEVEL] != MISSING and leg not in self.first_sent:
            self.first_sent[leg] = t
        series.add(t, values)
        totals = self.totals
        totals[0] += values[0]
        totals[1] += values[1]
        if values[_MOS] != MISSING:
            totals[2] += values[_MOS]
            totals[3] += 1

    def quality(self) -> tuple[float | None, float | None]:
        """The call's MOS average and loss so far; ``None`` for what it has not had (no
        packets yet: a call that rang and ended, or still rings, carried no audio to judge)."""
        received, lost, mos, n = self.totals
        loss = lost / (received + lost) if received + lost else None
        return (mos / n if n else None), loss

    def event(self, now: float, type_: str, data: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.events_dropped += 1
        small = {k: v for k, v in data.items() if isinstance(v, str | int | float | bool)}
        self.events.append({"t": self._t(now), "type": type_, **small})
        if type_ == "call.active" and self.answered is None:
            self.answered = self._t(now)

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

    def setup(self) -> dict[str, dict[str, float | None]]:
        """Each leg's set-up: from its offer (or the call's answer, when that came later: no
        audio flows to a phone that still rings) to the first audio each way."""
        out: dict[str, dict[str, float | None]] = {}
        for leg in self.legs:
            start = max(self.offered.get(leg, 0.0), self.answered or 0.0)
            got, sent = self.first_audio.get(leg), self.first_sent.get(leg)
            out[leg] = {
                "fromS": start,
                "receivedS": None if got is None else round(max(0.0, got - start), 1),
                "sentS": None if sent is None else round(max(0.0, sent - start), 1),
            }
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
                if v[_MOS] != MISSING:
                    mos.append((t, v[_MOS]))
        audio_ms = received * 20
        minutes: dict[int, list[float]] = {}
        for t, m in mos:
            minutes.setdefault(int(t // 60), []).append(m)
        worst = min(minutes.items(), key=lambda kv: sum(kv[1]) / len(kv[1]), default=None)
        setup = self.setup()
        both = [
            max(s["receivedS"], s["sentS"])
            for s in setup.values()
            if s["receivedS"] is not None and s["sentS"] is not None
        ]
        return {
            "callID": call.get("callID"),
            "direction": call.get("direction"),
            "createdAt": call.get("createdAt"),
            "answeredAt": call.get("answeredAt"),
            "endedAt": call.get("endedAt"),
            "durationS": call.get("duration"),
            # what a business-initiated call costs (Call.billing): only on a billed call
            **{k: call[k] for k in ("billablePulses", "destinationCountry") if k in call},
            "endReason": call.get("endReason"),
            "endedBy": call.get("endDetail"),
            "firstAudioS": dict(self.first_audio),
            "setup": setup,
            "setupS": max(both) if both else None,
            "mosAverage": round(sum(m for _, m in mos) / len(mos), 2) if mos else None,
            "mosWorstMinute": None
            if worst is None
            else {
                "minute": worst[0],
                "mos": round(sum(worst[1]) / len(worst[1]), 2),
                **self.culprit(worst[0]),
            },
            "packetsReceived": int(received),
            "packetsLost": int(lost),
            "lossFraction": round(lost / (received + lost), 4) if received + lost else 0.0,
            "concealedFraction": round(concealed / audio_ms, 4) if audio_ms else 0.0,
            "mediaWarnings": sum(1 for e in self.events if e["type"] == "call.media_warning"),
            "eventsDropped": self.events_dropped,
        }

    def culprit(self, minute: int) -> dict[str, Any]:
        """Which leg and hop made ``minute`` bad (see :func:`_culprit`)."""
        rows = {
            leg: [v for t, v in series.rows() if int(t // 60) == minute]
            for leg, series in self.legs.items()
        }
        return _culprit(rows)

    def report(
        self, call: dict[str, Any], neighbours: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        summary = self.summary(call)
        summary["neighbours"] = neighbours
        return {
            "summary": summary,
            "timeline": self.timeline_json(),
            "events": list(self.events),
        }


def _culprit(by_leg: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Which leg and hop made a minute bad: the leg whose receiver scored it lowest, and of its
    two hops the one that lost more (into the bridge, or out of it as the leg's receiver
    reports), with what its rows show (loss both ways, concealment, jitter)."""
    scored = []
    for leg, rows in by_leg.items():
        moses = [v[_MOS] for v in rows if v[_MOS] != MISSING]
        if moses:
            scored.append((sum(moses) / len(moses), leg, rows))
    if not scored:
        return {}
    _, leg, rows = min(scored, key=lambda s: s[0])
    received, lost = sum(v[0] for v in rows), sum(v[1] for v in rows)
    loss_in = lost / (received + lost) if received + lost else 0.0
    loss_out = max((v[_LOSS_OUT] / 100 for v in rows if v[_LOSS_OUT] != MISSING), default=0.0)
    expected_ms = (received + lost) * 20  # of the audio that was sent
    concealed = sum(v[3] for v in rows) / expected_ms if expected_ms else 0.0
    jitter = max((v[5] for v in rows if v[5] != MISSING), default=None)
    return {
        "leg": leg,
        # The hop that lost more: into the bridge (its receiver's count) or out of it (what the
        # leg's RTCP reports said of the bridge's packets).
        "hop": f"bridge → {leg}" if loss_out > loss_in else f"{leg} → bridge",
        "lossFraction": round(loss_in, 4),
        "lossReportedFraction": round(loss_out, 4),
        "concealedFraction": round(concealed, 4),
        "jitterMs": None if jitter is None else round(jitter, 1),
    }
