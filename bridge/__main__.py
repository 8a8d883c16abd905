"""CLI entry point: ``webrtc-bridge`` / ``python -m bridge``."""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .config import ConfigError, load_settings
from .logs import setup_logging
from .loop import install_event_loop
from .startup import StartupError

log = logging.getLogger("bridge")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
        setup_logging(settings.server)
        install_event_loop(settings.server.uvloop)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"webrtc-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"webrtc-bridge: cannot start: {exc}", file=sys.stderr)
        return 2
    log.info(
        "starting on http://%s:%d with engine %s",
        settings.server.host,
        settings.server.port,
        settings.engine.engine,
    )
    if not settings.server.auth_enabled:
        log.warning("no BRIDGE_API_TOKENS set: the API is open to anyone who can reach it")
    # run_app turns SIGINT/SIGTERM into a graceful shutdown: on_shutdown, then cleanup_ctx
    # (which hangs up calls and closes every peer connection).
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            print=None,
            shutdown_timeout=5.0,
            access_log=None,
        )
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        where = f"{settings.server.host}:{settings.server.port}"
        why = _BIND_ERRORS[exc.errno]
        print(f"webrtc-bridge: cannot listen on {where}: {why}", file=sys.stderr)
        return 2
    log.info("stopped")
    return 0


_BIND_ERRORS = {
    errno.EADDRINUSE: "the port is already in use (another process listens there; choose "
    "another with BRIDGE_PORT / --port)",
    errno.EACCES: "permission denied (ports below 1024 need privileges; use BRIDGE_PORT)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's (check BRIDGE_HOST)",
}


if __name__ == "__main__":
    sys.exit(main())
