"""The worker supervisor: N bridge processes on one machine, restarted when they die.

One Python process carries about one core of calls, so ``BRIDGE_WORKERS=N|auto`` runs N
worker processes under this small supervisor. Every worker serves the public HTTP port with
``SO_REUSEPORT``: each binds its own listening socket to the same address and the kernel spreads
new connections across them, so no process sits in front of the API and a worker that dies takes
only its own connections with it. Each worker also listens on an internal address of its own
(port+i) where the other workers reach it to forward requests about the calls it owns.

Why not gunicorn or aiohttp's own runner: gunicorn's pre-fork model shares one inherited socket
and gives workers neither their own environment nor their own ports, and aiohttp has no
multi-process runner at all. The bridge needs, per worker, its index and the worker count in its
environment (from which it derives its internal port and worker id), a restart with backoff when
it dies (its calls are ended by a survivor, but the capacity must come back), a start failure
that stops everything instead of looping (a configuration error would fail every restart the
same way), and a drain on SIGTERM bounded by a timeout. That is a page of ``subprocess`` and
signals, which is less to trust than a dependency bent to fit.

The supervisor is deliberately not asyncio: it has nothing to do but wait for a signal, a child's
exit or a restart's deadline, and a plain ``select`` on a signal wakeup pipe
(:func:`signal.set_wakeup_fd`) does exactly that, with no event loop, child watcher or thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..stopping import passed_on

__all__ = ["GAVE_UP", "Supervisor", "usable_cores", "worker_command"]

log = logging.getLogger(__name__)

GAVE_UP = 2
"""``Supervisor.run``'s exit code when a worker failed at start too often (like the bridge's
own exit code for a configuration error)."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_command(argv: list[str]) -> list[str]:
    """The argv of one worker: this interpreter running the bridge with the same arguments."""
    return [sys.executable, "-m", "bridge", *argv]


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 64-core node sees 64 cores in its affinity; its
    ``cpu.max`` quota says 2, and 64 workers there would only fight over two cores' time.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(Path("/sys/fs/cgroup/cpu.max"))
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def cgroup_cpu_limit(path: Path) -> int | None:
    """Whole CPUs a cgroup v2 ``cpu.max`` file allows (rounded up), or None when unlimited."""
    try:
        quota, period = path.read_text().split()[:2]
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 file, "max" (unlimited) or garbage
        return None


def describe_exit(returncode: int) -> str:
    """``exit code 2`` or ``killed by SIGKILL``, for logs."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@dataclass
class _Worker:
    index: int
    delay: float
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    quick_failures: int = 0
    """Exits in a row within ``start_window`` of starting."""


class Supervisor:
    """Runs ``count`` worker processes, restarts them with backoff and drains them on SIGTERM.

    ``command(i)`` is worker *i*'s argv and ``env(i)`` the variables it gets on top of this
    process's environment, ``BRIDGE_WORKER_INDEX=i`` and ``BRIDGE_WORKERS_TOTAL=count``.
    A worker that exits while the supervisor is not stopping is restarted after ``first_delay``
    seconds, doubling up to ``max_delay``; a worker that lived longer than ``reset_after``
    starts again from ``first_delay``. A worker that exits within ``start_window`` seconds of
    starting ``give_up_after`` times in a row stops the supervisor (exit code :data:`GAVE_UP`).
    SIGTERM or SIGINT is forwarded to every worker; those still running ``drain_timeout``
    seconds later are killed. A second SIGTERM/SIGINT kills them at once, unless it is the
    first passed on again (within :data:`~bridge.stopping.SAME_STOP_WITHIN`).
    """

    def __init__(
        self,
        count: int,
        command: Callable[[int], list[str]],
        env: Callable[[int], dict[str, str]] = lambda _i: {},
        *,
        drain_timeout: float = 10.0,
        first_delay: float = 0.5,
        max_delay: float = 10.0,
        reset_after: float = 30.0,
        start_window: float = 1.0,
        give_up_after: int = 3,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self.count = count
        self.command = command
        self.env = env
        self.drain_timeout = drain_timeout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.reset_after = reset_after
        self.start_window = start_window
        self.give_up_after = give_up_after
        self._workers = [_Worker(i, first_delay) for i in range(count)]
        self._stop_signal: int | None = None
        self._drain_deadline: float | None = None
        self._killed = False
        self._gave_up = False
        self._drained: list[int] = []
        """Exit codes of the workers that stopped after the stop signal."""

    def pids(self) -> dict[int, int]:
        """The running workers' pids by index."""
        return {w.index: w.proc.pid for w in self._workers if w.proc and w.proc.poll() is None}

    def run(self) -> int:
        """Start the workers and supervise them until they have all exited.

        Returns 0 when every worker drained by itself after SIGTERM/SIGINT (exit code 0),
        1 when one had to be killed or exited with an error, :data:`GAVE_UP` when a worker
        kept failing at start. Must be called from the main thread (it handles signals).
        """
        with self._signals() as wakeup:
            try:
                for w in self._workers:
                    if not self._gave_up:
                        self._start(w)
                while True:
                    self._reap()
                    if self._gave_up and self._stop_signal is None:
                        self._stop(signal.SIGTERM)
                    if self._stop_signal is not None:
                        if all(w.proc is None for w in self._workers):
                            break
                        assert self._drain_deadline is not None
                        if not self._killed and time.monotonic() >= self._drain_deadline:
                            self._kill_all(f"still running {self.drain_timeout:g} s after SIGTERM")
                    else:
                        self._start_due()
                    for signum in self._wait(wakeup):
                        if signum not in _STOP_SIGNALS:
                            continue
                        if self._stop_signal is None:
                            name = signal.Signals(signum).name
                            log.info("%s: stopping %d workers", name, len(self.pids()))
                            self._stop(signum)
                        elif not self._killed and not self._same_stop():
                            self._kill_all("a second stop signal")
            finally:
                # Only reached with children alive if something above raised: leave no orphans.
                for w in self._workers:
                    if w.proc is not None and w.proc.poll() is None:
                        w.proc.kill()
                        w.proc.wait()
        if self._gave_up:
            return GAVE_UP
        clean = not self._killed and all(code == 0 for code in self._drained)
        log.info("all workers stopped%s", "" if clean else " (not all cleanly)")
        return 0 if clean else 1

    # --- the loop's steps -----------------------------------------------------------------

    def _start(self, w: _Worker) -> None:
        env = {
            **os.environ,
            **self.env(w.index),
            "BRIDGE_WORKER_INDEX": str(w.index),
            "BRIDGE_WORKERS_TOTAL": str(self.count),
        }
        w.restart_at = None
        w.started = time.monotonic()
        try:
            # A process group of its own: a terminal's Ctrl-C reaches the supervisor only, which
            # forwards it once, instead of every worker seeing it twice.
            w.proc = subprocess.Popen(
                self.command(w.index),
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            log.error("cannot start worker %d: %s; stopping", w.index, exc)
            self._gave_up = True
            return
        log.debug("worker %d started (pid %d)", w.index, w.proc.pid)

    def _reap(self) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.proc is None or (code := w.proc.poll()) is None:
                continue
            pid = w.proc.pid
            w.proc = None
            if self._stop_signal is not None:
                self._drained.append(code)
                log.info("worker %d (pid %d) stopped: %s", w.index, pid, describe_exit(code))
                continue
            lived = now - w.started
            if lived > self.reset_after:
                w.delay = self.first_delay
            w.quick_failures = w.quick_failures + 1 if lived < self.start_window else 0
            if w.quick_failures >= self.give_up_after:
                log.error(
                    "worker %d failed %d times in a row within %g s of starting (last: %s); "
                    "giving up: its own error is above",
                    w.index,
                    w.quick_failures,
                    self.start_window,
                    describe_exit(code),
                )
                self._gave_up = True
                continue
            log.warning(
                "worker %d (pid %d) exited unexpectedly after %.1f s: %s; restarting in %.1f s",
                w.index,
                pid,
                lived,
                describe_exit(code),
                w.delay,
            )
            w.restart_at = now + w.delay
            w.delay = min(w.delay * 2, self.max_delay)

    def _start_due(self) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.proc is None and w.restart_at is not None and now >= w.restart_at:
                self._start(w)

    def _stop(self, signum: int) -> None:
        self._stop_signal = signum
        self._drain_deadline = time.monotonic() + self.drain_timeout
        for w in self._workers:
            w.restart_at = None
            if w.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signum)

    def _same_stop(self) -> bool:
        """Whether a stop signal now is the first one passed on again (``stopping.py``)."""
        assert self._drain_deadline is not None
        return passed_on(self._drain_deadline - self.drain_timeout)

    def _kill_all(self, why: str) -> None:
        self._killed = True
        for w in self._workers:
            if w.proc is not None:
                log.warning("worker %d (pid %d): %s, killing it", w.index, w.proc.pid, why)
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()

    def _wait(self, wakeup: int) -> list[int]:
        """Sleep until a signal (a child's exit is SIGCHLD) or the next deadline; the signals."""
        deadlines = [w.restart_at for w in self._workers if w.restart_at is not None]
        if self._drain_deadline is not None and not self._killed:
            deadlines.append(self._drain_deadline)
        # At most a second: a lost wakeup (a full pipe) only delays, never hangs.
        timeout = min([1.0, *(d - time.monotonic() for d in deadlines)])
        ready, _, _ = select.select([wakeup], [], [], max(0.0, timeout))
        if not ready:
            return []
        try:
            return list(os.read(wakeup, 512))
        except BlockingIOError:
            return []

    @contextlib.contextmanager
    def _signals(self) -> Iterator[int]:
        """SIGTERM, SIGINT and SIGCHLD write their number to a pipe; yields its read end."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        # The handlers do nothing: the wakeup pipe carries the signal numbers to the loop.
        previous = {s: signal.signal(s, _ignore) for s in (*_STOP_SIGNALS, signal.SIGCHLD)}
        try:
            yield read
        finally:
            for s, handler in previous.items():
                # Once stopping, a repeat still on its way (systemd signals the whole unit)
                # must not kill the stop it repeats: the stop signals stay ignored.
                stopped = s in _STOP_SIGNALS and self._stop_signal is not None
                signal.signal(s, signal.SIG_IGN if stopped else handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(read)
            os.close(write)


def _ignore(_signum: int, _frame: object) -> None:
    pass


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to SIGTERM the worker if the supervisor dies (SIGKILL, OOM):
    a worker left behind would keep serving the public port with nobody to stop it."""

    # Resolved here, in the parent: between fork and exec the child should import nothing.
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        prctl = None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        if prctl is not None:
            prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec
