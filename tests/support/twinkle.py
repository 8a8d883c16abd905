"""Twinkle (Debian's ``twinkle-console``, 1.10) as a second phone behind a PBX: SIP over UDP on
loopback, G.711, registered at a registrar with a digest, answering by itself (its ``auto_answer``
service).

Twinkle speaks only ALSA (or OSS), and the machine has no sound card, so its devices are ALSA's
own plugins, named in an ``.asoundrc`` under the ``HOME`` it is given:

* the speaker is the ``file`` plugin over ``null``: what Twinkle plays — the audio it decoded —
  is written raw (s16le mono at the codec's 8 kHz) to ``heard.raw``;
* the microphone is the ``file`` plugin's ``infile``, a FIFO this class keeps fed with a tone at
  the real-time rate. ``null`` has no clock, so the FIFO is what paces Twinkle's capture: its
  read blocks until the next 20 ms are written (a regular file would be read as fast as the
  disk allows, and Twinkle would drop what runs ahead of its RTP clock).

Twinkle reads its user profile ``<name>.cfg``, its services ``<name>.svc`` and its system
settings ``twinkle.sys`` from ``$HOME/.twinkle``; commands (``dtmf 5``, ``quit``) go to its
stdin and what it reports (``DTMF detected: 7``) comes on its stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .ports import free_port, free_ports
from .processes import stop_process
from .waits import until

RATE = 8000
"""G.711's rate: what Twinkle's devices are opened at for a G.711 call."""


def missing() -> str:
    return "" if shutil.which("twinkle-console") else "twinkle-console is not installed"


class Twinkle:
    """One ``twinkle-console`` registered as ``sip:<user>@<registrar>``, its voice a tone."""

    def __init__(self, directory: Path, user: str, tone_hz: int, password: str) -> None:
        self.dir = directory
        self.user = user
        self.tone_hz = tone_hz
        self.password = password
        self.home = directory / "home"
        self.heard_path = directory / "heard.raw"
        self.fifo = directory / "mic.fifo"
        self.sip_port = free_port()
        # Twinkle's lines take RTP ports upward from an even one, each with its RTCP port.
        first = free_ports(6)
        self.rtp_port = first + first % 2
        self.proc: asyncio.subprocess.Process | None = None
        self._mic: asyncio.Task[None] | None = None
        self._fd = -1

    def _configure(self, registrar: str) -> None:
        conf = self.home / ".twinkle"
        conf.mkdir(parents=True)
        (self.home / ".asoundrc").write_text(
            f'pcm.twspeaker {{ type file slave.pcm "null" file "{self.heard_path}"'
            ' format "raw" }\n'
            f'pcm.twmic {{ type file slave.pcm "null" file "/dev/null" infile "{self.fifo}"'
            ' format "raw" }\n'
            "pcm.twring { type null }\n"
        )
        (conf / "twinkle.sys").write_text(
            "dev_ringtone=alsa:twring\n"
            "dev_speaker=alsa:twspeaker\n"
            "dev_mic=alsa:twmic\n"
            "validate_audio_dev=no\n"
            f"sip_udp_port={self.sip_port}\n"
            f"rtp_port={self.rtp_port}\n"
            "play_ringtone=no\nplay_ringback=no\n"
            "log_show_sip=yes\n"
        )
        (conf / "phone.cfg").write_text(
            f"user_name={self.user}\n"
            "user_domain=127.0.0.1\n"
            f"auth_name={self.user}\n"
            f"auth_pass={self.password}\n"
            f"registrar={registrar}\n"
            "register_at_startup=yes\n"
            "registration_time=60\n"
            "codecs=g711u,g711a\n"
            "ptime=20\n"
            "dtmf_transport=rfc2833\n"
            # Its presence is published at startup by default, to the user's domain at the
            # SIP port 5060: a port in the tests' range (ports.py), which another test's
            # Kamailio, SIPp or bridge may have been given.
            "pres_publish_startup=no\n"
            # Its microphone's speex preprocessing is on by default: noise reduction takes a
            # steady tone for noise and fades it out within a second, the AGC pulls it to
            # −24 dBFS and the VAD may cut it. A test tone goes out as it is.
            "speex_dsp_vad=no\nspeex_dsp_agc=no\nspeex_dsp_nrd=no\nspeex_dsp_aec=no\n"
        )
        (conf / "phone.svc").write_text("auto_answer=yes\n")

    async def start(self, registrar: str) -> None:
        """Start Twinkle registering at ``registrar`` (``host:port``) and feed its microphone."""
        self._configure(registrar)
        os.mkfifo(self.fifo)
        # Opened read-write, so neither this open nor ALSA's read-only one waits for the other.
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        self._mic = asyncio.ensure_future(self._feed())
        with (self.dir / "twinkle.out").open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                "twinkle-console",
                "phone.cfg",
                cwd=self.dir,
                env={**os.environ, "HOME": str(self.home)},
                stdin=asyncio.subprocess.PIPE,
                stdout=out,
                stderr=out,
            )
        await until(
            lambda: "registration succeeded" in self.output() or self.ended(), 10, "twinkle"
        )
        if self.ended():
            raise AssertionError(f"twinkle did not register:\n{self.output()[-2000:]}")

    async def _feed(self) -> None:
        """The tone into the FIFO at the real-time rate, 20 ms at a time (dropped while the
        pipe is full: before a call nobody reads it)."""
        step = RATE // 50
        start, sent = time.monotonic(), 0
        amplitude = 0.5 * 32767
        while True:
            due = int((time.monotonic() - start) * RATE)
            while sent + step <= due:
                t = (np.arange(step) + sent) / RATE
                chunk = np.rint(amplitude * np.sin(2 * np.pi * self.tone_hz * t)).astype("<i2")
                with contextlib.suppress(BlockingIOError):
                    os.write(self._fd, chunk.tobytes())
                sent += step
            await asyncio.sleep(0.01)

    async def command(self, line: str) -> None:
        """One line of Twinkle's command language (``dtmf 5``, ``bye``) on its stdin."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def output(self) -> str:
        path = self.dir / "twinkle.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        """Twinkle's own log: its SIP messages among them."""
        path = self.home / ".twinkle" / "twinkle.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ended(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def heard_bytes(self) -> int:
        return self.heard_path.stat().st_size if self.heard_path.exists() else 0

    def heard(self, seconds: float) -> tuple[np.ndarray, int]:
        """The last ``seconds`` of what Twinkle played (decoded from the call)."""
        raw = self.heard_path.read_bytes()
        pcm = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
        return pcm[-int(RATE * seconds) :].astype(np.float64), RATE

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None and self.proc.stdin:
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 3)
        await stop_process(self.proc)
        if self._mic is not None:
            self._mic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mic
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
