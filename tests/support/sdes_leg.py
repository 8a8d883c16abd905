"""The bridge's SDES leg to Meta as the SDES tests drive it (``engines/cloudapi/sdes.py``):
built on loopback, its key presses recorded, the bus it plugs into recorded."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from bridge.config import settings_for_tests
from bridge.engines.base import EngineStats
from bridge.engines.cloudapi.sdes import SdesPeer


class Port:
    """The WhatsApp side's door into the call as the pump plugs it into a leg
    (``media/conference.py`` ``CallPort``), recorded: the frames the leg's receiver hands it,
    the frames its sender takes from it, the leg's end."""

    def __init__(self, send: list[np.ndarray] | None = None) -> None:
        self.accepted: list[np.ndarray] = []
        self.outbox = deque(send or ())
        self.taken = 0
        self.why: list[str] = []

    def accept(self, pcm: np.ndarray) -> None:
        self.accepted.append(pcm)

    def take(self, now: float) -> np.ndarray | None:
        if not self.outbox:
            return None
        self.taken += 1
        return self.outbox.popleft()

    def ended(self, why: str) -> None:
        self.why.append(why)


def sdes_leg(**kw: Any) -> tuple[SdesPeer, list[tuple[str, int]]]:
    ice = settings_for_tests(ice_addresses=("127.0.0.1",)).ice
    digits: list[tuple[str, int]] = []
    peer = SdesPeer(
        "sdes-test",
        ice,
        EngineStats(),
        on_dtmf=lambda _p, d, ms: digits.append((d, ms)),
        on_media=lambda _p: None,
        **kw,
    )
    return peer, digits
