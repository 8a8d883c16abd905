"""The encoder curve: libopus at 16 kHz on the bench's speech, offline, no network.

Every complexity 0-10 × bitrate × in-band FEC setting encodes the same speech with
:class:`bridge.audio.opus.OpusEncoder` (the bridge's own encoder, VoIP application, 20 ms
frames), decodes it with :class:`~bridge.audio.opus.OpusDecoder` at 16 kHz and scores the
result with PESQ-WB; the encode time per 20 ms frame is the best of a few passes (so a busy
neighbour on a shared machine inflates it less). FEC "on" spends part of the bitrate on LBRR
data for the previous frame (RFC 6716 §2.1.7) in proportion to the expected loss, which costs
quality on a clean network; that is the price measured here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.scoring import pesq_wb
from bench.speech import frames
from bridge.audio.opus import OpusDecoder, OpusEncoder

COMPLEXITIES = tuple(range(11))
BITRATES = (16_000, 20_000, 24_000, 32_000, 40_000)
FEC_SETTINGS = (("off", False, 0), ("on, 3 % expected", True, 3), ("on, 10 % expected", True, 10))
"""(label, in-band FEC, expected loss %): 10 % is the bridge's fixed setting today."""
PASSES = 3


def encode_all(chunks: list[np.ndarray], **settings: Any) -> tuple[list[bytes], float]:
    """The packets of one pass, and the best µs per frame over :data:`PASSES` passes."""
    best = float("inf")
    packets: list[bytes] = []
    for _ in range(PASSES):
        enc = OpusEncoder(16_000, dtx=False, **settings)
        t0 = time.perf_counter()
        packets = [enc.encode(c) for c in chunks]
        best = min(best, (time.perf_counter() - t0) / len(chunks) * 1e6)
    return packets, best


def decode_all(packets: list[bytes]) -> np.ndarray:
    dec = OpusDecoder(16_000)
    return np.concatenate([dec.decode(p) for p in packets])


def curve(
    reference: np.ndarray,
    complexities: tuple[int, ...] = COMPLEXITIES,
    bitrates: tuple[int, ...] = BITRATES,
    fec_settings: tuple[tuple[str, bool, int], ...] = FEC_SETTINGS,
) -> list[dict[str, Any]]:
    chunks = frames(reference)
    rows = []
    for label, fec, loss in fec_settings:
        for bitrate in bitrates:
            for complexity in complexities:
                packets, us = encode_all(
                    chunks, bitrate=bitrate, complexity=complexity, fec=fec, expected_loss=loss
                )
                rows.append(
                    {
                        "complexity": complexity,
                        "bitrate": bitrate,
                        "fec": label,
                        "expected_loss": loss,
                        "pesq_wb": round(pesq_wb(reference, decode_all(packets)), 3),
                        "us_per_frame": round(us, 1),
                        "bytes_per_packet": round(sum(map(len, packets)) / len(packets), 1),
                    }
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one table per FEC setting, bitrates across, complexities down, each cell
    ``PESQ-WB / µs``."""
    out = []
    for label in dict.fromkeys(r["fec"] for r in rows):
        sub = [r for r in rows if r["fec"] == label]
        bitrates = sorted({r["bitrate"] for r in sub})
        cell = {(r["complexity"], r["bitrate"]): r for r in sub}
        out.append(f"FEC {label} — PESQ-WB / µs per 20 ms frame\n")
        out.append("| complexity | " + " | ".join(f"{b // 1000} kbit/s" for b in bitrates) + " |")
        out.append("|---|" + "---|" * len(bitrates))
        for c in sorted({r["complexity"] for r in sub}):
            vals = [cell[(c, b)] for b in bitrates]
            out.append(
                f"| {c} | "
                + " | ".join(f"{v['pesq_wb']:.2f} / {v['us_per_frame']:.0f}" for v in vals)
                + " |"
            )
        out.append("")
    return "\n".join(out)
