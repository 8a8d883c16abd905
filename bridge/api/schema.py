"""The OpenAPI document (``api/openapi.yaml``, kept by hand) and request validation from it.

One source of truth: ``GET /openapi.json`` serves the file, and :func:`read_body` checks JSON
bodies against the same ``components/schemas`` (JSON Schema 2020-12, as OpenAPI 3.1 uses), so a
body that breaks the document is a 400 with the JSON error body naming the field. A schema's
``x-error-codes`` maps a field to the error code its violations get (``phone`` →
``invalid_phone``); every other violation is ``bad_request``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from ..errors import BadRequest
from .errors import JSON_LIMIT, read_json

routes = web.RouteTableDef()

_URI = "urn:bridge:openapi"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The parsed ``openapi.yaml`` (read once)."""
    text = resources.files("bridge.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    # libyaml's parser where PyYAML has it (its wheels do): 60 ms for this document, where
    # the pure-Python one takes 200 ms, on the CPU of whichever worker reads it first.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc: dict[str, Any] = yaml.load(text, Loader=loader)
    return doc


@functools.cache
def openapi_json() -> bytes:
    return json.dumps(openapi_document(), ensure_ascii=False).encode()


def _schema(ref: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi_document()["components"]["schemas"]
    while "$ref" in ref:
        ref = schemas[ref["$ref"].rsplit("/", 1)[-1]]
    return ref


@functools.cache
def call_body_routes() -> frozenset[str]:
    """The POST paths whose JSON body names the call (a required ``callID``), read from the
    document: routing sends them to the call's owner."""
    paths = set()
    for path, operations in openapi_document()["paths"].items():
        body = operations.get("post", {}).get("requestBody", {})
        schema = _schema(body.get("content", {}).get("application/json", {}).get("schema", {}))
        if "callID" in schema.get("required", ()):
            paths.add(path)
    return frozenset(paths)


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    doc = openapi_document()
    if name not in doc["components"]["schemas"]:
        raise KeyError(f"no schema {name!r} in openapi.yaml")
    registry: Registry[Any] = Registry().with_resource(_URI, DRAFT202012.create_resource(doc))
    return Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{name}"}, registry=registry)


def _missing(error: ValidationError) -> str | None:
    """The property a ``required`` error says is missing (``None`` for another error)."""
    message = error.message  # "'phone' is a required property"
    if error.validator == "required" and message.startswith("'") and "'" in message[1:]:
        return message[1 : message.index("'", 1)]
    return None


def _location(error: ValidationError) -> list[str]:
    """Where in the body an error is: the path to the value (``codecs/0``), and a missing
    property after the object that lacks it (``sip/uri``); empty for the body as a whole."""
    missing = _missing(error)
    return [str(p) for p in error.absolute_path] + ([missing] if missing is not None else [])


def _field(error: ValidationError) -> str | None:
    """The top-level field an error is about (``None``: the body as a whole)."""
    location = _location(error)
    return location[0] if location else None


def validate_body(name: str, body: dict[str, Any]) -> None:
    """Raise :class:`BadRequest` naming the field when ``body`` breaks schema ``name``."""
    validator = _validator(name)
    error = best_match(validator.iter_errors(body))
    if error is None:
        return
    field = _field(error)
    codes: dict[str, str] = openapi_document()["components"]["schemas"][name].get(
        "x-error-codes", {}
    )
    code = codes.get(field or "", "bad_request")
    detail = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    if field is None:
        raise BadRequest(f"the body does not match {name}: {detail}", code=code)
    location = "/".join(_location(error))
    if error.validator == "required":
        # the field missing, by its path: "'sip' is required" said the object that lacks it
        raise BadRequest(f"field {location!r} is required", code=code)
    raise BadRequest(f"field {location!r}: {detail}", code=code)


async def read_body(request: web.Request, schema: str, limit: int = JSON_LIMIT) -> dict[str, Any]:
    """The request's JSON object body, checked against ``components/schemas/<schema>``."""
    body = await read_json(request, limit)
    validate_body(schema, body)
    return body


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document (open: it holds no secret)."""
    return web.Response(body=openapi_json(), content_type="application/json")
