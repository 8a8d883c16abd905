"""Playback of audio files into calls (the audio assets they may name: ``assets.py``).

A playback is an ``UplinkSource`` on the call's bus: its frames are decoded lazily from the
file (PyAV, any format FFmpeg reads, detected from the content) and mixed with the browser's
microphone, clipping-safe; ``target: both`` mixes them into what the browser hears too.

The file is checked, opened and its first frame decoded in a thread (:func:`_opened`), never in
the clock's tick, where ~20 ms of it held every call's media on the worker: at the start, and
for each further pass of a loop (hold music), opened while the pass before it plays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from ..audio import FRAME_MS
from ..audio.decode import UndecodableAudio, bus_frames, probe
from ..audio.pcm import Pcm
from ..config import StorageSettings
from ..disk import on_disk
from ..errors import (
    BadRequest,
    BridgeError,
    CallStateError,
    Forbidden,
    NotFound,
    TooLarge,
)
from ..http import HostAllow, url_parts
from .assets import AssetStore
from .base import AttachmentHost
from .files import disk_error, inside

log = logging.getLogger(__name__)

MAX_PER_CALL = 8
"""Playbacks mixed into one call at the same time."""


def _opened(source: Path | bytes, skip: int = 0) -> OpenedAudio:
    """``source``'s frames (past the first ``skip``: a playback going on where it was),
    checked (``probe``), its container open and its first frame
    decoded: the slow part of a playback's start (~20 ms a short WAV on the 2-core VM, more
    under load), run in a thread, where on the loop it held every call's media on the worker
    (``tests/integration/test_passthrough.py``'s mixing switch saw it as a gap). A generator
    may go on in another thread once this one is done with it."""
    probe(source)
    decoder = bus_frames(source)
    frames = itertools.islice(decoder, skip, None) if skip else decoder
    return OpenedAudio(next(frames, None), frames, decoder)


class OpenedAudio(Iterator[Pcm]):
    """A file's frames, its first decoded already, and :meth:`close` for its decoder (the
    container open on the file) when they are not played after all."""

    def __init__(
        self, first: Pcm | None, frames: Iterator[Pcm], decoder: Generator[Pcm, None, None]
    ) -> None:
        self._first = first
        self._frames = frames
        self._decoder = decoder

    def __next__(self) -> Pcm:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._frames)

    def close(self) -> None:
        self._first = None
        self._decoder.close()


class Playback:
    """One audio file playing into one call: an ``UplinkSource`` on its bus and an attachment
    of its runtime."""

    kind = "playback"
    wants_media = True

    def __init__(
        self,
        host: AttachmentHost,
        first: OpenedAudio,
        reopen: Callable[[], OpenedAudio],
        *,
        to_downlink: bool,
        loop: bool,
        asset_id: str | None = None,
        playback_id: str | None = None,
        frames_played: int = 0,
    ) -> None:
        """``playback_id`` and ``frames_played``: a playback going on here under the id it
        had on the worker the call moved from, with what it played there."""
        self.id = playback_id or "pb_" + secrets.token_hex(8)
        self.host = host
        self.to_downlink = to_downlink
        self.loop = loop
        self.asset_id = asset_id
        """The audio asset it plays, when it was given one (hold music names it so)."""
        self._reopen = reopen
        """The file opened again for the next pass of a loop (:func:`_opened`): slow, so run
        in a thread while the current pass plays."""
        self._frames = first
        """The pass playing, its decoder open on the file until the playback ends
        (:meth:`finished` closes it: the playback object may be kept well after, as a hold
        keeps its music)."""
        self._next_pass: asyncio.Future[OpenedAudio] | None = None
        """A loop's next pass, being opened in a thread since its current one began."""
        self.frames_played = frames_played
        self.error: str | None = None
        self.ended_by: str | None = None
        """Why it ends when not by itself (``moved``: the call went on elsewhere without it),
        the reason its ``playback.finished`` gives; ``None``: it played out, failed or was
        stopped."""
        self._played_out = False
        self._left = False
        self._done = False

    def next_frame(self) -> Pcm | None:
        """The next frame, in the clock's tick: never the file's open (module docstring)."""
        try:
            frame = next(self._frames, None)
            if frame is None and self.loop and self.frames_played:
                self._frames = self._take_next_pass()
                frame = next(self._frames, None)
            elif self.loop and self._next_pass is None and not self._done:
                self._next_pass = on_disk(self._reopen)
        except UndecodableAudio as exc:
            self.error = str(exc)
            return None
        if frame is None:
            self._played_out = True
        else:
            self.frames_played += 1
        return frame

    def _take_next_pass(self) -> OpenedAudio:
        """The next pass of a loop, opened in its thread during this one; opened here only
        when this pass was shorter than the open took (a file of a few frames)."""
        opening, self._next_pass = self._next_pass, None
        if opening is None or not opening.done():
            if opening is not None:
                opening.cancel()
            return self._reopen()
        return opening.result()  # UndecodableAudio too: the file changed since

    def finished(self) -> None:
        """The bus let go of it (played out, failed or stopped): tell the call, once."""
        if self._done:
            return
        self._done = True
        self._close_decoders()
        self.host.detach(self)
        if self._left:
            return  # it plays on elsewhere, under its id: its end is said there
        reason = self.ended_by or (
            "error" if self.error else "played" if self._played_out else "stopped"
        )
        if self.error:  # its audio stopped decoding, or a loop's file went (a deleted asset)
            log.warning(
                "call %s: playback %s%s ended after %d frames: %s",
                self.host.call_id,
                self.id,
                f" of audio asset {self.asset_id}" if self.asset_id else "",
                self.frames_played,
                self.error,
            )
        self.host.emit(
            "playback.finished",
            playbackId=self.id,
            framesPlayed=self.frames_played,
            error=self.error,
            reason=reason,
        )

    def _close_decoders(self) -> None:
        """Close the pass playing and a loop's next pass opened already (their containers
        open on the file); one still opening in its thread is cancelled (its result dropped
        unheard, ``disk.on_disk``)."""
        self._frames.close()
        opening, self._next_pass = self._next_pass, None
        if opening is None:
            return
        if not opening.done():
            opening.cancel()
        elif not opening.cancelled() and opening.exception() is None:
            opening.result().close()

    def export(self) -> dict[str, Any] | None:
        """What another worker needs to play it on from where it is (a handover): an audio
        asset's playback only (bytes and URLs are not carried); ``None`` for any other."""
        if self.asset_id is None:
            return None
        return {
            "playbackId": self.id,
            "assetId": self.asset_id,
            "target": "both" if self.to_downlink else "peer",
            "loop": self.loop,
            "framesPlayed": self.frames_played,
        }

    def leave(self) -> None:
        """Stop here without ``playback.finished``: the call's new worker plays it on."""
        self._left = True
        self.host.bus.remove_source(self)

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass

    async def close(self) -> None:
        self.host.bus.remove_source(self)  # calls finished()
        self.finished()  # never added (the call ended first)


class PlaybackService:
    """Starts and stops playbacks; resolves ``file`` / ``assetId`` / ``audioBase64`` /
    ``audioUrl`` to something decodable, refusing what is unsafe or undecodable."""

    def __init__(self, settings: StorageSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self._allow = HostAllow(settings.play_url_allow)
        self.media_dir = Path(settings.media_dir)
        self.assets = AssetStore(Path(settings.data_dir) / "assets")
        self._http = http

    async def start(self, host: AttachmentHost, body: dict[str, Any]) -> Playback:
        self._check_room(host)
        kinds = [k for k in ("file", "assetId", "audioBase64", "audioUrl") if body.get(k)]
        if len(kinds) != 1:
            raise BadRequest("give exactly one of file, assetId, audioBase64, audioUrl")
        target = body.get("target", "peer")
        if target not in ("peer", "both"):
            raise BadRequest('field \'target\' must be "peer" or "both"')
        loop = body.get("loop", False)
        if not isinstance(loop, bool):
            raise BadRequest("field 'loop' must be true or false")
        source = await self._resolve(kinds[0], body[kinds[0]])
        asset_id = body["assetId"] if kinds[0] == "assetId" else None
        return await self._play(host, source, target, loop, asset_id)

    async def resume(self, host: AttachmentHost, moved: dict[str, Any]) -> Playback:
        """Play on a playback of a call moved here (``Playback.export``), under its id, from
        where it was (a loop: from where it was in its pass); ``playback.started`` says
        ``"resumed": true``. One that cannot go on (its asset deleted meanwhile) ends with its
        ``playback.finished`` (reason ``moved``, its ``error`` saying why), and raises."""
        try:
            playback_id, asset_id = str(moved["playbackId"]), str(moved["assetId"])
            target, loop = moved.get("target", "peer"), bool(moved.get("loop"))
            played = int(moved.get("framesPlayed") or 0)
        except (KeyError, TypeError, ValueError):
            raise BadRequest("a moved playback needs its 'playbackId' and 'assetId'") from None
        try:
            asset = await self.assets.find(asset_id)
            frames = max(1, -(-asset.duration_ms // FRAME_MS))  # one pass's
            skip = played % frames if loop else played
            return await self._play(
                host, asset.path, target, loop, asset_id, playback_id, played, skip
            )
        except BridgeError as exc:
            host.emit(
                "playback.finished",
                playbackId=playback_id,
                framesPlayed=played,
                error=exc.message,
                reason="moved",
            )
            raise

    async def _play(
        self,
        host: AttachmentHost,
        source: Path | bytes,
        target: str,
        loop: bool,
        asset_id: str | None,
        playback_id: str | None = None,
        played: int = 0,
        skip: int = 0,
    ) -> Playback:
        try:
            opened = await on_disk(_opened, source, skip)
        except UndecodableAudio as exc:
            raise BadRequest(str(exc), code="undecodable_audio") from None

        try:
            self._check_room(host)  # again: others may have started while this one opened
            playback = Playback(
                host,
                opened,
                lambda: _opened(source),
                to_downlink=target == "both",
                loop=loop,
                asset_id=asset_id,
                playback_id=playback_id,
                frames_played=played,
            )
            host.attach(playback)  # 409 if the call ended while the audio was fetched
        except BaseException:
            opened.close()  # its file, open since the thread opened it
            raise
        host.bus.add_source(playback)
        resumed = {"resumed": True} if playback_id is not None else {}
        host.emit("playback.started", playbackId=playback.id, target=target, **resumed)
        return playback

    @staticmethod
    def _check_room(host: AttachmentHost) -> None:
        if len(host.attached("playback")) >= MAX_PER_CALL:
            raise CallStateError(f"a call can play at most {MAX_PER_CALL} files at once")

    async def _resolve(self, kind: str, value: Any) -> Path | bytes:
        if not isinstance(value, str):
            raise BadRequest(f"field {kind!r} must be a string")
        # The disk is asked off the event loop (a volume that stalls held the whole worker).
        if kind == "file":
            return await on_disk(self._media_file, value)
        if kind == "assetId":
            return (await self.assets.find(value)).path
        if kind == "audioBase64":
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("audioBase64 is not valid base64") from None
            if len(data) > self.settings.play_url_max_bytes:
                raise TooLarge("the audio is larger than BRIDGE_PLAY_URL_MAX_BYTES")
            return data
        return await self._fetch(value)

    def _media_file(self, name: str) -> Path:
        """The file ``name`` in ``BRIDGE_MEDIA_DIR`` (run in a thread)."""
        path = inside(self.media_dir, name)
        try:
            found = path.is_file()
        except OSError as exc:
            raise disk_error(exc, "BRIDGE_MEDIA_DIR cannot be read", name) from None
        if not found:
            raise NotFound(f"no file {name[:80]!r} in BRIDGE_MEDIA_DIR")
        return path

    async def _fetch(self, url: str) -> bytes:
        parts = url_parts(url)
        host = ((parts and parts.hostname) or "").lower()
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise BadRequest("audioUrl must be an http(s) URL")
        if not self._allow.allows(parts):
            raise Forbidden(
                f"host {host!r} is not in BRIDGE_PLAY_URL_ALLOW", code="url_not_allowed"
            )
        limit = self.settings.play_url_max_bytes
        timeout = aiohttp.ClientTimeout(total=self.settings.play_url_timeout)
        try:
            async with self._http.get(url, allow_redirects=False, timeout=timeout) as resp:
                if resp.status != 200:
                    raise BadRequest(f"audioUrl answered {resp.status}", code="url_failed")
                if (resp.content_length or 0) > limit:
                    raise TooLarge("the audio at audioUrl is too large")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(65536):
                    data += chunk
                    if len(data) > limit:
                        raise TooLarge("the audio at audioUrl is too large")
                return bytes(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BadRequest(
                f"cannot fetch audioUrl: {exc or type(exc).__name__}", code="url_failed"
            ) from None

    @staticmethod
    def stop(host: AttachmentHost, playback_id: str | None) -> list[str]:
        """Stop one playback (or all of the call's); returns the ids stopped."""
        chosen: list[Playback] = [
            p for p in host.attached("playback") if playback_id is None or p.id == playback_id
        ]
        if playback_id is not None and not chosen:
            raise NotFound(f"no playback {playback_id[:80]!r} on this call")
        for playback in chosen:
            host.bus.remove_source(playback)
        return [p.id for p in chosen]
