"""The table "Meta's call status → the bridge" of ``docs/engines/cloudapi.md`` is the one
place that mapping is written: every row is checked against the code that does it (Meta's
``terminate`` statuses through ``terminate_reason``, its ``statuses`` through ``CALL_STATUS``,
both through the manager's ``end_reason``), and every status the code maps has a row."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.calls.engine_events import end_reason
from bridge.calls.model import CallState, Direction
from bridge.engines.base import EngineEventKind
from bridge.engines.cloudapi.codes import (
    CALL_STATUS,
    TERMINATE_STATUS,
    terminate_reason,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "engines" / "cloudapi.md"
HEADING = "## Meta's call status → the bridge"
COLUMNS = ["Meta's webhook", "status", "call", "answered", "state", "endReason"]
DIRECTIONS = {"business-initiated": [True], "user-initiated": [False], "either": [True, False]}
ANSWERED = {"yes": [True], "no": [False], "either": [True, False]}
STATE_OF = {
    EngineEventKind.RINGING: "ringing",
    EngineEventKind.ANSWERED: "active",
    EngineEventKind.ENDED: "ended",
}
"""The call state each engine event moves a call to (``calls/engine_events.py``)."""


def _rows() -> list[dict[str, str]]:
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADING)
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    assert table and table[0] == COLUMNS, table[:1]
    assert set(table[1][0]) == {"-"}, "the second line is the table's rule"
    return [dict(zip(COLUMNS, cells, strict=True)) for cells in table[2:]]


ROWS = _rows()


def _bridge_sees(kind: EngineEventKind, reason: str, outbound: bool, answered: bool) -> tuple:
    """The state and endReason the API shows after the engine's event."""
    if kind is not EngineEventKind.ENDED:
        return STATE_OF[kind], "—"
    before = CallState.ACTIVE if answered else CallState.RINGING
    direction = Direction.OUTBOUND if outbound else Direction.INBOUND
    return "ended", str(end_reason(before, direction, reason))


@pytest.mark.parametrize("row", ROWS, ids=[" ".join(r.values()) for r in ROWS])
def test_each_row_is_what_the_code_does(row: dict[str, str]) -> None:
    want = (row["state"], row["endReason"])
    for outbound in DIRECTIONS[row["call"]]:
        for answered in ANSWERED[row["answered"]]:
            if row["Meta's webhook"] == "terminate":
                reason, _ = terminate_reason(
                    row["status"], [], answered=answered, outbound=outbound
                )
                kind = EngineEventKind.ENDED
            else:
                assert row["Meta's webhook"] == "statuses", row
                assert outbound, "statuses come for business-initiated calls only"
                meant = CALL_STATUS.get(row["status"])
                assert meant is not None, row
                kind, reason = meant
            assert _bridge_sees(kind, reason, outbound, answered) == want, (outbound, answered)


def test_every_status_the_code_maps_has_a_row() -> None:
    documented = {(r["Meta's webhook"], r["status"]) for r in ROWS}
    mapped = {("terminate", s) for s in TERMINATE_STATUS} | {("statuses", s) for s in CALL_STATUS}
    assert documented == mapped


def test_metas_rejected_is_rejected_on_both_webhooks() -> None:
    """The user turned down our call: ``rejected`` (``declined`` is us declining theirs)."""
    rejected = [r for r in ROWS if r["status"] == "REJECTED"]
    assert {r["Meta's webhook"] for r in rejected} == {"terminate", "statuses"}
    assert {r["endReason"] for r in rejected} == {"rejected"}
