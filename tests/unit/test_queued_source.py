"""The queued source behind playback, PCM sockets and two-way forks: marks and clear."""

from __future__ import annotations

import numpy as np

from bridge.attachments.queued_source import QueuedSource
from bridge.audio import FRAME_SAMPLES


def test_mark_waits_for_the_partial_frame_and_clear_reports_cleared() -> None:
    acks = []
    src = QueuedSource(on_mark=lambda n, s: acks.append((n, s)))
    src.push(np.ones(FRAME_SAMPLES + 100, dtype=np.int16))  # one frame and a 100-sample tail
    src.mark("m")
    assert acks == [] and src.buffered_ms == 40  # the tail was padded and queued before it
    assert src.next_frame() is not None and acks == []
    tail = src.next_frame()
    assert tail is not None and tail[:100].all() and not tail[100:].any()
    assert acks == [("m", "played")]
    src.push(np.ones(FRAME_SAMPLES * 5, dtype=np.int16))
    src.mark("n")
    assert src.clear() == 5 and acks[-1] == ("n", "cleared")
    src.finished()
    src.mark("late")
    assert acks[-1] == ("late", "cleared")
