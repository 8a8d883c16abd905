"""Real Chromium for the interop tests: Debian's package driven by Playwright (browsers cannot
be downloaded here), with loopback-only peer connections and fake media devices."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .requires import require

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
HOW = (
    "install Debian's chromium (`apt-get install chromium`) and `pip install playwright`, "
    "or run `make test`, which does both"
)

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None


def require_chromium() -> None:
    """At a test module's top: skip (or fail under CI) where Chromium or Playwright is missing."""
    require(async_playwright is not None and os.path.exists(CHROMIUM), "Chromium/Playwright", HOW)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
"""Headless Chromium for the tests: fake devices, loopback peer connections, no network."""


def mic_wav(path: Path, pcm: np.ndarray) -> str:
    """``pcm`` (48 kHz mono) as a WAV for Chromium's fake microphone, which loops it."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())
    return str(path)


@asynccontextmanager
async def chromium_hearing(wav: str) -> AsyncIterator[Any]:
    """A headless Chromium whose microphone plays ``wav`` (:func:`mic_wav`)."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def loopback_only(route) -> None:
    """Offer only Chromium's loopback candidates, so every packet stays on 127.0.0.1."""
    body = route.request.post_data_json
    lines = body["sdp"].split("\r\n")
    kept = [ln for ln in lines if not ln.startswith("a=candidate:") or " 127.0.0.1 " in ln]
    body["sdp"] = "\r\n".join(kept)
    await route.continue_(post_data=json.dumps(body))


async def wait_for(page, js: str, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await page.evaluate(js)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        await asyncio.sleep(0.1)
