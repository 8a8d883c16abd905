"""The cyclic collector's full walks between tests, never during one (a pytest plugin,
registered by ``tests/conftest.py``).

A test process holds pytest, every module the suite imports and what earlier tests left in
caches: 100 000 to 200 000 collector-tracked objects. A full (generation 2) collection walks
them all on the thread that runs the test's event loop, where the bridge under test, its
peers and its fakes share that loop: measured here at 83–141 ms per walk, in the middle of
tests (2026-11-27, `tests/integration/test_participants.py` and `test_api.py` on two workers).
A test that judges audio hears that as a stall of every call at once.

So the process's start-up heap is frozen once the tests are collected (as ``python -m bridge``
freezes its own: ``bridge/loop.py``), automatic full collections are off, and a full collection
runs after a test's teardown instead, as often as the collector would have run one (every
:data:`FULL_EVERY` collections of the middle generation). The young generations still collect
during tests, as in production.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

FULL_EVERY = 10
"""Middle-generation collections between two full ones: CPython's own default threshold."""


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)  # no full collection of its own accord


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    if gc.get_count()[2] >= FULL_EVERY:
        gc.collect()
