"""CLI entry point: ``webrtc-bridge`` / ``python -m bridge``."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .cluster import internal_url_for
from .cluster.supervisor import Supervisor, usable_cores, worker_command
from .config import ConfigError, Settings, ShutdownCalls, load_settings, unknown_settings
from .logs import setup_logging
from .loop import freeze_startup_heap, install_event_loop
from .rtc.ports import ephemeral_overlap
from .startup import StartupError
from .stopping import StopSignals

log = logging.getLogger("bridge")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings(args)
        setup_logging(settings.server)
        workers = settings.cluster.worker_count(usable_cores())
        index = os.environ.get("BRIDGE_WORKER_INDEX")
        if index is None:  # once per bridge: the supervisor, or a single worker
            _check_media_ports(settings)
            for line in unknown_settings():  # a misspelled name sets nothing
                log.warning("%s", line)
        if workers > 1 and index is None:
            return _supervise(settings, workers, args)
        if index is not None and not index.isdigit():
            raise ConfigError(
                f"BRIDGE_WORKER_INDEX={index!r}: the supervisor sets it for its workers (0, 1 …);"
                " leave it unset"
            )
        worker_index = int(index or 0)
        app = create_app(settings, worker_index=worker_index)
    except (ConfigError, StartupError) as exc:
        return _refused(exc)
    server, cluster = settings.server, settings.cluster
    internal = internal_url_for(cluster, server.port, worker_index) if cluster.shared else None
    try:
        # Several workers share the public port: SO_REUSEPORT lets the kernel spread new
        # connections over them. Each also listens on its own internal address, where other
        # instances forward requests about the calls it owns.
        sockets = [_listen(server.host, server.port, reuse_port=workers > 1)]
        if internal is not None:
            host, _, port = internal.removeprefix("http://").rpartition(":")
            sockets.append(
                _listen(host, int(port), reuse_port=False, setting="BRIDGE_INTERNAL_URL")
            )
    except OSError as exc:
        where = getattr(exc, "where", f"{server.host}:{server.port}")
        # A name that does not resolve (socket.gaierror) or any other refusal: said too.
        setting = getattr(exc, "setting", "BRIDGE_HOST")
        why = _BIND_ERRORS.get(exc.errno or 0) or f"{exc.strerror or exc} (check {setting})"
        print(f"webrtc-bridge: cannot listen on {where}: {why}", file=sys.stderr)
        return 2
    log.info(
        "starting on http://%s:%d with engine %s%s",
        server.host,
        server.port,
        settings.engine.engine,
        f" (worker {worker_index}, internal {internal})" if internal else "",
    )
    if not server.auth_enabled:
        log.warning("no BRIDGE_API_TOKENS set: the API is open to anyone who can reach it")
    # The process's own heap, not a test's (which makes many apps in one process).
    app.on_startup.append(freeze_startup_heap)  # after every resource is up (cleanup_ctx)
    # SIGINT/SIGTERM start a graceful shutdown: on_shutdown, then cleanup_ctx (which hangs up
    # calls and closes every peer connection); a repeat does not cut it short, one during the
    # start-up waits for its end (StopSignals).
    StopSignals().install(app)
    # Once the app was built and the ports bound (a start-up error stays one line on stderr).
    install_event_loop(settings.server.uvloop)
    try:
        web.run_app(app, sock=sockets, print=None, shutdown_timeout=5.0, access_log=None)
    except ConfigError as exc:  # found as the app started (a SIP certificate, its port)
        return _refused(exc)
    # The shutdown is done: a stop signal still on its way (make and systemd signal every
    # process, a supervisor its workers too) must not turn this clean stop into a kill (exit
    # -15 after "stopped"). StopSignals kept its own handler past the loop's close; this one
    # also covers a run that ended without a shutdown (a start-up that failed).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    log.info("stopped")
    return 0


def _refused(exc: ConfigError | StartupError) -> int:
    """One line on stderr for a bad setting or a start that cannot be; the exit status."""
    what = "configuration error" if isinstance(exc, ConfigError) else "cannot start"
    print(f"webrtc-bridge: {what}: {exc}", file=sys.stderr)
    return 2


def _check_media_ports(settings: Settings) -> None:
    ports = settings.ice.rtp_ports
    overlap = ephemeral_overlap(ports)
    if overlap is not None:
        log.warning(
            "BRIDGE_RTP_PORTS=%s overlaps the kernel's ephemeral ports %d-%d "
            "(net.ipv4.ip_local_port_range): any other socket on this host can take a media "
            "port; use a range below it, e.g. 10000-20000",
            ports,
            *overlap,
        )


def _listen(
    host: str, port: int, *, reuse_port: bool, setting: str = "BRIDGE_HOST"
) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        exc.where = f"{host}:{port}"  # type: ignore[attr-defined]
        exc.setting = setting  # type: ignore[attr-defined]
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


START_WINDOW = 15.0
"""Seconds after its start within which a worker's exit counts as a failure to start."""

DRAIN_TIMEOUT = 20.0
"""Seconds workers get after SIGTERM to end or hand over their calls before SIGKILL: longer
than a worker's own shutdown (hang-ups ~10 s, then aiohttp's 5 s), shorter than Kubernetes'
grace period minus the preStop pause (30 - 5 s)."""


def drain_timeout(settings: Settings) -> float:
    """How long the supervisor waits after SIGTERM: with ``BRIDGE_SHUTDOWN_CALLS=handover`` a
    worker may serve calls that cannot move for up to ``BRIDGE_DRAIN_TIMEOUT`` first."""
    calls = settings.calls
    extra = calls.drain_timeout if calls.shutdown_calls is ShutdownCalls.HANDOVER else 0.0
    return DRAIN_TIMEOUT + extra


def _supervise(settings: Settings, workers: int, args: list[str]) -> int:
    """Start ``workers`` worker processes and keep them running (``BRIDGE_WORKERS``)."""
    log.info(
        "supervising %d workers on http://%s:%d",
        workers,
        settings.server.host,
        settings.server.port,
    )
    return Supervisor(
        count=workers,
        command=lambda i: worker_command(args),
        drain_timeout=drain_timeout(settings),
        # A worker that cannot start (a port in use, an unwritable data directory) fails
        # within a few seconds: three such failures in a row stop the supervisor.
        start_window=START_WINDOW,
    ).run()


_BIND_ERRORS = {
    errno.EADDRINUSE: "the port is already in use (another process listens there; choose "
    "another with BRIDGE_PORT / --port)",
    errno.EACCES: "permission denied (ports below 1024 need privileges; use BRIDGE_PORT)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's (check BRIDGE_HOST)",
}


if __name__ == "__main__":
    sys.exit(main())
