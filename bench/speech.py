"""Speech for the quality bench, made at run time: Harvard sentences spoken by espeak-ng.

The Harvard sentences (IEEE Recommended Practice for Speech Quality Measurements, 1969) are
phonetically balanced and in the public domain; espeak-ng (Debian's ``espeak-ng``) speaks them
and sox (Debian's ``sox``) resamples its 22.05 kHz output to the bus's 16 kHz. Nothing is
shipped: the same text and voice give the same samples on the same espeak-ng version, and the
bench records that version with its results.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from importlib.util import find_spec
from pathlib import Path

import numpy as np

RATE = 16_000

HARVARD = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "Large size in stockings is hard to sell.",
)
"""Harvard list 1."""

VOICE = "en-us"
WORDS_PER_MINUTE = 150
GAP = 0.35
"""Seconds of silence between sentences (PESQ scores speech and pauses alike)."""


def missing_tools() -> list[str]:
    """What the quality bench needs and this machine lacks, as install hints."""
    missing = []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (apt-get install espeak-ng)")
    if shutil.which("sox") is None:
        missing.append("sox (apt-get install sox)")
    if find_spec("pesq") is None:
        missing.append("pesq (pip install pesq, or the project's 'quality' extra)")
    return missing


def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split("Data at")[0].strip()


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


TRIM = "silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse"
"""sox's effects that trim silence at both ends of a sentence."""


def sentence(text: str, workdir: Path) -> np.ndarray:
    """One sentence at 16 kHz mono int16, leading and trailing silence trimmed by sox."""
    raw, out = workdir / "raw.wav", workdir / "out.wav"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    # Resample (sox's default high-quality rate converter), then trim silence at both ends
    # (``silence 1 ... reverse silence 1 ... reverse``) so the gaps are ours. ``-R``: sox's
    # dither to 16 bits draws from a fixed seed, so the same text is the same speech in every
    # run (with a random one, a forwarded call's score moved 0.03 between runs on the speech
    # alone, and A/B comparisons read that noise as the bridge's).
    subprocess.run(
        ["sox", "-R", str(raw), "-r", str(RATE), "-b", "16", "-c", "1", str(out), *TRIM.split()],
        check=True,
        capture_output=True,
    )
    return _read_wav(out)


def speech(seconds: float = 16.0, level_dbfs: float = -20.0) -> np.ndarray:
    """Harvard sentences, each followed by :data:`GAP` of silence, until ``seconds`` are
    filled (the last sentence that starts before then is kept whole), 16 kHz int16, with an
    RMS over the whole clip of ``level_dbfs`` (speech peaks stay well clear of clipping)."""
    gap = np.zeros(int(GAP * RATE), dtype=np.int16)
    parts: list[np.ndarray] = [gap]
    total = gap.size
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        for text in HARVARD * 4:
            if total >= seconds * RATE:
                break
            clip = sentence(text, Path(tmp))
            parts += [clip, gap]
            total += clip.size + gap.size
    x = np.concatenate(parts).astype(np.float64)
    x *= 10 ** (level_dbfs / 20) * 32768 / max(1e-9, float(np.sqrt(np.mean(x**2))))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def frames(pcm: np.ndarray, size: int = 320) -> list[np.ndarray]:
    """``pcm`` cut into 20 ms frames (the last one padded with silence)."""
    n = -(-pcm.size // size)
    padded = np.zeros(n * size, dtype=np.int16)
    padded[: pcm.size] = pcm
    return [padded[i * size : (i + 1) * size] for i in range(n)]
