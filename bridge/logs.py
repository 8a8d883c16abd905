"""Logging set-up: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re

from .config import LogFormat, ServerSettings
from .timefmt import iso_utc

_CALL_PREFIX = re.compile(r"call ([0-9a-f]{32})\b")


def call_id_of(record: logging.LogRecord) -> str | None:
    """The call a record is about: its ``call_id`` extra, or the ``call <id>:`` prefix that
    every call-related message of the bridge starts with."""
    if isinstance(record.msg, str) and record.msg.startswith("call %s") and record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        first = str(args[0])
        if _CALL_PREFIX.fullmatch(f"call {first}"):
            return first
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``call_id`` is included when a record carries it."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or call_id_of(record)
        if call_id:
            out["call_id"] = call_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(settings: ServerSettings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiortc/aioice are chatty at info level about every ICE check.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
