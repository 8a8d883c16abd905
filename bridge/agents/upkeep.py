"""What keeps a model's session going besides its messages, for an agent's
:class:`~.connection.ModelConnection` (which runs these beside its socket, and acts when they
return): the dialect's keep-alive whenever nothing went up for a while (a hold, a silent leg),
and when a session the provider caps (Deepgram's two hours, GPT-Live's ``expires_at``, OpenAI
Realtime's and xAI's hour) is due renewed: :data:`RENEW_MARGIN_S` before the cap, at the first
moment nobody speaks (:data:`RENEW_WAIT_S`), so the caller is never cut off by it, nor a reply
in its middle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .outbox import Outbox

RENEW_MARGIN_S = 120.0
"""Seconds before a provider's session cap (``session_limit_s``) the session is due renewed."""
RENEW_WAIT_S = 90.0
"""Seconds a due renewal waits for a quiet moment (``quiet``: nobody speaking) before it is
made anyway, within the margin: a reply is not cut by it. Never past :data:`RENEW_LEEWAY_S`
before the cap: a short session (GPT-Live's ``expires_at``) renews at once."""
RENEW_LEEWAY_S = 30.0
"""Seconds before the cap a renewal is made whoever speaks (the new session's opening)."""
RENEW_NOT_BEFORE = 0.5
"""The part of a session that passes before it is renewed, however short its cap (an Ultravox
``maxDuration`` of a minute or two, a short GPT-Live ``expires_at``): renewed 1 s in, each new
session was renewed as soon, a new session every second or two while nobody spoke."""


async def keep_alive(out: Outbox, every: float, send: Callable[[], None]) -> None:
    """``send()`` the dialect's keep-alive whenever neither the caller's audio nor a keep-alive
    went up ``out`` for ``every`` seconds (the caller's audio stopped: a hold, a silent leg);
    runs until cancelled. Control messages do not count: a provider's idle timer waits on
    audio (Deepgram's), or on the user (ElevenLabs' turn timeout), not on our answers."""
    while True:
        await asyncio.sleep(max(0.05, every - (time.monotonic() - out.last_up)))
        if time.monotonic() - out.last_up >= every:
            send()
            out.last_up = time.monotonic()


async def renewal_due(cap: float, quiet: Callable[[], bool]) -> None:
    """Return when a session capped at ``cap`` seconds (from now) is to be renewed: at least
    1 s from now and :data:`RENEW_NOT_BEFORE` of the way, and :data:`RENEW_MARGIN_S` before
    the cap, then not in the middle of a sentence, the model's or the caller's (``quiet()``),
    while the cap allows (at most :data:`RENEW_WAIT_S`, and never within
    :data:`RENEW_LEEWAY_S` of the cap)."""
    after = max(1.0, cap * RENEW_NOT_BEFORE, cap - RENEW_MARGIN_S)
    wait = min(RENEW_WAIT_S, max(0.0, cap - RENEW_LEEWAY_S - after))
    await asyncio.sleep(after)
    waited = 0.0
    while not quiet() and waited < wait:
        await asyncio.sleep(0.1)
        waited += 0.1
