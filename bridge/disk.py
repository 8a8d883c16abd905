"""The data directory's and the media directory's I/O, off the event loop, on threads of their
own.

A call record written, an audio asset read, a file opened to play, a report listed: each is a
few milliseconds on a healthy disk, and each is done on a thread (never on the event loop,
which carries every call's media). They are not done on asyncio's default executor: a volume
that stalls (a network volume, a disk in I/O wait) holds every thread that touches it, and
the default executor's few threads (six on a 2-core machine) are also where the loop resolves
host names (``getaddrinfo``: webhooks, engines, models). Stalled reads of assets then held up
every webhook and every new connection of the worker. Here they hold :data:`THREADS` threads
of this pool at most, and wait their turn behind each other meanwhile.

Recordings have their own writers and finishers (``attachments/recorder.py``,
``attachments/recording.py``); SQLite's single-node numbers store its one thread
(``numbers/store.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

THREADS = 4
"""Threads for the directories' I/O, per process: more than one (a slow listing does not hold
a call record's write), few enough that a stalled volume leaves the rest of the process its
default executor."""

_pool: ThreadPoolExecutor | None = None


def on_disk(work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``work(*args)`` on the directories' threads (module docstring), begun now: its result,
    or what it raised, awaited (a future of the running loop, no task: cancelling it leaves
    ``work`` to finish on its thread, unheard)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="disk")
    return asyncio.get_running_loop().run_in_executor(_pool, work, *args)
