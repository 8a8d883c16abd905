"""A 5xx is said once per reason while it lasts (``api/errors.py`` ``ServerErrors``): a full
worker or a Redis outage answers every client's every request 503, and each used to write its
own WARNING. Its end is said at INFO when the route answers below 500 again; a bug's traceback
once per exception type and route."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from bridge import errors
from bridge.api.errors import error_middleware


def app_failing_by_query() -> web.Application:
    """``/make?why=`` answers as a worker whose trouble is ``why`` would."""
    app = web.Application(middlewares=[error_middleware()])

    async def make(request: web.Request) -> web.Response:
        why = request.query.get("why")
        if why == "capacity":
            raise errors.AtCapacity("the worker is at its 200 calls")
        if why == "directory":
            raise errors.DirectoryUnavailable("the call directory (Redis) is unavailable")
        if why == "bug":
            raise KeyError("a bug")
        return web.json_response({"ok": True})

    app.router.add_get("/make", make)
    app.router.add_get("/other", make)
    return app


def said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    mine = [r for r in caplog.records if r.name == "bridge.api.errors"]
    return [r.getMessage() for r in mine if r.levelno == level]


async def test_a_5xx_is_said_once_per_reason_while_it_lasts(aiohttp_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="bridge.api.errors")
    client = await aiohttp_client(app_failing_by_query())
    for _ in range(20):
        resp = await client.get("/make?why=capacity")
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "at_capacity"
    assert len(said(caplog, logging.WARNING)) == 1
    assert "at_capacity" in said(caplog, logging.WARNING)[0]
    for _ in range(5):
        assert (await client.get("/make?why=directory")).status == 503
    warnings = said(caplog, logging.WARNING)
    assert len(warnings) == 2 and "directory_unavailable" in warnings[1]
    assert not said(caplog, logging.INFO)
    # The route answers again: both runs are over, said at INFO with their counts.
    assert (await client.get("/make")).status == 200
    ends = said(caplog, logging.INFO)
    assert len(ends) == 2 and any("at_capacity" in e and "20" in e for e in ends), ends
    # A run that comes back is said again.
    assert (await client.get("/make?why=capacity")).status == 503
    assert len(said(caplog, logging.WARNING)) == 3


async def test_a_bugs_traceback_is_said_once_per_exception_type_and_route(
    aiohttp_client, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.api.errors")
    client = await aiohttp_client(app_failing_by_query())
    for _ in range(10):
        resp = await client.get("/make?why=bug")
        assert resp.status == 500 and (await resp.json())["error"]["code"] == "internal_error"
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 1 and "GET /make" in traced[0].getMessage()
    assert (await client.get("/other?why=bug")).status == 500  # another route: its own
    assert len([r for r in caplog.records if r.exc_info]) == 2
    # The route answers, the bug comes back: said, without the traceback said before.
    assert (await client.get("/make")).status == 200
    assert (await client.get("/make?why=bug")).status == 500
    assert len([r for r in caplog.records if r.exc_info]) == 2
    again = said(caplog, logging.WARNING)
    assert len(again) == 1 and "KeyError" in again[0] and "said before" in again[0]
