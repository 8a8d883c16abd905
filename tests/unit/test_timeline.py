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
            level = -120.0 if s == 5000 else -20.0
            values = [50.0 - lost, lost, 0.0, 0.0, 0.0, 3.0, 40.0, MISSING, mos, 32.0, 24.0]
            values += [level, -30.0, MISSING]
            timeline.sample(float(s), leg, values)
    assert timeline.nbytes() < 2 * MAX_ROWS * 42 + 1  # two legs, fixed whatever the length
    assert timeline.nbytes() <= hours * 100_000
    rows = [r for r in timeline.timeline_json() if r["leg"] == "browser:agent"]
    assert len(rows) <= MAX_ROWS and rows[-1]["step"] == 32
    assert sum(r["packetsReceived"] + r["packetsLost"] for r in rows) == 50 * hours * 3600
    bad = [r for r in rows if r["packetsLost"]]
    assert len(bad) == 1 and bad[0]["packetsLost"] == 25 and bad[0]["mos"] == 2.0
    assert bad[0]["t"] <= 5000 < bad[0]["t"] + bad[0]["step"]
    assert all(r["rttMs"] is None for r in rows)
    assert all(r["kbpsReceived"] == 32.0 and r["kbpsSent"] == 24.0 for r in rows)
    # Levels merge as a mean of power: the silent second is a dip of its span, not its level.
    quiet = [r["levelReceivedDbfs"] for r in rows if r["levelReceivedDbfs"] < -20.01]
    assert len(quiet) == 1 and -20.3 < quiet[0] < -20.0
    assert {r["levelSentDbfs"] for r in rows} == {-30.0}
    summary = timeline.summary({"callID": "c"})
    assert summary["mosWorstMinute"]["minute"] == 5000 // 60
    assert summary["packetsLost"] == 50


def test_a_report_names_the_leg_and_hop_of_its_worst_minute_and_compares_its_neighbours(
    tmp_path,
) -> None:
    """The worst minute's culprit is the leg whose receiver scored it lowest (the hop from that
    side into the bridge); the summary compares the call with the calls beside it here."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from bridge.calls.reports import CallReports

    reports = CallReports(tmp_path, 86400, CollectorRegistry(), warn_after=3.0)
    # The live calls beside it are the manager's runtimes, each holding its own report.
    runtimes = {
        name: SimpleNamespace(report=reports.open(SimpleNamespace(mono_created=0.0)))  # type: ignore[arg-type]
        for name in ("bad", "fine1", "fine2", "ringing")
    }
    reports.calls = SimpleNamespace(  # type: ignore[assignment]
        live_runtimes=lambda: list(runtimes.values()), find_runtime=runtimes.get
    )
    calls = {name: runtimes[name].report.timeline for name in ("bad", "fine1", "fine2")}
    for s in range(1, 181):
        for name, timeline in calls.items():
            lossy = name == "bad" and 60 <= s < 120
            wa = [50.0, 0.0, 0.0, 0.0, 0.0, 3.0, 40.0, 30.0, 4.3, 20.0, 20.0, -20.0, -20.0, 0.0]
            browser = list(wa)
            if lossy:  # the browser's path loses a fifth of its packets
                browser[0:2], browser[3], browser[8] = [40.0, 10.0], 200.0, 2.9
            if name == "bad" and s >= 90:  # and the WhatsApp side reports 40 % of its lost
                wa[8], wa[13] = 2.0, 40.0
            timeline.sample(float(s), "whatsapp", wa)
            timeline.sample(float(s), "browser:agent", browser)
    # Calls that carried no audio (one still ringing, one that rang out) are no neighbours:
    # their loss would count as 0 in the median.
    reports._ended.append((200.0, *Timeline(started=0.0).quality()))
    report = calls["bad"].report({"callID": "bad"}, reports.neighbours(calls["bad"]))
    worst = report["summary"]["mosWorstMinute"]
    assert worst["minute"] == 1 and worst["leg"] == "browser:agent"
    assert worst["hop"] == "browser:agent → bridge" and worst["lossFraction"] == 0.2
    assert worst["concealedFraction"] == 0.2 and worst["jitterMs"] == 3.0
    # In the third minute the WhatsApp side's receiver, not the bridge's, lost the packets.
    minute = calls["bad"].culprit(2)
    assert minute["leg"] == "whatsapp" and minute["hop"] == "bridge → whatsapp"
    assert minute["lossReportedFraction"] == 0.4 and minute["lossFraction"] == 0.0
    neighbours = report["summary"]["neighbours"]
    assert neighbours == {"calls": 2, "mosMedian": 4.3, "lossFractionMedian": 0.0}
