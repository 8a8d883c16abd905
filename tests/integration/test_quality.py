"""How the bridge sounds on seeded networks: speech (espeak-ng) through a real bridge process
and real aiortc peers, scored with PESQ-WB next to an ideal receiver fed the same packets
(bench/quality_paths.py, the quality bench's own harness)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.speech import missing_tools, speech

from ..support.requires import require

require(
    not missing_tools(),
    "the quality bench's tools",
    "; ".join(missing_tools()) or "-",
)


@pytest.fixture(scope="module")
def speech_8s() -> Any:
    return speech(8.0)


@pytest.mark.timeout(180)
async def test_the_bridge_hears_as_well_as_an_ideal_receiver_under_loss_and_jitter(
    speech_8s: Any,
) -> None:
    from bench.quality_paths import run_paths

    out = await run_paths(speech_8s, ["loss10", "jitter+loss3"], seed=7, echo=False)
    for name in ("loss10", "jitter+loss3"):
        up = out[name]["uplink"]
        # The bridge's receiver uses every packet the ideal one does: reordered ones, FEC, PLC.
        assert up["bridge"] >= up["ideal"] - 0.2, (name, up)
        # ... and that is worth hearing: FEC beats concealment alone.
        assert up["ideal"] > up["ideal_plc_only"] + 0.2, (name, up)
        receiver = out[name]["receiver"]
        assert receiver["fecPacketsReceived"] > 0 and receiver["packetsLost"] > 0
    assert out["jitter+loss3"]["receiver"]["packetsReordered"] > 20
    # One bridge encode towards the browser (32 kbit/s, complexity 6): near the source.
    assert out["jitter+loss3"]["downlink"]["bridge"] > 2.8


@pytest.mark.timeout(120)
async def test_the_echo_round_trip_through_two_bridge_hops_stays_clear(speech_8s: Any) -> None:
    from bench.quality_paths import run_paths

    out = await run_paths(speech_8s, [], echo=True)
    assert out["echo"]["round_trip"]["bridge"] >= 3.2
