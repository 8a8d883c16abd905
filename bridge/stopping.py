"""Stop signals: what SIGTERM and SIGINT do to a bridge process, said once for the worker
(:class:`StopSignals`, ``resources.drain_on_sigterm``) and the supervisor
(``cluster/supervisor.py``).

The first starts the graceful stop. The same stop often arrives twice: ``make`` passes on the
SIGTERM it gets to the process it runs (which got its own), systemd signals every process of a
unit, and a supervisor's workers get their supervisor's too. A repeat within
:data:`SAME_STOP_WITHIN` of the first is that: the same stop, not an operator asking for a
faster one."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

log = logging.getLogger(__name__)

SAME_STOP_WITHIN = 0.5
"""Seconds after the first stop signal within which another is the same stop passed on again
(machines pass it on within milliseconds, even on a loaded host; an operator's second Ctrl-C
comes later)."""


def graceful_exit() -> None:
    """aiohttp's graceful exit, raised: the stop of an app without :class:`StopSignals` (the
    tests' apps, whose process is pytest's)."""
    raise web.GracefulExit()


class StopSignals:
    """SIGINT and SIGTERM in the bridge's own process (``__main__``): the first starts the
    graceful shutdown, a repeat while it runs is said once and ignored.

    aiohttp's ``run_app`` raises its graceful exit at every one, and a second raised while the
    shutdown runs aborts it: calls left up at the engine, recordings unfinished, a traceback
    and exit 1. Repeats are common: ``make`` passes the SIGTERM it gets on to the bridge it
    runs (which got its own), and systemd signals every process of a unit, workers too, which
    their supervisor also signals. The shutdown is bounded without them
    (docs/deployment.md). With ``BRIDGE_SHUTDOWN_CALLS=handover`` SIGTERM is the drain's
    (``resources.drain_on_sigterm``, installed after these) until the shutdown begins.

    A stop signal during the start-up waits for it to end, then stops: ``run_app`` starts the
    app's resources outside the ``try`` that cleans them up, so a graceful exit raised while
    they start left those already up uncleaned (engines' calls, sockets, a Redis presence). A
    second signal past :data:`SAME_STOP_WITHIN` stops at once, as the operator asks (a start-up
    that hangs), cleaning up nothing."""

    def __init__(self) -> None:
        self.stopping = False
        self.starting = True
        self._asked_at: float | None = None
        """When a stop signal came during the start-up."""
        self._said = False

    def install(self, app: web.Application) -> None:
        """Before ``run_app``: listen from the start of the start-up, and again as the
        shutdown begins (taking SIGTERM back from the drain); the drain stops through
        :meth:`stop` (``app[STOP]``)."""
        app[STOP] = self
        app.on_startup.insert(0, self._listen)
        app.on_startup.append(self._started)  # last: after every resource is up
        app.on_shutdown.insert(0, self._shutting_down)

    def stop(self) -> None:
        """Begin the graceful shutdown, once: raises aiohttp's graceful exit unless it has
        begun (a drain that ends while a signal's shutdown runs must not raise it again), or
        once the start-up is done when it is still under way (class docstring)."""
        if self.starting:
            self._asked_at = self._asked_at or time.monotonic()
            return
        if not self.stopping:
            self.stopping = True
            raise web.GracefulExit()

    async def _listen(self, _app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled, sig)

    async def _started(self, _app: web.Application) -> None:
        self.starting = False
        if self._asked_at is not None:  # the graceful exit once run_app is in its ``try``
            asyncio.get_running_loop().call_soon(self.stop)

    async def _shutting_down(self, app: web.Application) -> None:
        self.stopping = True
        await self._listen(app)

    def _signalled(self, sig: signal.Signals) -> None:
        if self.starting:
            self._during_start_up(sig)
            return
        if not self.stopping:
            self.stop()
        if not self._said:
            self._said = True
            log.warning(
                "%s while stopping: ignored (the shutdown ends within its bounds)", sig.name
            )

    def _during_start_up(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        if self._asked_at is None:
            self._asked_at = now
            log.warning("%s during start-up: stopping as soon as it is done", sig.name)
        elif now - self._asked_at >= SAME_STOP_WITHIN:
            log.warning("%s again during start-up: stopping at once, cleaning up nothing", sig.name)
            self.starting = False
            self.stop()


STOP = web.AppKey("stop_signals", StopSignals)
"""The process's :class:`StopSignals`, on an app run by ``__main__``."""
