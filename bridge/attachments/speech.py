"""Speech activity: who is talking on a call, as ``call.speech.started`` / ``.stopped`` events
(per side: ``whatsapp``, the WhatsApp user on the downlink; ``agent``, what the call sends
them on the uplink) and in the call's snapshot (``speaking``). Off unless
``BRIDGE_SPEECH_EVENTS`` is on.

Two stages, per side, on the bus's 20 ms frames:

1. Google's WebRTC VAD (``webrtcvad``, aggressiveness 3): a few microseconds a frame, it
   rules out silence. Alone it cannot tell speech from music or steady noise (it calls both
   speech: see bench/vad.py), so
2. Silero VAD (its ONNX model as pipecat-ai ships it, run by onnxruntime on one thread)
   scores each 32 ms window the first stage let through; it stays near zero on music and noise.

Hysteresis makes events of the scores (Silero's own recipe): speech starts after
``ONSET_WINDOWS`` windows at or above ``START_AT``; it stops only after ``HANGOVER_MS`` below
``STOP_AT``, so the pause between words is not a stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..audio.pcm import Pcm
from ..media import BusFrame
from .base import AttachmentHost

log = logging.getLogger(__name__)

RATE = 16_000
WINDOW = 512
"""Samples Silero scores at a time at 16 kHz (32 ms)."""
CONTEXT = 64
"""Samples of the previous window Silero's model takes in front of each window."""
START_AT, STOP_AT = 0.5, 0.35
ONSET_WINDOWS = 5
"""Windows in a row at or above ``START_AT`` that make a start (160 ms: a click, or a brief
speech-like moment in music, is not; bench/vad.py sweeps it over music at every alignment)."""
HANGOVER_MS = 600
"""Silence that ends speech: longer than the pauses between words and phrases."""
RESET_AFTER = 10
"""Windows of silence (320 ms) after which the model starts afresh."""
SIDES = {"whatsapp": "down", "agent": "up"}
_warned = False


class VadUnavailable(RuntimeError):
    """The VAD packages are not installed (the ``vad`` extra)."""


class SileroModel:
    """The Silero VAD model, loaded once per process; each stream keeps its own state."""

    _shared: SileroModel | None = None

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
            import pipecat.audio.vad.data as model_data
        except ImportError as exc:
            raise VadUnavailable(f"speech events need the 'vad' extra ({exc.name})") from None
        path = os.path.join(os.path.dirname(model_data.__file__), "silero_vad.onnx")
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1  # never more than the event loop's own thread
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(RATE, dtype=np.int64)

    @classmethod
    def shared(cls) -> SileroModel:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def score(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one ``CONTEXT + WINDOW`` float32 window; the new state."""
        prob, state = self._session.run(
            None, {"input": window[None, :], "state": state, "sr": self._sr}
        )
        return float(prob[0][0]), state


class SpeechDetector:
    """One side's speech: feed 20 ms frames; ``speaking`` flips with hysteresis."""

    def __init__(self, model: SileroModel | None = None) -> None:
        try:
            import webrtcvad
        except ImportError:
            raise VadUnavailable("speech events need the 'vad' extra (webrtcvad)") from None
        self._gate = webrtcvad.Vad(3)
        self._model = model or SileroModel.shared()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._buf = np.zeros(CONTEXT + WINDOW, dtype=np.float32)
        self._fill = CONTEXT
        self._voiced = False
        """Whether the first stage heard something in the window being filled."""
        self._above = 0
        self._quiet_ms = 0
        self._silent_windows = 0
        self.speaking = False

    def feed(self, pcm: Pcm) -> bool | None:
        """One frame (s16, 16 kHz, 10/20/30 ms); ``True`` when speech starts, ``False`` when
        it stops, ``None`` otherwise."""
        self._voiced |= self._gate.is_speech(pcm.astype("<i2", copy=False).tobytes(), RATE)
        samples = pcm.astype(np.float32) / 32768.0
        change: bool | None = None
        while samples.size:
            take = min(samples.size, self._buf.size - self._fill)
            self._buf[self._fill : self._fill + take] = samples[:take]
            self._fill += take
            samples = samples[take:]
            if self._fill == self._buf.size:
                change = self._window() if change is None else change
        return change

    def _window(self) -> bool | None:
        if self._voiced:
            prob, self._state = self._model.score(self._buf, self._state)
            self._silent_windows = 0
        else:
            prob = 0.0  # silence: the model need not run
            self._silent_windows += 1
            if self._silent_windows == RESET_AFTER:
                # The model's memory is of what came before the silence: speech left in it
                # would colour what comes after (music after a sentence scores as speech).
                self._state[:] = 0
        self._buf[:CONTEXT] = self._buf[-CONTEXT:]
        self._fill = CONTEXT
        self._voiced = False
        window_ms = WINDOW * 1000 // RATE
        if not self.speaking:
            self._above = self._above + 1 if prob >= START_AT else 0
            if self._above >= ONSET_WINDOWS:
                self.speaking, self._quiet_ms = True, 0
                return True
            return None
        self._quiet_ms = self._quiet_ms + window_ms if prob < STOP_AT else 0
        if self._quiet_ms >= HANGOVER_MS:
            self.speaking, self._above = False, 0
            return False
        return None


class SpeechActivity:
    """The speech taps of one call: an attachment of its runtime (kind ``speech``)."""

    kind = "speech"
    wants_media = False  # it listens to what flows; it never opens the engine media for it

    def __init__(
        self,
        host: AttachmentHost,
        on_change: Callable[[dict[str, bool]], None] | None = None,
    ) -> None:
        self.id = f"speech:{host.call_id}"
        self.host = host
        self.bus = host.bus
        self._on_change = on_change
        self.detectors = {side: SpeechDetector() for side in SIDES}
        self._taps = {side: self._tap(side) for side in SIDES}
        self.bus.add_downlink_tap(self._taps["whatsapp"])
        self.bus.add_uplink_tap(self._taps["agent"])
        self._closed = False

    @property
    def speaking(self) -> dict[str, bool]:
        return {side: d.speaking for side, d in self.detectors.items()}

    def _tap(self, side: str) -> Callable[[BusFrame], None]:
        detector = self.detectors[side]

        def tap(frame: BusFrame) -> None:
            change = detector.feed(frame.pcm)
            if change is not None:
                self._changed(side, change)

        return tap

    def _changed(self, side: str, speaking: bool) -> None:
        if self._on_change is not None:
            self._on_change(self.speaking)  # the snapshot in the event says who talks now
        self.host.emit("call.speech.started" if speaking else "call.speech.stopped", side=side)

    def call_state(self, state: str, end_reason: str | None) -> None:
        pass

    async def close(self) -> Any:
        if self._closed:
            return
        self._closed = True
        self.bus.remove_downlink_tap(self._taps["whatsapp"])
        self.bus.remove_uplink_tap(self._taps["agent"])
        for detector in self.detectors.values():
            detector.speaking = False  # the call ended: nobody talks (no event: it ended)
        if self._on_change is not None:
            self._on_change(self.speaking)
        self.host.detach(self)


def start_speech_activity(
    host: AttachmentHost, on_change: Callable[[dict[str, bool]], None] | None = None
) -> SpeechActivity | None:
    """Attach speech activity to a call; ``None`` (logged once) when the VAD is missing."""
    global _warned
    try:
        activity = SpeechActivity(host, on_change)
    except VadUnavailable as exc:
        if not _warned:
            log.warning("speech events are on but unavailable: %s", exc)
            _warned = True
        return None
    host.attach(activity)
    if on_change is not None:
        on_change(activity.speaking)  # nobody yet
    return activity
