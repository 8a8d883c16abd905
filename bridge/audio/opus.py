"""Opus at the bus rate through libopus itself (ctypes): one call per 20 ms frame each way.

PyAV's codec wrapper costs more than the codec on this path: FFmpeg's libopus decoder always
outputs 48 kHz, so every uplink frame then went through libswresample to 16 kHz, and every
frame each way built ``AudioFrame``/``Packet`` objects. libopus decodes straight to 16 kHz
(RFC 6716 §4: a decoder may run at any of the five rates whatever the encoder used) and
encodes from a numpy buffer. Measured per 20 ms frame on the bench machine: encode 105 → 62
µs, decode + resample 78 → 19 µs.

The library is the one PyAV ships in its wheel (so the version is the one the bridge was
tested with), else the system's ``libopus``; FFmpeg's Opus encoder is libopus, so any PyAV
that can encode Opus comes with one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
from collections.abc import Iterable

import numpy as np

from .opus_silence import SILENT_PEAK, DecodedSilence, SilenceCycle
from .pcm import Pcm

APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_SET_FORCE_MODE = 11002
_RESET_STATE = 4028
_AUTO = -1000
_MODE_CELT_ONLY = 1002
_MAX_PACKET = 1500
_MAX_FRAME_MS = 120  # the longest Opus packet (RFC 6716 §3.2.5)


class OpusError(Exception):
    """libopus refused a packet or a setting (its negative error code is ``code``)."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: libopus error {code}")
        self.code = code


def _candidates() -> list[str]:
    paths: list[str] = []
    try:
        import av

        site = os.path.dirname(os.path.dirname(av.__file__))
        paths += sorted(glob.glob(os.path.join(site, "av.libs", "libopus*.so*")))
        paths += sorted(
            glob.glob(os.path.join(os.path.dirname(av.__file__), ".dylibs", "libopus*"))
        )
    except ImportError:  # pragma: no cover - PyAV is a dependency
        pass
    system = ctypes.util.find_library("opus")
    if system:
        paths.append(system)
    return paths


def _load() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int32,
        ]
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
            lib.opus_packet_has_lbrr.restype = ctypes.c_int
            lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
        # opus_encoder_ctl is variadic: no argtypes, every argument passed as an explicit C int.
        lib.opus_encoder_ctl.restype = ctypes.c_int
        return lib
    return None


_LIB = _load()


def _lib() -> ctypes.CDLL:
    if _LIB is None:
        raise OpusError("libopus not found (neither in PyAV's wheel nor on the system)", -1)
    return _LIB


def has_fec(packet: bytes) -> bool:
    """Whether ``packet`` carries in-band FEC (LBRR) data for the frame before it (RFC 6716
    §2.1.7), so a receiver can tell a frame rebuilt from FEC from one merely concealed.
    libopus older than 1.5 cannot say: assume it does."""
    lib = _lib()
    if not packet or not hasattr(lib, "opus_packet_has_lbrr"):
        return bool(packet)
    return bool(lib.opus_packet_has_lbrr(packet, len(packet)) > 0)


class OpusEncoder:
    """Encodes one mono s16 frame at a time (20 ms at ``rate``) into one Opus packet; a run of
    digital silence is sent from its learned cycle of packets (:class:`SilenceCycle`)."""

    def __init__(
        self,
        rate: int,
        *,
        bitrate: int,
        complexity: int,
        fec: bool,
        expected_loss: int,
        dtx: bool,
    ) -> None:
        self._lib = lib = _lib()
        err = ctypes.c_int()
        self._state = lib.opus_encoder_create(rate, 1, APPLICATION_VOIP, ctypes.byref(err))
        if err.value != 0 or not self._state:
            raise OpusError("opus_encoder_create", err.value)
        self.silence = None if dtx else SilenceCycle()
        self._zeros = np.zeros(rate // 50, dtype=np.int16)
        settings = [(_SET_BITRATE, bitrate), (_SET_COMPLEXITY, complexity)]
        settings += [(_SET_INBAND_FEC, int(fec)), (_SET_DTX, int(dtx))]
        if fec:
            settings.append((_SET_PACKET_LOSS_PERC, expected_loss))
        for request, value in settings:
            self._ctl(request, value)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)

    def _ctl(self, request: int, value: int) -> None:
        if self.silence is not None:
            self.silence.forget()  # what a zero frame encodes to may change with it
        code = self._lib.opus_encoder_ctl(
            ctypes.c_void_p(self._state), ctypes.c_int(request), ctypes.c_int(value)
        )
        if code != 0:
            raise OpusError(f"opus_encoder_ctl({request}, {value})", code)

    def set_bitrate(self, bitrate: int) -> None:
        """Change the target bitrate (bit/s) from the next frame on."""
        self._ctl(_SET_BITRATE, bitrate)

    def set_complexity(self, complexity: int) -> None:
        """Change the complexity (0–10) from the next frame on."""
        self._ctl(_SET_COMPLEXITY, complexity)

    def set_celt_only(self, celt: bool) -> None:
        """Code every frame in CELT, the MDCT layer (RFC 6716 §2), or let libopus choose
        (for 16 kHz voice it keeps SILK up to about 64 kbit/s). At 72 kbit/s CELT codes the
        bench's speech better than SILK at 40 kbit/s for a third of the CPU (docs/quality.md),
        but it has no in-band FEC, which only SILK frames carry (RFC 6716 §2.1.7)."""
        self._ctl(_SET_FORCE_MODE, _MODE_CELT_ONLY if celt else _AUTO)

    def reset(self) -> None:
        """Start coding afresh, settings kept (``OPUS_RESET_STATE``): for a stream whose last
        frames were not this encoder's (another leg's packets forwarded), where the state left
        from its own last frame would splice stale audio into the next one."""
        if self.silence is not None:
            self.silence.forget()
        code = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._state), ctypes.c_int(_RESET_STATE))
        if code != 0:
            raise OpusError("opus_encoder_ctl(OPUS_RESET_STATE)", code)

    def set_expected_loss(self, percent: int) -> None:
        """Tell the encoder how much loss to expect (0–100 %): with in-band FEC on, it spends
        that much more on LBRR data (RFC 6716 §2.1.7); 0 turns the FEC data off."""
        self._ctl(_SET_PACKET_LOSS_PERC, max(0, min(100, percent)))

    def encode(self, pcm: Pcm) -> bytes:
        """One frame (a length libopus accepts: 2.5–60 ms) → one packet (may be 1–2 bytes
        under DTX in silence)."""
        silence = self.silence
        if silence is None or pcm.size != self._zeros.size:
            return self._encode(pcm)
        if int(pcm.max()) > SILENT_PEAK or int(pcm.min()) < -SILENT_PEAK:
            silence.forget()
            return self._encode(pcm)
        packet = silence.next()
        if packet is None:
            packet = silence.encoded(self._encode(self._zeros))
        return packet

    @property
    def settled_silence(self) -> bool:
        """The last frame was digital silence sent from the learnt cycle: the far decoder has
        decoded eight frames of it at least, and plays silence."""
        return self.silence is not None and self.silence.cycle is not None

    def _encode(self, pcm: Pcm) -> bytes:
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        n = self._lib.opus_encode(self._state, pcm.ctypes.data, pcm.size, self._out, _MAX_PACKET)
        if n < 0:
            raise OpusError("opus_encode", n)
        return self._out.raw[:n]

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_encoder_destroy(state)


WARM_PACKETS = 10
"""Packets (200 ms) a decoder that skipped a stream's packets is given again before it decodes
the next (:meth:`OpusDecoder.warm`), so its SILK and CELT state (RFC 6716 §4.2, §4.3: the
predicted energies and filters) is the sender's and the first frame decoded has no seam: with
none, a tone's first 40 ms come out at 0.1–0.3 of its level in 5 ms blocks; with three, CELT's
at 0.7–0.9; with ten, at its level (``tests/unit/test_uplink.py``). 200 µs once, at resume."""


class OpusDecoder:
    """Decodes Opus packets (any rate or channel count the sender chose) to mono s16 at
    ``rate``."""

    rtp_clock = 48_000
    """Opus always uses a 48 kHz RTP clock, whatever the audio bandwidth (RFC 7587 §4.1)."""

    def __init__(self, rate: int) -> None:
        self._lib = lib = _lib()
        err = ctypes.c_int()
        self._state = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if err.value != 0 or not self._state:
            raise OpusError("opus_decoder_create", err.value)
        self._max = rate * _MAX_FRAME_MS // 1000
        self._buf = np.empty(self._max, dtype=np.int16)
        self._buf_at = self._buf.ctypes.data  # the address, read once (numpy builds it anew)
        self.silence: DecodedSilence | None = DecodedSilence()
        """``None``: decode every packet."""

    def decode(self, packet: bytes) -> Pcm:
        """The packet's samples (a copy: the decoder reuses its buffer); raises
        :class:`OpusError` on a corrupt packet. A run of silent packets is played from
        its learned outputs (:class:`DecodedSilence`)."""
        silence = self.silence
        if silence is None:
            return self._run(packet, self._max, 0)
        if silence.cycle is not None:
            pcm = silence.lookup(packet)
            if pcm is not None:
                return pcm
            self._catch_up(silence)
        pcm = self._run(packet, self._max, 0)
        silence.decoded(packet, pcm)
        return pcm

    def _catch_up(self, silence: DecodedSilence) -> None:
        for skipped in silence.catch_up():
            self._run(skipped, self._max, 0)

    def _leave_silence(self) -> None:
        """Before a concealment or an FEC decode: the decoder as if it had decoded every packet,
        and the run forgotten, learnt or still being learnt (a gap breaks it)."""
        silence = self.silence
        if silence is not None:
            self._catch_up(silence)
            silence.forget()

    def warm(self, packets: Iterable[bytes]) -> None:
        """Decode, and drop, the packets a stream went without decoding just before it is
        decoded again (an idle playout, ``rtc/uplink.py``): the decoder takes up the sender's
        state, so what it decodes next carries on with no seam. A corrupt one is passed over."""
        self._leave_silence()
        for packet in packets:
            with contextlib.suppress(OpusError):
                self._run(packet, self._max, 0)

    @staticmethod
    def has_fec(packet: bytes) -> bool:
        """Whether ``packet`` carries in-band FEC (see :func:`has_fec`)."""
        return has_fec(packet)

    @staticmethod
    def energy(packet: bytes) -> None:
        """A frame's energy is known only by decoding it (``FrameDecoder.energy``)."""
        return None

    def decode_fec(self, packet: bytes, samples: int) -> Pcm:
        """The *previous* frame, ``samples`` long, rebuilt from the in-band FEC (LBRR) data
        that ``packet`` carries (RFC 6716 §2.1.7; ``opus_decode`` with ``decode_fec=1``).
        Where ``packet`` has no FEC data, libopus conceals instead, so the result is always
        ``samples`` long."""
        self._leave_silence()
        return self._run(packet, samples, 1)

    def conceal(self, samples: int) -> Pcm:
        """``samples`` of packet-loss concealment (``opus_decode`` with no packet): the
        decoder extrapolates from what it decoded last, fading towards silence."""
        self._leave_silence()
        return self._run(None, samples, 0)

    def _run(self, packet: bytes | None, samples: int, fec: int) -> Pcm:
        size = len(packet) if packet else 0
        samples = min(samples, self._max)
        n = self._lib.opus_decode(self._state, packet, size, self._buf_at, samples, fec)
        if n < 0:
            raise OpusError("opus_decode", n)
        return self._buf[:n].copy()

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_decoder_destroy(state)
