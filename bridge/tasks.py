"""Owned background tasks: every task is named, tracked, cancelled and awaited; an owner's
close, which runs to its end once whoever awaits it (:class:`CloseOnce`); and a bounded wait
that a cancellation always ends (:func:`wait_event`).

Bounded waits use ``asyncio.timeout()``, never ``asyncio.wait_for``: on Python 3.11 the latter
swallows a cancellation that arrives in the loop turn its awaitable completes (CPython
gh-86296, fixed in 3.12), so a task its owner cancels just as it is woken runs on, and the
owner's :meth:`TaskSet.close` waits its whole timeout for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from .errors import BridgeError

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")

_NORMAL_EXITS: tuple[type[BaseException], ...] = (asyncio.CancelledError, ConnectionError)


class TaskSet:
    """A set of tasks owned by one object.

    Finished tasks leave the set on their own; an exception other than a normal exit
    (cancellation, ``ConnectionError``) is logged, never lost. :meth:`close` cancels what is
    left and waits for it, so the owner's teardown cannot leave tasks behind.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task owned by this set."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner}: task set is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, _NORMAL_EXITS):
            log.error("task %s failed", task.get_name(), exc_info=exc)

    async def join(self) -> None:
        """Wait for the tasks running now to finish on their own (nothing is cancelled)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self, timeout: float = 5.0, *, spare: asyncio.Task[Any] | None = None) -> None:
        """Cancel every task and wait for them (bounded by ``timeout``); ``spare``, one of
        them that waits for this close (a call's end task closing its runtime), is left to
        end on its own."""
        self._closed = True
        await cancel_and_wait([t for t in self._tasks if t is not spare], timeout)


class TaskPerKey(Generic[K]):
    """At most one task a key (a number's health check, its settings comparison, its events'
    forwarder), each in its owner's :class:`TaskSet`: a new task for a key ends the one before
    it (asked again: the newer one counts), :meth:`cancel` ends a key's (its subject gone), and
    a task that ends leaves on its own. The owner's close awaits them all."""

    def __init__(self, tasks: TaskSet, label: str) -> None:
        self._tasks = tasks
        self._label = label
        self._running: dict[K, asyncio.Task[Any]] = {}

    def start(self, key: K, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as ``key``'s task, ending the one under way for it."""
        self.cancel(key)
        task = self._tasks.spawn(coro, f"{self._label}:{key}")
        self._running[key] = task
        task.add_done_callback(lambda done: self._ended(key, done))
        return task

    def get(self, key: K) -> asyncio.Task[Any] | None:
        """``key``'s task while it runs."""
        return self._running.get(key)

    def pop(self, key: K) -> asyncio.Task[Any] | None:
        """``key``'s task, let go of here (still the task set's: its close awaits it)."""
        return self._running.pop(key, None)

    def cancel(self, key: K) -> None:
        """End ``key``'s task, if one runs (the task set awaits it)."""
        task = self._running.pop(key, None)
        if task is not None:
            task.cancel()

    def _ended(self, key: K, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel ``tasks`` (never the caller itself) and wait up to ``timeout`` for them."""
    current = asyncio.current_task()
    tasks = [t for t in tasks if t is not current and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            log.warning("task %s did not stop within %.1fs", t.get_name(), timeout)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether ``event`` is set within ``timeout`` seconds (``None``: no limit); a cancellation
    ends the wait even in the turn the event is set (see the module's docstring)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            return await event.wait()
    except TimeoutError:
        return event.is_set()


class CloseOnce(Generic[T]):
    """An owner's close that runs to its end once, whoever awaits it or is cancelled.

    The first :meth:`run` starts the teardown as a task of its own, named ``name``; every
    caller, the first included, awaits that one task shielded. A caller cancelled mid-teardown
    (a request whose client went away, a task its owner cancels) leaves the teardown running
    to its end, and a later caller waits for that end rather than returning at once to an
    owner half closed. Each caller waiting gets its result or what it raised; raised with no
    caller left waiting, it is logged, never lost."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[T] | None = None
        self._waiting = 0

    @property
    def started(self) -> bool:
        """Whether the close has begun."""
        return self._task is not None

    async def run(self, teardown: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The close: ``teardown()`` started by the first caller; its end, for every one."""
        task = self._task
        if task is None:
            task = asyncio.get_running_loop().create_task(teardown(), name=self.name)
            task.add_done_callback(self._done)
            self._task = task
        self._waiting += 1
        try:
            return await asyncio.shield(task)
        finally:
            self._waiting -= 1

    def _done(self, task: asyncio.Task[T]) -> None:
        # Runs before any waiting caller resumes: one still waiting takes the outcome.
        if task.cancelled() or self._waiting:
            return
        exc = task.exception()
        if isinstance(exc, BridgeError):  # a failure with its reason (a full disk): said
            log.warning("%s failed with nobody waiting for it: %s", task.get_name(), exc)
        elif exc is not None and not isinstance(exc, _NORMAL_EXITS):
            log.error("%s failed with nobody waiting for it", task.get_name(), exc_info=exc)
