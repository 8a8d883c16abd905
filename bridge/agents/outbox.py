"""What an agent sends its model, waiting for the socket: the connection's child
(:class:`~.connection.ModelConnection` owns the socket and its one sender task).

One :class:`~bridge.attachments.wire.OutgoingQueue` a session — a new session's starts empty:
what was queued for the old one (a truncate of its items) means nothing to it — bounded: the
caller's audio at :data:`UP_QUEUE` frames, the oldest dropped past it. A drop means the model's
socket is too slow to take the caller (its kernel send buffer is small: ``attachments/wire.py``
``bound_send_buffer``), and the model misses what was said: counted over the agent's sessions
(the agent's ``callerAudioDroppedMs``) and said once a session at WARNING
(:class:`~bridge.logs.Repeats`). Control messages wait up to :data:`MAX_CONTROL`: past it
(a socket that takes nothing) the next are dropped, counted (``modelMessagesDropped``) and
said once a session at WARNING too. Between two sessions of a planned end (a renewal, a
``goAway``: :mod:`.ends`) the caller's audio is kept for the next one, bounded alike
(:meth:`Outbox.hold`). It keeps when the caller's audio or a keep-alive last went up (the
keep-alive's clock).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import Any

from ..attachments.wire import OutgoingQueue
from ..audio import FRAME_MS
from ..logs import Repeats

log = logging.getLogger(__name__)

UP_QUEUE = 50
"""Caller frames waiting for a slow model socket (1 s) before the oldest go."""
SLOW = "the model's socket is too slow to take the caller's audio"
GAP = "the model's next session is slow to open"
MAX_CONTROL = 500
"""Control messages waiting for the model's socket before the next ones are dropped."""


class Outbox:
    """See the module docstring."""

    def __init__(self, where: str) -> None:
        self.where = where
        """``call …: agent …``, for the log."""
        self.queue = _queue()
        """The current session's queue (its sender: the connection's)."""
        self.last_up = time.monotonic()
        """When the caller's audio or a keep-alive last went up (the keep-alive's clock: a
        control message, a ``pong``, keeps no model's idle timer, which waits on audio)."""
        self.audio_dropped = 0
        """Caller frames dropped, over every session, because the model's socket was too slow
        to take them."""
        self.control_dropped = 0
        """Control messages dropped, over every session, because :data:`MAX_CONTROL` waited
        for a socket that took nothing."""
        self._sessions = 0
        self.holding = False
        """The caller's audio is kept for the next session (:meth:`hold`)."""
        self._held: deque[str | bytes] = deque()
        self._said = Repeats(size=8)  # the sessions that dropped the caller's audio, control

    def renew(self) -> None:
        """A new session's socket: what was queued for the old one is dropped (but for the
        caller's audio :meth:`hold` keeps: :meth:`release`)."""
        self.queue = _queue()
        self._sessions += 1

    def release(self) -> None:
        """The new session is told what opens it (what was said, the caller's turn in
        progress): the caller's audio :meth:`hold` kept goes now, after that."""
        for message in self._held:
            self.queue.put_audio(message)
        self._held.clear()
        self.holding = False

    def hold(self) -> None:
        """The session is closing on purpose (a renewal, a ``goAway``: :mod:`.ends`): the
        caller's audio its socket has not taken yet, and what comes until the next session
        (:meth:`renew`), is kept for that session — at most :data:`UP_QUEUE` frames, the oldest
        dropped past it (counted as a slow socket's)."""
        self.holding = True
        self._held.extend(self.queue.take_audio())
        while len(self._held) > UP_QUEUE:
            self._held.popleft()
            self._dropped_one(GAP)

    def control(self, messages: list[dict[str, Any]], *, before_audio: bool = False) -> None:
        """Queue control messages (never dropped while the queue has room); ``before_audio``:
        ahead of the caller's audio waiting, in order with the other control messages (an
        answer the model waits for: a pong)."""
        for message in messages:
            if not self.queue.put_control(json.dumps(message), before_audio=before_audio):
                self._control_refused(message)

    def _control_refused(self, message: dict[str, Any]) -> None:
        """The control queue is full (a socket that stopped taking anything): ``message`` is
        dropped, counted and said once a session at WARNING."""
        self.control_dropped += 1
        if self._said.seen(f"control {self._sessions}") == 1:
            log.warning(
                "%s: the model's socket takes nothing: %d control messages wait for it, so "
                "%s and the next ones are dropped (the model misses them; counted in the "
                "agent's modelMessagesDropped), said once a session",
                self.where,
                self.queue.max_control,
                str(message.get("type") or next(iter(message), "a message"))[:40],
            )

    def audio(self, message: str | bytes) -> bool:
        """Queue one frame of the caller (the dialect's message); ``False`` when the oldest
        frame queued was dropped for it (module docstring)."""
        self.last_up = time.monotonic()
        if self.holding:  # between two sessions (``hold``)
            self._held.append(message)
            if len(self._held) <= UP_QUEUE:
                return True
            self._held.popleft()
            self._dropped_one(GAP)
            return False
        else:
            before = self.queue.dropped
            self.queue.put_audio(message)
            if self.queue.dropped == before:
                return True
        self._dropped_one(SLOW)
        return False

    def _dropped_one(self, why: str) -> None:
        self.audio_dropped += 1
        if self._said.seen(str(self._sessions)) == 1:
            log.warning(
                "%s: %s: more than %d ms of the caller's audio waits for it, the oldest "
                "dropped (the model misses what the caller said; counted in the agent's "
                "callerAudioDroppedMs), said once a session",
                self.where,
                why,
                UP_QUEUE * FRAME_MS,
            )


def _queue() -> OutgoingQueue:
    return OutgoingQueue(max_audio=UP_QUEUE, max_control=MAX_CONTROL, drop_oldest_audio=True)
