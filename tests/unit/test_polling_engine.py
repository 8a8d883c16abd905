"""A polled engine remembers the calls that ended (so a listing that still shows one reports
nothing twice) within a bound, whichever way they ended: before, the calls this bridge hung
up itself — most of them — were remembered for the life of the process."""

from __future__ import annotations

from bridge.config import load_settings
from bridge.engines import create_engine
from bridge.engines.polling import PollingEngine

ENV = {"BRIDGE_ENGINE": "zuckzapgo", "BRIDGE_ENGINE_URL": "http://127.0.0.1:9"}


def test_the_calls_it_hung_up_are_remembered_within_the_bound() -> None:
    engine = create_engine(load_settings([], {**ENV, "BRIDGE_ENGINE_TOKEN": "z"}))
    assert isinstance(engine, PollingEngine)
    for n in range(25_000):
        engine.hung_up(f"call-{n}")
    assert 0 < len(engine._calls._ended) <= 10_000
    assert engine._calls.over("call-24999")
