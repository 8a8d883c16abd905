"""``Turns``: a route's run acts one turn at a time — a ring round begun, an answer acted on,
a round closed, a step begun — and a move of its call to another worker holds them
(``ActsOnItsOwn``): :meth:`Turns.stand_still` lets the turn under way finish and no other
begin, so the ring the store keeps is the last one acted on here and the worker carrying the
call on is the only one acting from then on; :meth:`Turns.go_on` (the call stays here after
all) lets them begin again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Turns:
    """See the module docstring."""

    def __init__(self) -> None:
        self._acting = asyncio.Lock()
        self._open = asyncio.Event()
        self._open.set()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One act of the run, alone; it waits while the run stands still."""
        while True:
            await self._open.wait()
            await self._acting.acquire()
            if self._open.is_set():
                break
            self._acting.release()  # it stood still meanwhile: wait again
        try:
            yield
        finally:
            self._acting.release()

    @property
    def still(self) -> bool:
        """Whether it stands still (its call moving to another worker)."""
        return not self._open.is_set()

    async def stand_still(self) -> None:
        """Begin no turn from now on; return once the one under way is over."""
        self._open.clear()
        async with self._acting:
            pass

    def go_on(self) -> None:
        self._open.set()
