"""Logging set-up: plain text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable

from .config import LogFormat, ServerSettings
from .timefmt import iso_utc

_CALL_PREFIX = re.compile(r"call ([0-9a-f]{32})\b")


class FailureKinds:
    """A long-lived loop's failures that it survives: the first of each kind (the exception's
    type) logged with its traceback, the later ones of that kind at DEBUG, so one that recurs
    every turn is said once and the loop goes on."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._seen: set[str] = set()

    def failed(self, exc: BaseException, msg: str, *args: object) -> None:
        kind = type(exc).__name__
        if kind in self._seen:
            self._log.debug(msg + " (%r again)", *args, exc)
            return
        self._seen.add(kind)
        self._log.error(msg, *args, exc_info=exc)


class Repeats:
    """How many times in a row a failure came from each key (a source address, …), for one
    that anyone may repeat per request: said when :meth:`seen` returns 1, its end with what
    :meth:`ended` returns, never a line per request. The ``size`` keys seen last are kept
    (the one seen longest ago forgotten first: it is said again if it comes back)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._counts: OrderedDict[str, int] = OrderedDict()

    def seen(self, key: str) -> int:
        """Count one more from ``key``: how many in a row now."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self.size:
            self._counts.popitem(last=False)
        return count

    def ended(self, key: str) -> int:
        """``key`` did well: how many failures came from it before (0: none), forgotten."""
        return self._counts.pop(key, 0)

    def drain(self) -> list[tuple[str, int]]:
        """Every key's count, oldest first, all forgotten (the runs end together: a socket's
        close)."""
        counts = list(self._counts.items())
        self._counts.clear()
        return counts


class ParserRefusals(logging.Filter):
    """aiohttp's own "Error handling request" for a request its HTTP parser refused (a broken
    chunk, a header line too long: a client's malformed HTTP, answered 400 by aiohttp before
    any handler) is no error of the bridge's, and anyone may send it: said at WARNING without
    the traceback, once per client address (:class:`Repeats`). Everything else passes."""

    def __init__(self) -> None:
        super().__init__()
        from aiohttp.http_exceptions import HttpProcessingError  # the filter's alone

        self._refusal = HttpProcessingError
        self.sources = Repeats()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, self._refusal) or not 400 <= (exc.code or 0) < 500:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        source = str(args[0]) if args else "?"
        if self.sources.seen(source) > 1:
            return False
        reason = " ".join(str(exc.message or type(exc).__name__).split())[:200]
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = "HTTP from %s refused by aiohttp's parser (%d): %s (said once per address)"
        record.args = (source, exc.code, reason)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_parser_refusals() -> Callable[[], None]:
    """Put :class:`ParserRefusals` on aiohttp's server logger; returns its removal."""
    refusals = ParserRefusals()
    logger = logging.getLogger("aiohttp.server")
    logger.addFilter(refusals)
    return lambda: logger.removeFilter(refusals)


def call_id_of(record: logging.LogRecord) -> str | None:
    """The call a record is about: its ``call_id`` extra, or the ``call <id>:`` prefix that
    every call-related message of the bridge starts with."""
    if isinstance(record.msg, str) and record.msg.startswith("call %s") and record.args:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        first = str(args[0])
        if _CALL_PREFIX.fullmatch(f"call {first}"):
            return first
    return None


class CallNumbers(logging.Filter):
    """Names the number of the call a record is about (``record.number_id``): with many
    numbers in one deployment, every line of a call says which line it is on."""

    def __init__(self, number_of: Callable[[str], str | None]) -> None:
        super().__init__()
        self.number_of = number_of

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = getattr(record, "call_id", None) or call_id_of(record)
        if call_id and not hasattr(record, "number_id"):
            number_id = self.number_of(call_id)
            if number_id:
                record.number_id = number_id
        return True


def name_numbers(number_of: Callable[[str], str | None]) -> Callable[[], None]:
    """Put :class:`CallNumbers` on the root logger's handlers; returns its removal."""
    numbers = CallNumbers(number_of)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(numbers)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(numbers)

    return remove


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, and ``[number …]`` on a call's lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        number_id = getattr(record, "number_id", None)
        return f"{text} [number {number_id}]" if number_id else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``call_id`` (and the call's ``number``) when a record
    carries it."""

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
        number_id = getattr(record, "number_id", None)
        if number_id:
            out["number"] = number_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(settings: ServerSettings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aiortc/aioice are chatty at info level about every ICE check.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
