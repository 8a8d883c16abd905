"""Call recording to WAV (16 kHz mono s16): inbound (the WhatsApp peer), outbound (what the
peer hears: microphone and playback mixed) and mixed (both), with metadata and retention.

Frames are written as they pass the bus taps; gaps are filled with silence from the frames'
timestamps, so every file lasts exactly as long as the recording did. WAV headers are written
with the final sizes at stop; files left open by a crash are repaired at start-up (the
files themselves: ``wav.py``; one recording running: ``recorder.py``). Each
recording has a JSON sidecar (its metadata), which is also the index after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..audio import SAMPLE_RATE
from ..disk import on_disk
from ..errors import BadRequest, CallStateError, NotFound, RecordingForbidden
from .base import AttachmentHost
from .files import ExpiredFiles, disk_error, inside
from .left_open import Emit, LeftSegments
from .recorded import Recording, finished
from .recorder import CallRecorder, failed, open_tracks
from .wav import WavTrack, join_files, repair_wav

log = logging.getLogger(__name__)

FINISHERS = 2
"""Threads that finish recordings (the writer's last frames, the headers, the mix; a crashed
worker's segments too): the recordings' own, so those stuck behind a stalled disk hold none of
the loop's default pool (six threads on two cores), which the worker's other disk work needs
(a playback's opening, reports, assets); more wait their turn."""


RecordingPolicy = Callable[[str], "str | None"]
"""Who forbids recording a call (by its call id: ``"number …"``, ``"tenant …"``), or ``None``."""

SEGMENT_WAIT = 5.0
"""Seconds the earlier segments of a moved recording are looked for to join it
(:meth:`RecordingService.joined`): the worker the call left finishes its own as it lets go."""

REINDEX_INTERVAL = 1.0
"""Seconds between two re-reads of the sidecars for an unknown recording id."""


def _in_use(base: Path) -> bool:
    """Whether a recording's files are at ``base`` already."""
    return any(
        base.with_name(f"{base.name}-{k}.wav").exists() for k in ("inbound", "outbound", "mixed")
    )


class RecordingService:
    """Starts/stops recordings, serves them, repairs and sweeps the store."""

    def __init__(self, root: Path, retention_days: float) -> None:
        self.root = root.resolve()
        """Resolved once, at start-up: a path resolved later asks the disk, never on the loop."""
        self.calls_dir = self.root / "files" / "calls"
        self.calls_dir.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_days * 86400
        self.index: dict[str, Recording] = {}
        self.forbidden_by: RecordingPolicy = lambda call_id: None
        """The recording policy (set once the calls exist: ``resources.calls``)."""
        self._indexed_at = time.monotonic()
        self.finisher = ThreadPoolExecutor(FINISHERS, thread_name_prefix="recording-finish")
        """Where recordings are started and finished (:data:`FINISHERS`)."""
        self._starting = asyncio.Lock()
        self._expired = ExpiredFiles(log)
        """The retention sweep's deletions: a recording it cannot delete said once."""
        self.left = LeftSegments(self.root, self.retention_s, self.add, self.finisher)
        """Segments a crashed worker left open, finished here (:meth:`finish_left`)."""
        self.repaired = self._load()

    async def close(self) -> None:
        await self.left.close()
        self.finisher.shutdown(wait=False)  # (the calls, and their recordings, closed first)

    def _load(self) -> int:
        """Index the sidecars; repair WAV headers of files a crash left open (at start-up
        only: later, another worker may be writing them)."""
        repaired = 0
        for wav in self.root.glob("files/**/*.wav"):
            if repair_wav(wav):
                repaired += 1
                log.warning("repaired the WAV header of %s (left open by a crash)", wav)
        self.index.update(self._read_sidecars())
        return repaired

    def _read_sidecars(self) -> dict[str, Recording]:
        """Every recording's sidecar under the data directory (no shared state: runs in a
        thread too)."""
        found: dict[str, Recording] = {}
        for meta in self.root.glob("files/**/*.json"):
            try:
                rec = Recording.from_sidecar(meta)
                found[rec.id] = rec
            except (ValueError, KeyError, OSError) as exc:
                log.warning("ignoring recording metadata %s: %s", meta, exc)
        return found

    def check_allowed(self, call_id: str) -> None:
        """403 ``recording_forbidden`` when the call's number or tenant forbids recording."""
        who = self.forbidden_by(call_id)
        if who is not None:
            raise RecordingForbidden(
                f"call {call_id[:64]}: recording is forbidden by {who} (its 'recording' setting)"
            )

    async def start(self, host: AttachmentHost, path: str | None = None) -> CallRecorder:
        self.check_allowed(host.call_id)  # every kind of recording goes through here
        if path is not None and not isinstance(path, str):
            raise BadRequest("field 'path' must be a string")
        # The disk's part on the recordings' own threads, one start at a time (two must not
        # take the same files): a volume that stalls holds the starts, never the event loop
        # and with it every call on the worker.
        async with self._starting:
            if host.attached("recorder"):
                raise CallStateError(f"call {host.call_id[:64]} is already being recorded")
            loop = asyncio.get_running_loop()
            try:
                base, tracks = await loop.run_in_executor(
                    self.finisher, self._files, host.call_id, path
                )
            except OSError as exc:  # a name too long, a path through a file, a full disk
                raise disk_error(exc, "the recording cannot be started", path) from None
            recorder = CallRecorder(
                host,
                base,
                self.root,
                self.retention_s,
                self.add,
                self.finisher,
                tracks=tracks,
            )
        try:
            host.attach(recorder)
        except CallStateError:  # the call ended meanwhile: no recording of it
            await recorder.discard()
            raise
        host.emit("recording.started", segment=recorder.segment)
        return recorder

    def _files(self, call_id: str, path: str | None) -> tuple[Path, tuple[WavTrack, WavTrack]]:
        """A new recording's base (``path`` under ``files/``, or the call's own: ``{callID}``,
        ``{callID}-{n}`` once recorded before) and its two files, made (run in a thread)."""
        files = (self.root / "files").resolve()
        if path is not None:
            base = inside(files, path.removesuffix(".wav"))
            if base == files or not base.name or base.name.startswith("."):
                raise BadRequest("field 'path' must name a file under files/", code="bad_path")
        else:
            base = self.calls_dir.resolve() / call_id
        n = 1
        while path is None and _in_use(base):  # the call recorded before: {callID}-{n}
            n += 1
            base = self.calls_dir.resolve() / f"{call_id}-{n}"
        if _in_use(base):  # a path given is never reused
            raise CallStateError(f"recording path {base.name!r} is already in use")
        return base, open_tracks(base, time.monotonic())

    def export(self, recorder: CallRecorder) -> dict[str, Any]:
        """What another worker needs to record on into the next segment (a handover)."""
        return {
            "origin": str(recorder.origin.relative_to(self.root)),
            "segment": recorder.segment,
        }

    async def resume(
        self, host: AttachmentHost, moved: dict[str, Any], *, left_open: bool = False
    ) -> CallRecorder:
        """Record a call moved here on into the next segment of its recording: the files
        ``{origin}-seg{n}-{inbound,outbound,mixed}.wav`` beside the first segment's.
        ``left_open``: the segment before was a crashed worker's, never finished; it is
        finished and announced here too (``left_open.py``). The disk's part (its path
        resolved, its files made) on the recordings' own threads, as a start's: a volume that
        stalls holds this recording, never the event loop and every call on the worker."""
        try:
            relative, segment = str(moved["origin"]), int(moved["segment"]) + 1
        except (KeyError, TypeError, ValueError):
            raise BadRequest("a moved recording needs its 'origin' and 'segment'") from None
        if left_open:
            self.left.finish(host.call_id, relative, segment - 1, host.emit)
        loop = asyncio.get_running_loop()
        origin = await loop.run_in_executor(self.finisher, inside, self.root, relative)
        base = origin.with_name(f"{origin.name}-seg{segment}")
        try:
            tracks = await loop.run_in_executor(self.finisher, open_tracks, base, time.monotonic())
        except OSError as exc:  # a full or read-only disk: the caller logs it, the call goes on
            error = disk_error(exc, "the recording cannot go on into its next segment")
            raise failed(host, segment, error) from None
        recorder = CallRecorder(
            host,
            base,
            self.root,
            self.retention_s,
            self.add,
            self.finisher,
            origin=origin,
            segment=segment,
            tracks=tracks,
        )
        try:
            host.attach(recorder)
        except CallStateError:  # the call ended while it moved: no segment, as for a start
            await recorder.discard()
            raise
        host.emit("recording.started", segment=segment)
        return recorder

    async def joined(self, recorder: CallRecorder, last: Recording) -> Recording:
        """A recording that moved with its call (``recorder``: its last segment's, closed;
        ``last``: that segment's file of one kind) as one file of that kind, as it would be had
        the call not moved: the segments before (each finished, and its sidecar written, by
        the worker that wrote it as it let go: looked for up to :data:`SEGMENT_WAIT` s) and
        ``last``, one after the other, each cut where the next began by the wall clock (the
        move's make-before-break overlaps them). ``last`` itself, said at WARNING, when an
        earlier segment is not found (on a disk the workers do not share) or not joined."""
        origin = recorder.origin
        bases = [origin] + [
            origin.with_name(f"{origin.name}-seg{n}") for n in range(2, recorder.segment)
        ]
        sidecars = [b.with_name(f"{b.name}-{last.kind}.json") for b in bases]
        out = origin.with_name(f"{origin.name}-joined-{last.kind}.wav")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SEGMENT_WAIT
        try:
            while not await on_disk(lambda: all(s.is_file() for s in sidecars)):
                if loop.time() > deadline:
                    raise FileNotFoundError(
                        f"no segment {sidecars[0].stem} within {SEGMENT_WAIT:g} s"
                    )
                await asyncio.sleep(0.1)
            joined = await loop.run_in_executor(
                self.finisher, self._join, recorder.call_id, sidecars, last, out
            )
        except (OSError, ValueError, KeyError) as exc:
            log.warning(
                "call %s: its recording's segments not joined (%s); its last segment, %s, "
                "stands for it",
                recorder.call_id,
                exc,
                last.id,
            )
            return last
        self.add([joined])
        return joined

    def _join(self, call_id: str, sidecars: list[Path], last: Recording, out: Path) -> Recording:
        parts = [Recording.from_sidecar(s) for s in sidecars] + [last]
        cuts: list[tuple[Path, int | None]] = [
            (part.path, max(0, round((after.created_at - part.created_at) * SAMPLE_RATE)))
            for part, after in itertools.pairwise(parts)
        ]
        join_files([*cuts, (last.path, None)], out)
        return finished(
            call_id, [(last.kind, out)], self.root, parts[0].created_at, self.retention_s
        )[0]

    def finish_left(self, call_id: str, moved: dict[str, Any], emit: Emit) -> None:
        """The segment a crashed worker was writing (``moved``: the recording its call's
        record kept, as :meth:`export` made it), finished and announced (``emit``: the call's
        events) here, in the background: a call that cannot move ends on the survivor
        (``Recovery``), which finishes its recording too."""
        try:
            relative, segment = str(moved["origin"]), int(moved["segment"])
        except (KeyError, TypeError, ValueError):
            log.warning("call %s: its recording, left by a crashed worker, is unreadable", call_id)
            return
        self.left.finish(call_id, relative, segment, emit)

    async def stop(self, host: AttachmentHost) -> list[Recording]:
        recorders: list[CallRecorder] = host.attached("recorder")
        if not recorders:
            raise CallStateError(f"call {host.call_id[:64]} is not being recorded")
        return await recorders[0].close()

    def add(self, recordings: list[Recording]) -> None:
        """Index finished recordings (also those a call's end finished)."""
        for rec in recordings:
            self.index[rec.id] = rec

    async def find(self, recording_id: str) -> Recording:
        """:meth:`get` off the event loop, and if the id is unknown here, read the sidecars
        again first (another worker sharing ``BRIDGE_DATA_DIR`` may have written it), off the
        event loop too and at most once a second, so unknown ids cannot make every request
        scan the disk."""
        if recording_id not in self.index:
            if time.monotonic() - self._indexed_at >= REINDEX_INTERVAL:
                self._indexed_at = time.monotonic()
                found = await on_disk(self._read_sidecars)
                for known, rec in found.items():
                    self.index.setdefault(known, rec)
        return await on_disk(self.get, recording_id)  # its file looked for there

    def get(self, recording_id: str) -> Recording:
        rec = self.index.get(recording_id)
        if rec is None or not rec.path.is_file():
            raise NotFound(f"no recording {recording_id[:80]!r}")
        return rec

    def sweep(self, now: float | None = None) -> int:
        """Delete recordings past their retention; returns how many files went (run on the
        recordings' threads: ``resources.sweep_recordings``)."""
        now = time.time() if now is None else now
        removed = 0
        for rec_id, rec in list(self.index.items()):
            if rec.expires_at > now:
                continue
            sidecar = rec.path.with_suffix(".json")
            if not self._expired.delete(rec_id, f"recording {rec_id}", rec.path, sidecar):
                continue  # this one stays (tried again next time); the others go
            del self.index[rec_id]
            removed += 1
        return removed
