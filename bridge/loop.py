"""The event loop the bridge runs on: uvloop when it is installed and wanted, else asyncio's."""

from __future__ import annotations

import asyncio
import logging

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
