"""``LeftSegments``: the recording segments a crashed worker left open, finished by a survivor.

A worker that dies mid-recording leaves its segment as the crash left it: WAV headers that
still say empty, no mixed file, no sidecar (so in no index) and no ``recording.ready``. The
worker that adopts the call (``RecordingService.resume(left_open=True)``) or ends it, when it
cannot move (``RecordingService.finish_left``, from ``Recovery``), finishes that segment as
its worker's stop would have and announces it, once, in the background (a long segment's mix
must not delay the move nor the reaping of the dead worker's other calls).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Literal

from ..audio import SAMPLE_RATE
from ..errors import BadRequest
from ..tasks import TaskSet
from .files import disk_error, inside
from .recorded import Recording, finished
from .wav import HEADER_BYTES, mix_files, repair_wav, wav_header

log = logging.getLogger(__name__)

Emit = Callable[..., None]
"""``emit(type, **data)``: an event about the call (``AttachmentHost.emit``)."""


class LeftSegments:
    """Finishes left segments (see the module docstring); owns the tasks that do."""

    def __init__(
        self,
        root: Path,
        retention_s: float,
        add: Callable[[list[Recording]], None],
        finisher: Executor,
    ) -> None:
        self.root = root
        self.retention_s = retention_s
        self._add = add
        self._finisher = finisher
        """The recordings' threads (``recording.FINISHERS``)."""
        self._tasks = TaskSet("left-segments")
        self._finishing: set[Path] = set()
        """The segments' bases being finished (one finishing of a segment at a time)."""

    def finish(self, call_id: str, origin: str, segment: int, emit: Emit) -> None:
        """Finish segment ``segment`` of the recording whose first segment is ``origin``
        (under the data directory, as ``RecordingService.export`` says it)."""
        self._tasks.spawn(self._find(call_id, origin, segment, emit), f"left:{call_id}")

    async def close(self) -> None:
        await self._tasks.close()

    async def _find(self, call_id: str, origin: str, segment: int, emit: Emit) -> None:
        """The segment's files, found on the recordings' threads (every path resolved there:
        the disk is never asked on the event loop), then finished (:meth:`_finish`)."""
        loop = asyncio.get_running_loop()
        try:
            first = await loop.run_in_executor(self._finisher, inside, self.root, origin)
        except BadRequest:
            log.warning("call %s: its recording, left by a crashed worker, is unreadable", call_id)
            return
        base = first if segment == 1 else first.with_name(f"{first.name}-seg{segment}")
        if base not in self._finishing:
            self._finishing.add(base)
            try:
                await self._finish(call_id, base, segment, emit)
            finally:
                self._finishing.discard(base)

    async def _finish(self, call_id: str, base: Path, segment: int, emit: Emit) -> None:
        """Finish ``base``'s files and emit their ``recording.ready``. One whose sidecar is
        there was finished by its worker (only cut off, it stopped the call itself): left
        alone. One not on this worker's storage, or that the disk will not finish, is said
        once at WARNING (and ``recording.failed`` for the disk)."""
        loop = asyncio.get_running_loop()
        tracks = [base.with_name(f"{base.name}-{k}.wav") for k in ("inbound", "outbound")]
        found = await loop.run_in_executor(self._finisher, _left, tracks)
        if found == "finished":
            return
        if found == "absent":
            log.warning(
                "call %s: segment %d of its recording, left by a crashed worker, is not on "
                "this worker's storage (BRIDGE_DATA_DIR not shared?): not announced",
                call_id,
                segment,
                extra={"call_id": call_id},
            )
            return
        try:
            made = await loop.run_in_executor(
                self._finisher, seal_left, call_id, tracks, self.root, self.retention_s
            )
        except OSError as exc:
            error = disk_error(exc, f"segment {segment}, left by a crashed worker, unfinished")
            log.warning(
                "call %s: recording: %s", call_id, error.message, extra={"call_id": call_id}
            )
            emit("recording.failed", segment=segment, reason=error.code, message=error.message)
            return
        self._add(made)
        emit("recording.ready", recordings=[r.as_json() for r in made], segment=segment)


def _left(tracks: list[Path]) -> Literal["finished", "absent", "open"]:
    """Whether a left segment (its inbound and outbound WAVs) was finished by its worker
    (its sidecar is there), is not on this worker's storage, or is to be finished here (run
    off the event loop)."""
    if tracks[0].with_suffix(".json").exists():
        return "finished"
    return "open" if all(track.is_file() for track in tracks) else "absent"


def seal_left(call_id: str, tracks: list[Path], root: Path, retention_s: float) -> list[Recording]:
    """Finish a segment a crashed worker left open (``tracks``: its inbound and outbound
    WAVs) as its stop would have: WAV headers (one killed before its header reached the disk
    written whole, empty), the mixed file, the sidecars (run off the event loop). Its start is
    its length before its last write."""
    inbound, outbound = tracks
    for track in tracks:
        if track.stat().st_size < HEADER_BYTES:
            track.write_bytes(wav_header(0))
        repair_wav(track)
    mixed = inbound.with_name(inbound.name.removesuffix("-inbound.wav") + "-mixed.wav")
    mix_files(inbound, outbound, mixed)
    began = inbound.stat().st_mtime - (mixed.stat().st_size - HEADER_BYTES) / 2 / SAMPLE_RATE
    files = [("inbound", inbound), ("outbound", outbound), ("mixed", mixed)]
    return finished(call_id, files, root, began, retention_s)
