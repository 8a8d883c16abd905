"""A WhatsApp leg closed before its ICE starts (Meta refused the ``pre_accept``, or the caller
hung up first) leaves nothing behind: no "Task exception was never retrieved" from aioice or
aiortc (issue 47: "'Connection' object has no attribute '_nominated'"). The fix is
``rtc/release.py``'s wait for every task still on the closed connection's objects
(``tests/unit/test_release.py`` holds the tasks that failed before it); these run the real
leg, Meta's ice-lite offer answered (or ours made) and the leg closed at several moments
before its ICE checks complete."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.engines.base import EngineStats
from bridge.engines.cloudapi.peer import WhatsAppPeer
from tests.fakes.cloudapi import meta_offer


def _peer() -> WhatsAppPeer:
    return WhatsAppPeer(
        "early", None, EngineStats(), on_dtmf=lambda *_: None, on_media=lambda *_: None
    )


async def _meta_offer() -> tuple[RTCPeerConnection, str]:
    meta = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    meta.addTransceiver("audio", direction="sendrecv")
    await meta.setLocalDescription(await meta.createOffer())
    return meta, meta_offer(meta.localDescription.sdp)


def _never_retrieved(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


@pytest.mark.parametrize("pause", [0.0, 0.005, 0.05, 0.3])
async def test_answered_then_closed_before_ice_leaves_no_task_exception(
    caplog: Any, pause: float
) -> None:
    caplog.set_level(logging.ERROR)
    meta, offer = await _meta_offer()
    peer = _peer()
    await peer.answer(offer)  # our answer goes to Meta in the pre_accept …
    await asyncio.sleep(pause)
    await peer.close()  # … which Meta refuses: the leg closes, ICE never ran
    await meta.close()
    await asyncio.sleep(0.3)
    gc.collect()
    await asyncio.sleep(0)
    assert _never_retrieved(caplog) == []
    assert peer.state == "closed"


@pytest.mark.parametrize("pause", [0.0, 0.2])
async def test_offered_then_closed_before_ice_leaves_no_task_exception(
    caplog: Any, pause: float
) -> None:
    caplog.set_level(logging.ERROR)
    peer = _peer()
    await peer.offer()
    await asyncio.sleep(pause)
    await peer.close()
    await asyncio.sleep(0.3)
    gc.collect()
    await asyncio.sleep(0)
    assert _never_retrieved(caplog) == []
