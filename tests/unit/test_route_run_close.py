"""A voicemail recording on a call that moves twice (``desk/runner.py`` ``RouteRun.close``):
the middle worker's run closes as the call moves on, the call live."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bridge.desk.runner import RouteRun


@pytest.mark.parametrize("live", [True, False])
async def test_a_voicemail_is_joined_where_the_call_ends_not_where_it_moved_on(
    live: bool,
) -> None:
    """The middle worker (its recording the second segment) joined the segments so far into
    ``<origin>-joined-inbound.wav`` under its own id as the call moved on, announced to
    nobody; the last owner then wrote the same file, the middle worker's entry left stale.
    Now only the run of a call that ended joins and announces it."""
    joined: list[str] = []
    emitted: list[tuple[str, dict[str, Any]]] = []

    async def join(recorder: Any, heard: Any) -> Any:
        joined.append(heard.id)
        return SimpleNamespace(id="c1-joined", duration_ms=3000)

    async def close() -> list[Any]:
        return [SimpleNamespace(kind="inbound", id="c1-seg2", duration_ms=2000)]

    call = SimpleNamespace(id="c1", live=live)
    runtime = SimpleNamespace(
        call_id="c1",
        call=call,
        detach=lambda attachment: None,
        emit=lambda kind, **fields: emitted.append((kind, fields)),
    )
    desk = SimpleNamespace(recordings=SimpleNamespace(joined=join))
    run = RouteRun(desk, runtime, None)  # type: ignore[arg-type]
    run.voicemail = SimpleNamespace(segment=2, close=close)
    await run.close()
    if live:  # moved on: the worker that carries it on joins and tells
        assert (joined, emitted) == ([], [])
    else:
        assert joined == ["c1-seg2"]
        assert emitted == [("call.voicemail", {"recordingID": "c1-joined", "durationMs": 3000})]
