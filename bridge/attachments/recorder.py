"""``CallRecorder``: one call's recording, an attachment of its runtime — the bus taps that
queue its frames, the writer thread that writes the inbound (the WhatsApp peer) and outbound
(what the peer hears: microphone and playback mixed) WAVs, and, at its stop, the files finished
(headers, the mixed track, the sidecars) off the event loop. Starting, resuming, indexing and
sweeping recordings is ``recording.py``'s; the files themselves ``wav.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from ..errors import BridgeError
from ..media import BusFrame
from ..tasks import CloseOnce
from .base import AttachmentHost
from .files import disk_error
from .recorded import Recording, finished
from .wav import WavTrack, mix_files

log = logging.getLogger(__name__)

WRITE_QUEUE_FRAMES = 500
"""Frames (both tracks) waiting for the writer thread: 5 s of a call; beyond it frames are
dropped and counted rather than letting a slow disk hold the event loop."""


class CallRecorder:
    """Taps one call's bus into inbound and outbound tracks; makes the mixed one at stop.

    The taps run on the event loop and only queue frames; one writer thread per recording
    does the file writes (a bounded queue: a disk slower than real time drops frames, counted
    in ``dropped_frames``, and the gap is filled with silence by the timestamps).
    """

    kind = "recorder"
    wants_media = False  # a recording alone does not make the call's audio worth carrying

    def __init__(
        self,
        host: AttachmentHost,
        base: Path,
        root: Path,
        retention_s: float,
        on_ready: Callable[[list[Recording]], None],
        finisher: Executor,
        *,
        origin: Path | None = None,
        segment: int = 1,
        tracks: tuple[WavTrack, WavTrack] | None = None,
    ) -> None:
        """``tracks``: its two files, made already (:func:`open_tracks`, off the event loop);
        ``None``: made here."""
        self.id = "rec:" + host.call_id
        self.origin = origin or base
        """The first segment's base: a call moved to another worker records on in
        ``{origin}-seg{n}`` (``segment`` n), the same recording in several files."""
        self.segment = segment
        self._on_ready = on_ready
        self._finisher = finisher
        self.host = host
        self.call_id = host.call_id
        self.base = base
        self.root = root
        self.retention_s = retention_s
        self.started_wall = time.time()
        self.inbound, self.outbound = tracks or open_tracks(base, time.monotonic())
        self.t0 = self.ended_at = self.inbound.t0
        self.dropped_frames = 0
        self.lost_frames = 0
        """Frames whose write failed (a full disk), not counted in ``dropped_frames``."""
        self._queue: queue.Queue[tuple[WavTrack, BusFrame] | None] = queue.Queue(WRITE_QUEUE_FRAMES)
        self._writer = threading.Thread(
            target=self._write_loop, name=f"recorder[{self.call_id[:12]}]", daemon=True
        )
        self._writer.start()
        self._result: list[Recording] | None = None
        self._closing: CloseOnce[list[Recording]] = CloseOnce(f"recorder[{self.call_id[:12]}]")
        host.bus.add_downlink_tap(self._down)
        host.bus.add_uplink_tap(self._up)

    def _put(self, track: WavTrack, frame: BusFrame) -> None:
        try:
            self._queue.put_nowait((track, frame))
        except queue.Full:
            self.dropped_frames += 1

    def _down(self, frame: BusFrame) -> None:
        self._put(self.inbound, frame)

    def _up(self, frame: BusFrame) -> None:
        self._put(self.outbound, frame)

    def _write_loop(self) -> None:
        # A full disk fails every write to a file until it has room again: said once per
        # file, and its end said (it once logged a line per frame, 50 a second per track).
        lost: dict[WavTrack, int] = {}  # frames lost to a file's failing writes going on
        while (item := self._queue.get()) is not None:
            track, frame = item
            try:
                track.write_at(frame.pcm, frame.t)
            except Exception as exc:  # a full disk (or a defect): the call goes on, with a gap
                # Never an end of the writer: one that died left its queue full, and the
                # recording's stop (which queues its end) waited on it for good.
                if track not in lost:
                    lost[track] = 0
                    log.warning(
                        "call %s: recording writes to %s fail: %s (the call goes on; that "
                        "file loses its audio until a write works again)",
                        self.call_id,
                        track.path.name,
                        exc if isinstance(exc, OSError) else repr(exc),
                    )
                lost[track] += 1
                self.lost_frames += 1
                continue
            if track in lost:
                log.info(
                    "call %s: recording writes to %s work again (%d frames lost)",
                    self.call_id,
                    track.path.name,
                    lost.pop(track),
                )

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass

    async def close(self) -> list[Recording]:
        """Stop, finish the files off the event loop, publish ``recording.ready`` (idempotent;
        once, to its end, whoever awaits it or is cancelled: ``tasks.CloseOnce``)."""
        return await self._closing.run(self._close)

    async def _close(self) -> list[Recording]:
        self.ended_at = time.monotonic()
        self.host.bus.remove_downlink_tap(self._down)
        self.host.bus.remove_uplink_tap(self._up)
        self.host.detach(self)
        # Finishing waits for the writer (behind a disk that may stall), writes headers and
        # mixes two whole files: off the event loop, on the recordings' own threads.
        try:
            recordings = await asyncio.get_running_loop().run_in_executor(
                self._finisher, self._finish
            )
        except OSError as exc:  # a full disk: the caller says it (a 503, the call's end)
            error = disk_error(exc, "the recording cannot be finished")
            raise failed(self.host, self.segment, error) from None
        if self.dropped_frames:
            log.warning(
                "call %s: recording dropped %d frames (disk too slow)",
                self.call_id,
                self.dropped_frames,
            )
        self._on_ready(recordings)
        self.host.emit(
            "recording.ready",
            recordings=[r.as_json() for r in recordings],
            segment=self.segment,
        )
        return recordings

    async def discard(self) -> None:
        """A recording its call refused (it ended as the recording started): its taps and
        writer stopped and its files deleted off the event loop, nothing announced (it never
        started; a ``recording.ready`` of it came after the call's ``call.ended``)."""
        self.host.bus.remove_downlink_tap(self._down)
        self.host.bus.remove_uplink_tap(self._up)

        def stop() -> None:
            self._queue.put(None)
            self._writer.join()
            try:
                self.inbound.discard()
            finally:
                self.outbound.discard()

        await asyncio.get_running_loop().run_in_executor(self._finisher, stop)

    def _finish(self) -> list[Recording]:
        # The writer finishes what is queued, then stops. Queued here, not on the loop: a
        # full queue (a stalled disk) waits for room, which held the worker's every call.
        self._queue.put(None)
        self._writer.join()
        end = self.ended_at
        try:
            self.inbound.finish(end)
        finally:  # one file the disk fails: the other finished, both closed
            self.outbound.finish(end)
        mixed = self.base.with_name(self.base.name + "-mixed.wav")
        mix_files(self.inbound.path, self.outbound.path, mixed)
        files = [("inbound", self.inbound.path), ("outbound", self.outbound.path)]
        files.append(("mixed", mixed))
        return finished(self.call_id, files, self.root, self.started_wall, self.retention_s)


def open_tracks(base: Path, t0: float) -> tuple[WavTrack, WavTrack]:
    """A recording's inbound and outbound files at ``base``, made (its directory too): the
    disk's part of a start; ``OSError`` leaves neither behind."""
    base.parent.mkdir(parents=True, exist_ok=True)
    inbound = WavTrack(base.with_name(base.name + "-inbound.wav"), t0)
    try:
        return inbound, WavTrack(base.with_name(base.name + "-outbound.wav"), t0)
    except OSError:
        inbound.discard()  # no open file, no empty WAV, left by a start that failed
        raise


def failed(host: AttachmentHost, segment: int, error: BridgeError) -> BridgeError:
    """``error``, told to the app first: the recording ended without ``segment``'s files
    (``recording.failed {segment, reason, message}``; no ``recording.ready`` for it)."""
    host.emit("recording.failed", segment=segment, reason=error.code, message=error.message)
    return error
