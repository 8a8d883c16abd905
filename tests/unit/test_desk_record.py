"""An agent's record as the desk's store keeps it (JSON in Redis, read by every worker)."""

from __future__ import annotations

import json

from bridge.desk.store import AgentRecord


def test_a_record_reads_as_written_its_own_presence_only_when_not_available() -> None:
    """The agent's own presence (``chosen``) is written only when it is not ``available``, so
    the common record is as a bridge before it wrote it; a field a newer bridge adds (a rolling
    upgrade) is passed over rather than refused."""
    on_call = AgentRecord(None, "ann", ("sales",), "busy", 1.0, 2.0, "w1", "call-1")
    assert "chosen" not in json.loads(on_call.to_json())
    assert AgentRecord.from_json(on_call.to_json()) == on_call
    away = on_call.with_state("away", "call-1")
    away = AgentRecord.from_json(json.dumps({**json.loads(away.to_json()), "chosen": "away"}))
    assert away.chosen == "away" and json.loads(away.to_json())["chosen"] == "away"
    newer = {**json.loads(on_call.to_json()), "aFieldOfANewerBridge": 1}
    assert AgentRecord.from_json(json.dumps(newer)) == on_call
