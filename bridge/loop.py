"""The event loop the bridge runs on: uvloop when it is installed and wanted, else asyncio's;
and the collector's pauses kept off that loop's media (:func:`freeze_startup_heap`)."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)


def install_event_loop(enabled: bool) -> str:
    """Make the loops created from now on uvloop's (``enabled`` and importable) or asyncio's.

    Set as the policy, so ``aiohttp.web.run_app`` (which creates its own loop) picks it up.
    Returns the name of the loop in use, ``"uvloop"`` or ``"asyncio"``, and logs it.
    """
    if enabled:
        try:
            import uvloop
        except ImportError:
            log.info("event loop: asyncio (uvloop is not installed)")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            log.info("event loop: uvloop %s", uvloop.__version__)
            return "uvloop"
    else:
        log.info("event loop: asyncio (BRIDGE_UVLOOP is off)")
    asyncio.set_event_loop_policy(None)
    return "asyncio"


async def freeze_startup_heap(app: Any) -> None:
    """The objects made by the time the app has started (modules, settings, routes, the
    resources' long-lived state: most of the process's heap) moved out of the cyclic collector's
    reach (``gc.freeze``). A full collection stops the one event loop, and with it every call's
    media on this worker, for as long as it walks the heap; it never finds garbage among those,
    so it walks only what was made since (the calls'). The start-up's own garbage is collected
    first. An ``on_startup`` handler, after every resource is up."""
    gc.collect()
    gc.freeze()
    log.debug("collector: %d start-up objects frozen", gc.get_freeze_count())
