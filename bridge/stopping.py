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
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

SAME_STOP_WITHIN = 0.5
"""Seconds after the first stop signal within which another is the same stop passed on again
(machines pass it on within milliseconds, even on a loaded host; an operator's second Ctrl-C
comes later)."""


def passed_on(first_at: float, now: float | None = None) -> bool:
    """Whether a stop signal at ``now`` (``time.monotonic()``, default: now) is the first one,
    which came at ``first_at``, passed on again (the module docstring's rule)."""
    return (time.monotonic() if now is None else now) - first_at < SAME_STOP_WITHIN


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
    (docs/deployment.md). With ``BRIDGE_SHUTDOWN_CALLS=handover`` SIGTERM goes to the drain
    (:meth:`on_sigterm`, ``resources.drain_on_sigterm``) until the shutdown begins.

    A stop signal during the start-up is acted on once the start-up is done (the drain's, for
    a SIGTERM with one): ``run_app`` starts the app's resources outside the ``try`` that cleans
    them up, so a graceful exit raised while they start left those already up uncleaned
    (engines' calls, sockets, a Redis presence). A second signal past :data:`SAME_STOP_WITHIN`
    stops at once, as the operator asks (a start-up that hangs), cleaning up nothing."""

    def __init__(self) -> None:
        self.stopping = False
        self.starting = True
        self._asked: tuple[signal.Signals, float] | None = None
        """The stop signal that came during the start-up, and when."""
        self._sigterm: Callable[[], None] | None = None
        """The drain's SIGTERM handler (:meth:`on_sigterm`)."""
        self._said = False

    def install(self, app: web.Application) -> None:
        """Before ``run_app``: listen from the start of the start-up; act on a signal that
        came during it once every resource is up; the drain stops through :meth:`stop`
        (``app[STOP]``)."""
        app[STOP] = self
        app.on_startup.insert(0, self._listen)
        app.on_startup.append(self._started)  # last: after every resource is up
        app.on_shutdown.insert(0, self._shutting_down)

    def on_sigterm(self, handler: Callable[[], None]) -> None:
        """SIGTERM goes to ``handler`` (the handover drain) from the end of the start-up until
        the shutdown begins; SIGINT still stops."""
        self._sigterm = handler

    def stop(self) -> None:
        """Begin the graceful shutdown, once: raises aiohttp's graceful exit unless it has
        begun (a drain that ends while a signal's shutdown runs must not raise it again)."""
        if not self.stopping:
            self.stopping = True
            raise web.GracefulExit()

    async def _listen(self, _app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._signalled, sig)

    async def _started(self, _app: web.Application) -> None:
        self.starting = False
        if self._asked is not None:  # acted on once run_app is in its ``try``
            asyncio.get_running_loop().call_soon(self._signalled, self._asked[0])

    async def _shutting_down(self, _app: web.Application) -> None:
        self.stopping = True  # from now on a signal is a repeat: said once, ignored
        # The loop's handlers end with the loop: run_app closes it after the shutdown, and a
        # closing loop puts the default handlers back, so a repeat arriving between that and
        # __main__'s last lines killed a clean stop (exit -15 after "ignored"). The repeat's
        # handler is the process's own from now on; the signals wait, blocked, while it
        # changes hands (between the two calls the default handler would be in place).
        loop = asyncio.get_running_loop()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
                signal.signal(sig, self._repeat)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _repeat(self, signum: int, _frame: object) -> None:
        self._signalled(signal.Signals(signum))

    def _signalled(self, sig: signal.Signals) -> None:
        if self.starting:
            self._during_start_up(sig)
        elif self.stopping:
            if not self._said:
                self._said = True
                log.warning(
                    "%s while stopping: ignored (the shutdown ends within its bounds)", sig.name
                )
        elif sig is signal.SIGTERM and self._sigterm is not None:
            self._sigterm()
        else:
            self.stop()

    def _during_start_up(self, sig: signal.Signals) -> None:
        if self._asked is None:
            self._asked = (sig, time.monotonic())
            log.warning("%s during start-up: acted on as soon as it is done", sig.name)
        elif not passed_on(self._asked[1]):
            log.warning("%s again during start-up: stopping at once, cleaning up nothing", sig.name)
            self.starting = False
            self.stop()


STOP = web.AppKey("stop_signals", StopSignals)
"""The process's :class:`StopSignals`, on an app run by ``__main__``."""
