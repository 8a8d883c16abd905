"""A looping playback (hold music) opens each further pass of its file in a thread while the
pass before it plays: never in the clock's tick, where the open (~20 ms) held every call's
media on the worker once a pass."""

from __future__ import annotations

import asyncio
import threading
import wave
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bridge.attachments.playback import Playback, _opened

PASS_FRAMES = 5  # 100 ms at 16 kHz: five 20 ms bus frames


def _tone_wav(path: Path) -> Path:
    t = np.arange(PASS_FRAMES * 320) / 16_000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())
    return path


def _host() -> SimpleNamespace:
    events: list[str] = []
    return SimpleNamespace(
        detach=lambda _playback: None, emit=lambda name, **_: events.append(name), events=events
    )


async def _playback(path: Path, opened_on_loop: list[bool]) -> Playback:
    def reopen():  # the real open, noting the thread it runs in
        opened_on_loop.append(threading.current_thread() is threading.main_thread())
        return _opened(path)

    first = await asyncio.to_thread(_opened, path)
    return Playback(_host(), first, reopen, to_downlink=False, loop=True)


async def test_each_further_pass_is_opened_off_the_loop_and_plays_on_without_a_gap(
    tmp_path: Path,
) -> None:
    path = _tone_wav(tmp_path / "music.wav")
    opened_on_loop: list[bool] = []
    playback = await _playback(path, opened_on_loop)
    frames = []
    for _ in range(3 * PASS_FRAMES + 1):
        frames.append(playback.next_frame())
        await asyncio.sleep(0.02)  # a tick: the next pass opens meanwhile
    assert all(f is not None and len(f) == 320 for f in frames)
    # The passes are the file again, frame for frame, one after the other.
    for k in range(1, 3):
        for i in range(PASS_FRAMES):
            assert np.array_equal(frames[k * PASS_FRAMES + i], frames[i])
    assert opened_on_loop == [False, False, False]  # passes 2, 3 and 4, each in a thread
    assert playback.frames_played == 3 * PASS_FRAMES + 1


async def test_a_pass_shorter_than_the_open_opens_the_next_itself_and_stop_cancels(
    tmp_path: Path,
) -> None:
    path = _tone_wav(tmp_path / "music.wav")
    opened_on_loop: list[bool] = []
    playback = await _playback(path, opened_on_loop)
    # Frames taken without the loop turning: the thread's open cannot have finished.
    frames = [playback.next_frame() for _ in range(PASS_FRAMES + 2)]
    assert all(f is not None for f in frames)
    assert np.array_equal(frames[PASS_FRAMES], frames[0])
    assert opened_on_loop.count(True) == 1  # the fallback, in the tick
    pending = playback._next_pass
    assert pending is not None  # the pass after, opening
    playback.finished()
    assert pending.cancelled() and playback._next_pass is None
    assert playback.host.events == ["playback.finished"]
    await asyncio.sleep(0.05)  # the thread's open ends; its result is dropped


async def test_a_playback_says_why_it_finished_and_goes_on_where_it_was(tmp_path: Path) -> None:
    """``playback.finished``'s ``reason``: ``played`` when the file ran out, ``stopped`` when
    it was taken off the bus; a playback opened with ``skip`` (a call moved here) plays the
    file from that frame on, its count going on from what it had played."""
    path = _tone_wav(tmp_path / "prompt.wav")
    whole = list(await asyncio.to_thread(_opened, path))
    finished: list[dict] = []

    def host() -> SimpleNamespace:
        return SimpleNamespace(
            detach=lambda _playback: None, emit=lambda name, **data: finished.append(data)
        )

    rest = await asyncio.to_thread(_opened, path, 2)
    played = Playback(
        host(),
        rest,
        lambda: _opened(path),
        to_downlink=False,
        loop=False,
        playback_id="pb_moved",
        frames_played=2,
    )
    frames = []
    while (frame := played.next_frame()) is not None:
        frames.append(frame)
    played.finished()
    assert all(np.array_equal(a, b) for a, b in zip(frames, whole[2:], strict=True))
    first = await asyncio.to_thread(_opened, path)
    stopped = Playback(host(), first, lambda: _opened(path), to_downlink=False, loop=False)
    stopped.next_frame()
    stopped.finished()
    assert [(f["playbackId"], f["reason"], f["framesPlayed"]) for f in finished] == [
        ("pb_moved", "played", PASS_FRAMES),
        (stopped.id, "stopped", 1),
    ]
