"""How a phone on a trunk sounds, offline: speech (espeak-ng) through the trunk leg's receiver on a
simulated clock (``bench/phone_quality.py``), scored with PESQ-WB next to an ideal receiver fed
the same packets. No real time and no process: out of ``test_quality.py``'s serial module,
whose calls need the host to themselves (the same seeded packets score the same anywhere)."""

from __future__ import annotations

import pytest

from bench.speech import missing_tools, speech

from ..support.requires import require

require(
    not missing_tools(),
    "the quality bench's tools",
    "; ".join(missing_tools()) or "-",
)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("codec", "profile"), [("PCMU", "jitter"), ("opus", "loss3")])
def test_a_phone_on_a_trunk_sounds_as_an_ideal_receiver_makes_it(codec: str, profile: str) -> None:
    """A phone's speech (PCMU under 0–40 ms of jitter, Opus with FEC under 3 % loss) through
    the trunk leg's receiver on a simulated clock (``bench/phone_quality.py``, seed 1 as
    ``make quality``'s): within 0.1 PESQ-WB of an ideal receiver fed the same packets."""
    from bench.phone_quality import phone_call

    row = phone_call(speech(4.0), codec, profile, seed=1)
    assert row["bridge"] >= row["ideal"] - 0.1, row
    if profile == "jitter":
        assert row["packets_reordered"] > 10, row  # the network did reorder
    else:
        assert row["packets_lost"] > 5 and row["fec_recovered_ms"] > 0, row  # FEC was used
