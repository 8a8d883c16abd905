"""The one place domain errors become HTTP responses with the JSON error body."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError

from .. import errors
from ..logs import Repeats

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS: list[tuple[type[errors.BridgeError], int]] = [
    (errors.BadRequest, 400),
    (errors.BadOffer, 400),
    (errors.Unauthorized, 401),
    (errors.BodyTimeout, 408),
    (errors.NoCallPermission, 403),
    (errors.Forbidden, 403),
    (errors.CallNotFound, 404),
    (errors.NotFound, 404),
    (errors.EngineCallNotFound, 404),
    (errors.CallStateError, 409),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.RateLimited, 429),
    (errors.PeerUnreachable, 502),
    (errors.EngineUnavailable, 503),
    (errors.AtCapacity, 503),
    (errors.ShuttingDown, 503),
    (errors.DirectoryUnavailable, 503),
    (errors.OwnerUnreachable, 503),
    (errors.StorageFailed, 503),
    (errors.GraphApiError, 502),
    (errors.EngineError, 502),
    (errors.NotImplementedYet, 501),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, object] | None = None,
    **headers: str,
) -> web.Response:
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = details  # e.g. Meta's code, subcode and message
    body = {"error": error}
    return web.json_response(body, status=status, headers=headers or None)


def error_code(body: bytes | None) -> str | None:
    """The ``error.code`` of a JSON error body (:func:`error_response`'s), or ``None``."""
    try:
        parsed = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def status_for(exc: errors.BridgeError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def route_of(request: web.Request) -> str:
    """``METHOD /route/{pattern}``: the route a request matched (its path when none did), so
    every call's requests of one route are one name."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


class ServerErrors:
    """The 5xx answers, said once per reason while it lasts (:class:`~bridge.logs.Repeats`):
    a route's first answer of a reason (its error code; a bug's exception type) at WARNING,
    the same ones after it not at all, and its end at INFO once that route answers below 500
    again; a bug's traceback once per exception type and route. Before, each request said
    it: a Redis outage or a full worker wrote a line for every request of every client."""

    def __init__(self, size: int = 256) -> None:
        self.runs = Repeats(size)
        """By ``route reason``: the 5xx answers of the run so far."""
        self._traced = Repeats(size)
        """By ``route exception type``: a bug whose traceback was said (kept, not counted)."""
        self._failing: dict[str, set[str]] = {}
        """By route: the reasons of its runs (a route is a finite name: bounded)."""

    def _seen(self, route: str, reason: str) -> bool:
        """One more 5xx of ``reason`` on ``route``: whether it is its run's first."""
        self._failing.setdefault(route, set()).add(reason)
        return self.runs.seen(f"{route} {reason}") == 1

    def refused(self, request: web.Request, status: int, exc: errors.BridgeError) -> None:
        route = route_of(request)
        if self._seen(route, exc.code):
            log.warning(
                "%s: %d %s: %s (said once while it lasts)", route, status, exc.code, exc.message
            )

    def bug(self, request: web.Request, exc: Exception) -> None:
        route, kind = route_of(request), type(exc).__name__
        if not self._seen(route, kind):
            return
        if self._traced.seen(f"{route} {kind}") == 1:
            log.error("unhandled error on %s (said once while it lasts)", route, exc_info=exc)
        else:
            log.warning(
                "%s: 500 again: %s: %s (its traceback was said before; once while it lasts)",
                route,
                kind,
                exc,
            )

    def answered(self, request: web.Request) -> None:
        """A request answered below 500: the runs of its route end."""
        if not self._failing:
            return
        route = route_of(request)
        for reason in self._failing.pop(route, ()):
            count = self.runs.ended(f"{route} {reason}")
            if count:
                log.info("%s: %s is over (%d answers of it)", route, reason, count)


def error_middleware() -> Middleware:
    """The middleware that turns domain errors into HTTP answers with the JSON error body, its
    5xx said once per reason while it lasts (:class:`ServerErrors`, one per app).

    A request no route takes (no such path: 404; a method its route does not have: 405 with
    ``Allow``) is the router's answer here, before the middlewares inside this one (auth,
    tenancy, rate limits, forwarding to a call's owner): they guard a route's handler, and
    there is none. Before, auth answered such a request 401 first (a method an internal route
    does not have, asked without the internal secret), against RFC 9110 §15.5.6."""
    said = ServerErrors()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _answer(request, handler, said)
        if response.status < 500:
            said.answered(request)
        return response

    return middleware


async def _answer(request: web.Request, handler: Handler, said: ServerErrors) -> web.StreamResponse:
    try:
        unrouted = request.match_info.http_exception
        if unrouted is not None:
            raise unrouted
        return await handler(request)
    except errors.BridgeError as exc:
        status = status_for(exc)
        headers: dict[str, str] = {}
        if isinstance(exc, errors.AtCapacity | errors.RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(exc, errors.MetaForbidden) and exc.retry_after:
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(
            exc,
            errors.EngineUnavailable
            | errors.ShuttingDown
            | errors.DirectoryUnavailable
            | errors.OwnerUnreachable,
        ):
            headers["Retry-After"] = "5"
        if isinstance(exc, errors.Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="webrtc-bridge"'
        if isinstance(exc, errors.BodyTimeout | errors.UnreadableBody):
            headers["Connection"] = "close"  # the rest of the body may still be on its way
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        if status >= 500:
            said.refused(request, status, exc)
        details = getattr(exc, "details", None)
        return error_response(status, exc.code, exc.message, details, **headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 413:
            message = "request body too large"
        # A 405 says which methods the route takes (RFC 9110 §15.5.6: it must).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return error_response(exc.status, code, message, None, **allow)
    except Exception as exc:
        said.bug(request, exc)
        return error_response(500, "internal_error", "internal error; see the bridge's log")


JSON_LIMIT = 64 * 1024
"""Largest JSON body (routes that carry audio pass a larger ``limit``)."""

BODY_TIMEOUT = web.AppKey("body_timeout", float)
"""Seconds a client has to send a whole request body (``BRIDGE_BODY_TIMEOUT``)."""


@asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Guard a body read: bounded in time (a client that sends half a body would hold its
    handler forever), and a body that cannot be read as sent a 400 (a ``Content-Encoding``
    it is not in, a broken chunk: aiohttp's error was a 500 with a traceback, to anyone)."""
    seconds = request.config_dict.get(BODY_TIMEOUT, 10.0)
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise errors.BodyTimeout(
            f"the request body did not arrive within {seconds:g} s (BRIDGE_BODY_TIMEOUT)"
        ) from None
    except RequestPayloadError as exc:
        # aiohttp's parser is done with this body (it failed it): marked ended, so that
        # aiohttp does not read it again after the answer (a second traceback, and the
        # connection reset before the client read the 400).
        request.content.feed_eof()
        why = exc.__cause__ or exc
        raise errors.UnreadableBody(
            f"the request body cannot be read as sent ({type(why).__name__}: its "
            "Content-Encoding or chunked framing is broken)"
        ) from None


RAW_BODY = web.RequestKey("raw_body", bytes)
"""Where :func:`read_raw_json` keeps a request's body once read (the router reads it to find
the call; the handler reads it again)."""


async def read_raw_json(request: web.Request, limit: int = JSON_LIMIT) -> bytes:
    """The request's body, read to the end within the body deadline and ``limit`` bytes."""
    if RAW_BODY in request:
        return request[RAW_BODY]
    if (request.content_length or 0) > limit:
        raise errors.TooLarge(f"request body larger than {limit} bytes")
    # StreamReader.read(n) returns what has arrived so far: read to the end, bounded.
    chunks = bytearray()
    try:
        async with body_deadline(request):
            while chunk := await request.content.read(65536):
                chunks += chunk
                if len(chunks) > limit:
                    raise errors.TooLarge(f"request body larger than {limit} bytes")
    except web.HTTPRequestEntityTooLarge:
        raise errors.TooLarge("request body too large") from None
    raw = bytes(chunks)
    request[RAW_BODY] = raw
    return raw


async def read_json(request: web.Request, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """The request's JSON object body, or :class:`~bridge.errors.BadRequest`."""
    return errors.json_object(await read_raw_json(request, limit))


def require_call_id(body: dict[str, Any]) -> str:
    """The ``callID`` of a body :func:`~bridge.api.schema.read_body` has checked (every
    schema that carries one requires it and gives it the ``CallId`` shape)."""
    value: str = body["callID"]
    return value
