"""Playback, audio assets and recordings."""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..attachments import Playback, PlaybackService
from ..config import StorageSettings
from ..disk import on_disk
from ..errors import BadRequest, NotFound, TooLarge
from .errors import JSON_LIMIT, body_deadline, require_call_id
from .keys import MANAGER, PLAYBACK, RECORDINGS, SETTINGS
from .schema import read_body
from .tenancy import principal_of, tenant_of_call

routes = web.RouteTableDef()


def play_body_limit(storage: StorageSettings) -> int:
    """The largest ``/call/play`` body: ``audioBase64`` of ``BRIDGE_PLAY_URL_MAX_BYTES`` of
    audio (four characters for every three bytes) and the rest of a JSON request."""
    return 4 * -(-storage.play_url_max_bytes // 3) + JSON_LIMIT


@routes.post("/call/play")
async def play(request: web.Request) -> web.Response:
    limit = play_body_limit(request.app[SETTINGS].storage)
    body = await read_body(request, "PlayRequest", limit=limit)
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    await check_asset(request, body.get("assetId"))
    playback = await request.app[PLAYBACK].start(runtime, body)
    return web.json_response({"playbackId": playback.id}, status=201)


async def check_asset(request: web.Request, asset_id: object, *, shared: bool = True) -> None:
    """A tenant's key uses its own assets (and, to play, the service's): another's is 404
    (its record read off the event loop: ``AssetStore.find``)."""
    tenant_id = principal_of(request).tenant_id
    if tenant_id is None or not isinstance(asset_id, str):
        return
    await request.app[PLAYBACK].assets.find(asset_id, tenant_id, shared=shared)


@routes.post("/call/play/stop")
async def play_stop(request: web.Request) -> web.Response:
    body = await read_body(request, "PlayStopRequest")
    call_id = require_call_id(body)
    playback_id = body.get("playbackId")
    if playback_id is not None and not isinstance(playback_id, str):
        raise BadRequest("field 'playbackId' must be a string")
    stopped = PlaybackService.stop(request.app[MANAGER].runtime(call_id), playback_id)
    return web.json_response({"callID": call_id, "stopped": stopped})


@routes.post("/call/hold")
async def hold(request: web.Request) -> web.Response:
    """Hold: WhatsApp hears the ``music`` asset looped (or silence) and nobody's microphone;
    the agent and supervisors keep hearing each other. ``held: false`` resumes."""
    body = await read_body(request, "HoldRequest")
    held = body.get("held", True)
    if not isinstance(held, bool):
        raise BadRequest("field 'held' must be true or false")
    music = body.get("music")
    if music is not None and not isinstance(music, str):
        raise BadRequest("field 'music' must be an audio asset id")
    runtime = request.app[MANAGER].runtime(require_call_id(body))
    await check_asset(request, music)
    playbacks = request.app[PLAYBACK]

    async def start_music() -> Playback:
        return await playbacks.start(runtime, {"assetId": music, "loop": True})

    await runtime.hold.set(held, start_music if music else None)
    return web.json_response(runtime.call.snapshot())


@routes.post("/call/audio-assets")
async def upload_asset(request: web.Request) -> web.Response:
    limit = request.app[SETTINGS].storage.play_url_max_bytes
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send multipart/form-data with the file in field 'audio'")
    data = bytearray()
    try:
        async with body_deadline(request):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    raise BadRequest("multipart field 'audio' is missing")
                if getattr(part, "name", None) == "audio":
                    break
            while chunk := await part.read_chunk(65536):  # type: ignore[union-attr]
                data += chunk
                if len(data) > limit:
                    raise TooLarge(f"the upload is larger than {limit} bytes")
            name = getattr(part, "filename", None) or "audio"
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        # aiohttp's multipart reader: no boundary, bad part headers, a truncated body.
        raise BadRequest(f"malformed multipart body: {str(exc)[:200]}") from None
    # Probing (and, when the header has no duration, decoding) happens off the event loop.
    owner = principal_of(request).tenant_id or ""
    asset = await on_disk(request.app[PLAYBACK].assets.add, bytes(data), name, owner)
    return web.json_response(asset.as_json(), status=201)


@routes.get("/call/audio-assets")
async def list_assets(request: web.Request) -> web.Response:
    tenant_id = principal_of(request).tenant_id
    # Every asset's record read: off the event loop (a volume that stalls, thousands of them).
    listed = await on_disk(request.app[PLAYBACK].assets.list)
    assets = [a.as_json() for a in listed if a.visible_to(tenant_id)]
    return web.json_response({"assets": assets})


@routes.delete("/call/audio-assets/{assetId}")
async def delete_asset(request: web.Request) -> web.Response:
    asset_id = request.match_info["assetId"]
    await check_asset(request, asset_id, shared=False)
    await on_disk(request.app[PLAYBACK].assets.delete, asset_id)
    return web.json_response({"assetId": request.match_info["assetId"], "deleted": True})


@routes.post("/call/record")
async def record(request: web.Request) -> web.Response:
    body = await read_body(request, "RecordRequest")
    call_id = require_call_id(body)
    runtime = request.app[MANAGER].runtime(call_id)
    recorder = await request.app[RECORDINGS].start(runtime, body.get("path"))
    return web.json_response(
        {
            "callID": call_id,
            "recording": True,
            "path": str(recorder.base.relative_to(recorder.root)),
        },
        status=201,
    )


@routes.post("/call/record/stop")
async def record_stop(request: web.Request) -> web.Response:
    body = await read_body(request, "CallIdRequest")
    call_id = require_call_id(body)
    recordings = await request.app[RECORDINGS].stop(request.app[MANAGER].runtime(call_id))
    return web.json_response({"callID": call_id, "recordings": [r.as_json() for r in recordings]})


@routes.get("/call/recordings/{recordingId}")
async def get_recording(request: web.Request) -> web.FileResponse:
    rec = await request.app[RECORDINGS].find(request.match_info["recordingId"])
    tenant_id = principal_of(request).tenant_id
    if tenant_id is not None and await tenant_of_call(request, rec.call_id) != tenant_id:
        raise NotFound(f"no recording {rec.id[:80]!r}")  # another's: not leaked
    kind = "application/json" if rec.path.suffix == ".jsonl" else "audio/wav"  # a transcript
    return web.FileResponse(rec.path, headers={"Content-Type": kind})
