"""What the G.711 tests of Meta's leg share (``tests/sip/test_meta_g711*.py``): a WhatsApp
leg and a baresip PBX phone on the same G.711, their tones heard both ways by frequency and
level, and their packets forwarded without decoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from .baresip_phone import BaresipPhone
from .spectrum import dominant_frequency
from .waits import until, until_passes

META_HZ, PHONE_HZ, BROWSER_HZ = 440, 660, 1000


def level_dbfs(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean((samples / 32768) ** 2)) + 1e-12))


def whatsapp_heard(peer: Any, chunks: int = 50) -> tuple[float, float]:
    assert peer.recorder.chunks, "WhatsApp hears nothing yet"  # polled, not raised
    samples = np.concatenate(peer.recorder.chunks[-chunks:]).astype(np.float64)
    return dominant_frequency(samples, peer.recorder.rate), level_dbfs(samples)


def m_line_payloads(sdp: str) -> list[str]:
    [m_line] = [ln for ln in sdp.splitlines() if ln.startswith("m=audio")]
    return m_line.split()[3:]


def phone_hears_whatsapp(p: BaresipPhone) -> None:
    samples, rate = p.heard(1.0)
    heard, level = dominant_frequency(samples, rate), level_dbfs(samples)
    assert heard == pytest.approx(META_HZ, abs=5) and level > -30, (heard, level)


def whatsapp_hears_phone(meta_peer: Any) -> None:
    heard, level = whatsapp_heard(meta_peer)
    assert heard == pytest.approx(PHONE_HZ, abs=5) and level > -30, (heard, level)


async def tones_forwarded_untouched(
    p: BaresipPhone, meta_peer: Any, leg: Any, whatsapp: Any
) -> tuple[int, int]:
    """Both legs on the same G.711: two seconds forwarded each way, each side hearing the
    other's tone, and neither side decoded; the counts forwarded (to the phone, to WhatsApp)."""
    assert whatsapp.codec == leg.media.codec != "opus", (whatsapp.codec, leg.media.codec)

    def forwarded() -> tuple[int, int]:
        return leg.media.track.forwarded_frames, whatsapp.leg_json()["framesForwarded"]

    await until(lambda: min(forwarded()) > 100, 10, "two seconds forwarded each way")
    await until_passes(lambda: phone_hears_whatsapp(p), 10)
    await until_passes(lambda: whatsapp_hears_phone(meta_peer), 10)
    assert whatsapp.leg_json()["packetsNotDecoded"] > 50
    assert leg.media.leg.playout.not_decoded > 50
    return forwarded()
