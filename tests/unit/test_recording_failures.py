"""A recording's disk failing mid-call: said once at WARNING while it lasts, its end said, and
the files still finished (no sockets: the recorder on a bare bus)."""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.attachments import recorder as recorder_module
from bridge.attachments.recorder import CallRecorder
from bridge.attachments.recording import RecordingService
from bridge.attachments.wav import (
    HEADER_BYTES,
    WavTrack,
    join_files,
    mix_files,
    repair_wav,
    wav_header,
)
from bridge.audio import FRAME_SAMPLES
from bridge.errors import CallStateError, StorageFailed
from bridge.media import BusFrame, CallBus


class _Host:
    """The call as a recorder sees it: a bus and an event sink."""

    call_id = "0" * 32

    def __init__(self) -> None:
        self.bus = CallBus(self.call_id)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, type_: str, **data: Any) -> None:
        self.events.append((type_, data))

    def detach(self, attachment: Any) -> None:
        pass


@pytest.fixture
def finisher() -> Iterator[ThreadPoolExecutor]:
    """The recordings' threads (``RecordingService.finisher``)."""
    with ThreadPoolExecutor(1) as pool:
        yield pool


async def test_a_full_disk_is_said_once_and_its_end_said(tmp_path: Path, caplog, finisher) -> None:
    host = _Host()
    recorder = CallRecorder(
        host, tmp_path / "rec" / "call", tmp_path, 3600.0, lambda r: None, finisher
    )  # type: ignore[arg-type]
    disk_full = True
    written = 0  # frames the writer thread took
    write_at = WavTrack.write_at

    def write_or_fail(track: WavTrack, pcm: Any, t: float) -> None:
        nonlocal written
        written += 1
        if disk_full and track is recorder.inbound:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_at(track, pcm, t)

    def taken(frames: int) -> None:
        """Wait until the writer thread took that many frames."""
        deadline = time.monotonic() + 5.0
        while written < frames and time.monotonic() < deadline:
            time.sleep(0.005)

    tone = np.full(FRAME_SAMPLES, 1000, dtype=np.int16)
    t = time.monotonic()
    caplog.set_level(logging.INFO, logger="bridge.attachments.recorder")
    try:
        WavTrack.write_at = write_or_fail  # type: ignore[method-assign]
        for i in range(100):  # two seconds of a call on a full disk, both ways
            recorder._down(BusFrame(tone, t + 0.02 * i))
            recorder._up(BusFrame(tone, t + 0.02 * i))
            taken(2 * i)  # never more queued than the writer's queue holds
        taken(200)
        disk_full = False
        for i in range(100, 110):
            recorder._down(BusFrame(tone, t + 0.02 * i))
        taken(210)
    finally:
        WavTrack.write_at = write_at  # type: ignore[method-assign]
    recordings = await recorder.close()

    said = [r for r in caplog.records if r.name == "bridge.attachments.recorder"]
    failing = [r for r in said if "No space left" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.WARNING, caplog.text
    assert not [r for r in said if r.levelno >= logging.ERROR], caplog.text
    back = [r for r in said if "work again" in r.getMessage()]
    assert len(back) == 1 and "100 frames" in back[0].getMessage(), caplog.text
    assert {r.kind for r in recordings} == {"inbound", "outbound", "mixed"}
    assert [type_ for type_, _ in host.events] == ["recording.ready"]


class _EndedHost(_Host):
    """A call that ended while it moved here: it takes no attachment (the runtime's 409)."""

    def attached(self, kind: str) -> list[Any]:
        return []

    def attach(self, attachment: Any) -> None:
        raise CallStateError(f"call {self.call_id} has ended")


async def test_a_moved_recording_of_a_call_that_ended_meanwhile_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    """A handover's recording resumes into its next segment on the new owner; a call that
    ended while it moved (its engine said so during the media's open) refuses the recorder.
    ``resume`` left it as it was: its writer thread waiting for ever, its two files open with
    no WAV header, its taps on the bus. Now it is discarded, as ``start`` does: no segment of
    a call that had ended (it was finished, and announced after the call's end)."""
    service = RecordingService(tmp_path, 1.0)
    host = _EndedHost()
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(CallStateError):
        await service.resume(host, {"origin": "files/calls/c1", "segment": 1})  # type: ignore[arg-type]
    writers = [t for t in threading.enumerate() if t.name.startswith("recorder[")]
    assert not [t for t in writers if t.name not in before], writers
    assert not host.bus.downlink_tapped and not host.bus.uplink_tapped
    assert not list((tmp_path / "files" / "calls").glob("c1-seg2-*"))
    assert host.events == []


async def test_a_recording_that_cannot_be_finished_says_so_to_the_app(
    tmp_path: Path, monkeypatch, finisher
) -> None:
    """A disk that refuses the recording's last writes (its mixed file, at the stop): no
    ``recording.ready`` can come, and the app heard nothing either; now ``recording.failed``
    says so, with the reason (and the stop answers 503 as before)."""
    host = _Host()
    recorder = CallRecorder(
        host, tmp_path / "rec" / "call", tmp_path, 3600.0, lambda r: None, finisher
    )  # type: ignore[arg-type]

    def disk_full(*_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recorder_module, "mix_files", disk_full)
    with pytest.raises(StorageFailed):
        await recorder.close()
    assert [type_ for type_, _ in host.events] == ["recording.failed"]
    failed = host.events[0][1]
    assert failed["segment"] == 1 and failed["reason"] == "storage_failed"
    assert "No space left" in failed["message"]


async def test_a_recording_the_sweep_cannot_delete_is_said_once_not_at_every_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recording past its retention that cannot be deleted (here its path is a directory:
    ``unlink`` fails even for root) stays, tried again at each sweep, and is said at WARNING
    once, not once a sweep; its deletion, when it comes, says how many tries it took."""
    from bridge.attachments.recorded import Recording

    service = RecordingService(tmp_path, 1.0)
    stuck = tmp_path / "files" / "calls" / "c1-inbound.wav"
    stuck.mkdir()
    service.index["r1"] = Recording(
        "r1", "c1", "inbound", stuck, "files/calls/c1-inbound.wav", 0, 0, 0.0, time.time() - 1
    )
    caplog.set_level(logging.INFO, logger="bridge.attachments.recording")
    try:
        assert [service.sweep() for _ in range(5)] == [0] * 5
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1 and "r1 not deleted" in said[0], said
        stuck.rmdir()
        assert service.sweep() == 1 and "r1" not in service.index
        assert "deleted after 6 tries" in caplog.records[-1].getMessage()
    finally:
        await service.close()


async def test_a_write_that_fails_on_a_defect_never_leaves_the_recordings_stop_waiting(
    tmp_path: Path, caplog, finisher
) -> None:
    """A write failing on something other than the disk (a defect: here a ValueError) ended
    the writer thread; its queue then filled, and the stop, which queues its end there, waited
    for good (the call's teardown with it). The writer goes on, the failure said once."""
    host = _Host()
    recorder = CallRecorder(
        host, tmp_path / "rec" / "call", tmp_path, 3600.0, lambda r: None, finisher
    )  # type: ignore[arg-type]
    write_at = WavTrack.write_at

    def broken(track: WavTrack, pcm: Any, t: float) -> None:
        if track is recorder.inbound:
            raise ValueError("a defect in a write")
        write_at(track, pcm, t)

    tone = np.full(FRAME_SAMPLES, 1000, dtype=np.int16)
    t = time.monotonic()
    caplog.set_level(logging.WARNING, logger="bridge.attachments.recorder")
    try:
        WavTrack.write_at = broken  # type: ignore[method-assign]
        for i in range(600):  # more than the writer's queue holds, had it stopped taking them
            recorder._down(BusFrame(tone, t + 0.02 * i))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # the writer's pace
    finally:
        WavTrack.write_at = write_at  # type: ignore[method-assign]
    recordings = await asyncio.wait_for(recorder.close(), 10)
    assert {r.kind for r in recordings} == {"inbound", "outbound", "mixed"}
    said = [r.getMessage() for r in caplog.records if "fail" in r.getMessage()]
    assert len(said) == 1 and "a defect in a write" in said[0], said


def test_a_segment_a_crash_left_with_half_a_sample_joins_and_mixes(
    tmp_path: Path,
) -> None:
    """A segment a crash cut mid-sample (an odd count of data bytes, which ``repair_wav``
    leaves in the file) joined before the next one (``join_files``, a voicemail that moved):
    the half sample is dropped. Written through, it shifted every later byte by one, and the
    caller's message after the move played as loud noise. Mixed with the other side
    (``mix_files``), the odd buffer stopped the mix (numpy refuses it): dropped there too."""
    first, second, out = tmp_path / "seg1.wav", tmp_path / "seg2.wav", tmp_path / "joined.wav"
    first.write_bytes(wav_header(0) + np.full(100, 1000, "<i2").tobytes() + b"\x07")
    assert repair_wav(first)
    second.write_bytes(wav_header(200) + np.full(100, 2000, "<i2").tobytes())
    for cut, silence in ((None, 0), (150, 50)):  # whole, and cut past its end (padded)
        assert join_files([(first, cut), (second, None)], out) == 200 + silence
        samples = np.frombuffer(out.read_bytes()[HEADER_BYTES:], "<i2")
        assert samples.tolist() == [1000] * 100 + [0] * silence + [2000] * 100
    assert mix_files(first, second, out) == 100
    assert np.frombuffer(out.read_bytes()[HEADER_BYTES:], "<i2").tolist() == [3000] * 100
