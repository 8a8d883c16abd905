"""The call timeline stays bounded over a long call: older rows are merged, sums kept."""

from __future__ import annotations

from bridge.calls.timeline import MAX_ROWS, MISSING, Timeline


def test_a_three_hour_call_keeps_under_100_kb_a_leg_with_its_totals_and_worst_moments() -> None:
    timeline = Timeline(started=0.0)
    hours = 3
    for s in range(1, hours * 3600 + 1):
        lost = 25.0 if s == 5000 else 0.0  # one bad second deep into the call
        mos = 2.0 if s == 5000 else 4.3
        for leg in ("whatsapp", "browser:agent"):
            values = [50.0 - lost, lost, 0.0, 0.0, 0.0, 3.0, 40.0, MISSING, mos]
            timeline.sample(float(s), leg, values)
    assert timeline.nbytes() < 2 * MAX_ROWS * 4 * 10 + 1  # two legs, fixed whatever the length
    assert timeline.nbytes() <= hours * 100_000
    rows = [r for r in timeline.timeline_json() if r["leg"] == "browser:agent"]
    assert len(rows) <= MAX_ROWS and rows[-1]["step"] == 32
    assert sum(r["packetsReceived"] + r["packetsLost"] for r in rows) == 50 * hours * 3600
    bad = [r for r in rows if r["packetsLost"]]
    assert len(bad) == 1 and bad[0]["packetsLost"] == 25 and bad[0]["mos"] == 2.0
    assert bad[0]["t"] <= 5000 < bad[0]["t"] + bad[0]["step"]
    assert all(r["rttMs"] is None for r in rows)
    summary = timeline.summary({"callID": "c"})
    assert summary["mosWorstMinute"]["minute"] == 5000 // 60
    assert summary["packetsLost"] == 50
