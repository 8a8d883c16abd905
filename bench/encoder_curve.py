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
from bridge.audio.opus import OpusDecoder, OpusEncoder, has_fec

COMPLEXITIES = tuple(range(11))
BITRATES = (16_000, 20_000, 24_000, 32_000, 40_000)
FEC_SETTINGS = (("off", False, 0), ("on, 3 % expected", True, 3), ("on, 10 % expected", True, 10))
"""(label, in-band FEC, expected loss %): 10 % is the bridge's fixed setting today."""
PASSES = 3


def encode_all(
    chunks: list[np.ndarray], celt: bool = False, **settings: Any
) -> tuple[list[bytes], float]:
    """The packets of one pass, and the best µs per frame over :data:`PASSES` passes."""
    best = float("inf")
    packets: list[bytes] = []
    for _ in range(PASSES):
        enc = OpusEncoder(16_000, dtx=False, **settings)
        if celt:
            enc.set_celt_only(True)
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
    celt: bool = False,
) -> list[dict[str, Any]]:
    chunks = frames(reference)
    rows = []
    for label, fec, loss in fec_settings:
        for bitrate in bitrates:
            for complexity in complexities:
                packets, us = encode_all(
                    chunks,
                    celt,
                    bitrate=bitrate,
                    complexity=complexity,
                    fec=fec,
                    expected_loss=loss,
                )
                rows.append(
                    {
                        "complexity": complexity,
                        "bitrate": bitrate,
                        "mode": "CELT" if celt else "libopus' choice (SILK)",
                        "fec": label,
                        "expected_loss": loss,
                        "pesq_wb": round(pesq_wb(reference, decode_all(packets)), 3),
                        "us_per_frame": round(us, 1),
                        "bytes_per_packet": round(sum(map(len, packets)) / len(packets), 1),
                    }
                )
    return rows


CELT_BITRATES = (56_000, 64_000, 68_000, 72_000, 80_000, 96_000)
CELT_COMPLEXITIES = (0, 1, 2, 3, 5, 10)


def celt_curve(reference: np.ndarray) -> list[dict[str, Any]]:
    """The clean-link choice: CELT-only at the bit rates where it matches SILK, next to SILK at
    the bit rates and complexities the bridge used before (40 kbit/s, complexity 5)."""
    silk = curve(reference, (1, 5), (40_000, 64_000), FEC_SETTINGS[:1])
    celt = curve(reference, CELT_COMPLEXITIES, CELT_BITRATES, (("off, CELT only", False, 0),), True)
    return silk + celt


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


LOSS_SETTINGS = (
    # (label, bitrate, complexity, in-band FEC planned for %, RED depth)
    ("plain SILK (the setting under RED, and for a browser capping the rate)", 40_000, 5, 0, 0),
    ("FEC 10 % at 40 kbit/s, complexity 5", 40_000, 5, 10, 0),
    ("FEC 10 % at 40 kbit/s, complexity 8", 40_000, 8, 10, 0),
    ("FEC 10 % at 48 kbit/s, complexity 5", 48_000, 5, 10, 0),
    ("FEC 10 % at 48 kbit/s, complexity 8 (the bridge's)", 48_000, 8, 10, 0),
    ("FEC 20 % at 48 kbit/s, complexity 8", 48_000, 8, 20, 0),
    ("FEC 10 % at 56 kbit/s, complexity 8", 56_000, 8, 10, 0),
    ("RED, previous frame, 40 kbit/s, complexity 5", 40_000, 5, 0, 1),
    ("RED, two previous frames, 40 kbit/s, complexity 5", 40_000, 5, 0, 2),
    ("CELT, the clean-link setting: 72 kbit/s, complexity 2", 72_000, 2, 0, 0),
)
"""The downlink settings the loss curve compares (``--loss-curve``); a setting above SILK's
range (more than 64 kbit/s) is coded CELT-only, as the bridge's clean-link setting is."""
LOSS_PROFILES = (
    ("clean", 0.0, 0.0),
    ("3 %", 0.03, 0.0),
    ("10 %", 0.10, 0.0),
    ("20 %", 0.20, 0.0),
    ("bursts 5 %", 0.05, 2.5),
)
"""(label, loss, mean burst length): random loss, and Gilbert bursts as the path bench's."""
LOSS_SEEDS = (1, 2, 3)


def lossy_decode(packets: list[bytes], lost: set[int], red: int) -> np.ndarray:
    """An ideal receiver of ``packets`` less ``lost``: a lost frame from a RED copy in one of
    the ``red`` packets after it, else from the next packet's FEC data, else concealed."""
    dec = OpusDecoder(16_000)
    out = []
    for i, packet in enumerate(packets):
        if i not in lost or any(
            i + k < len(packets) and i + k not in lost for k in range(1, red + 1)
        ):
            out.append(dec.decode(packet))
        elif i + 1 < len(packets) and i + 1 not in lost and has_fec(packets[i + 1]):
            out.append(dec.decode_fec(packets[i + 1], 320))
        else:
            out.append(dec.conceal(320))
    return np.concatenate(out)


def loss_curve(reference: np.ndarray) -> list[dict[str, Any]]:
    """Each of :data:`LOSS_SETTINGS` under each of :data:`LOSS_PROFILES` (the mean over
    :data:`LOSS_SEEDS`), offline: the encoder's side of the downlink's protection, without a
    network's timing (the path bench has that)."""
    from bench.quality_paths import Profile, Wire

    chunks = frames(reference)

    def lost(loss: float, burst: float, seed: int) -> set[int]:
        wire = Wire(Profile("offline", loss=loss, burst=burst), seed)
        return {i for i in range(len(chunks)) if wire.fate() is None}

    patterns = {
        (name, seed): lost(loss, burst, seed)
        for name, loss, burst in LOSS_PROFILES
        for seed in LOSS_SEEDS
    }
    rows = []
    for label, bitrate, complexity, planned, red in LOSS_SETTINGS:
        enc = OpusEncoder(
            16_000,
            bitrate=bitrate,
            complexity=complexity,
            fec=planned > 0,
            expected_loss=planned,
            dtx=False,
        )
        if bitrate > 64_000:
            enc.set_celt_only(True)
        packets = [enc.encode(c) for c in chunks]
        octets = sum(map(len, packets)) / len(packets)
        scores = {}
        for name, loss, _ in LOSS_PROFILES:
            seeds = LOSS_SEEDS if loss else LOSS_SEEDS[:1]
            scores[name] = round(
                float(
                    np.mean(
                        [
                            pesq_wb(reference, lossy_decode(packets, patterns[(name, s)], red))
                            for s in seeds
                        ]
                    )
                ),
                2,
            )
        rows.append(
            {
                "setting": label,
                "bitrate": bitrate,
                "complexity": complexity,
                "planned_loss": planned,
                "red_depth": red,
                # RED: each copy once per packet again, plus a 4-octet header per copy
                "payload_kbps": round((octets * (1 + red) + 4 * red) * 8 / 20, 1),
                "pesq_wb": scores,
            }
        )
    return rows


def loss_table(rows: list[dict[str, Any]]) -> str:
    names = [n for n, _, _ in LOSS_PROFILES]
    out = [
        "| setting | payload kbit/s | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        out.append(
            f"| {r['setting']} | {r['payload_kbps']:.1f} | "
            + " | ".join(f"{r['pesq_wb'][n]:.2f}" for n in names)
            + " |"
        )
    return "\n".join(out)
