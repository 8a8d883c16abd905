"""baresip (Debian's ``baresip``, 1.0) as a SIP/TLS + SDES-SRTP + Opus peer on loopback, driven
through its ``ctrl_tcp`` command socket (netstring-framed JSON: ``dial``, ``hangup``,
``sndcode``), its voice a tone from ``ausine``, what it decodes dumped by its ``sndfile``
filter (read while the call runs: libsndfile writes each frame as it comes, only the WAV
header's sizes wait for the close, so the data chunk is read up to the end of the file)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .ports import free_port, free_ports
from .processes import stop_process
from .tls import TestCA
from .waits import until

MODULES = "/usr/lib/baresip/modules"


class Baresip:
    """One baresip process with one account ``sip:<user>@127.0.0.1;transport=tls``."""

    def __init__(self, conf: Path, user: str, tone_hz: int = 660) -> None:
        self.conf = conf
        self.user = user
        self.tone_hz = tone_hz
        self._new_ports()
        self._account_params = ""
        self._ca_path = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._ctrl: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.events: list[dict[str, object]] = []
        """Replies to our commands and baresip's call events, as they came."""
        self._reader: asyncio.Task[None] | None = None

    async def start(self, ca: TestCA, account_params: str = "") -> None:
        conf = self.conf
        self._account_params = account_params
        self._ca_path = ca.path
        pair = ca.issue("baresip", "127.0.0.1")
        (conf / "cert.pem").write_text(Path(pair.cert).read_text() + Path(pair.key).read_text())
        await self._launch(self._write_config)

    def _write_config(self) -> None:
        conf = self.conf
        (conf / "config").write_text(
            f"sip_listen 127.0.0.1:{self.port}\n"
            f"sip_certificate {conf}/cert.pem\n"
            f"sip_cafile {self._ca_path}\n"
            "net_interface 127.0.0.1\n"
            f"module_path {MODULES}\n"
            "module opus.so\nmodule srtp.so\nmodule ausine.so\nmodule aufile.so\n"
            f"module sndfile.so\nsnd_path {conf}\n"
            "module_app account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
            f"audio_source ausine,{self.tone_hz}\n"
            "audio_alert aufile,/dev/null\n"
        )
        (conf / "accounts").write_text(
            f"<sip:{self.user}@127.0.0.1;transport=tls>;regint=0;answermode=auto;"
            f"mediaenc=srtp-mand;audio_codecs=opus/48000/2{self._account_params}\n"
        )

    def _new_ports(self) -> None:
        """Fresh ports: the SIP port and the one after it (its TLS listener), the control port."""
        self.port = free_ports(2)
        self.tls_port = self.port + 1
        self.ctrl_port = free_port()

    async def _launch(self, write_config: Callable[[], None]) -> None:
        """Write the config and start baresip on it, then wait for it to say it is ready: up to
        20 s (a starved 2-core CI host took more than 5), at once a failure with its log if it
        exits first. A port taken between our probe and its bind (another process on the busy
        host: CI met it once) is not the test's failure: new ports, up to three launches."""
        for attempt in range(3):
            write_config()
            try:
                await self._launch_once()
                return
            except AssertionError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self._new_ports()

    async def _launch_once(self) -> None:
        with (self.conf / "baresip.log").open("wb") as log:  # -s: its SIP trace, for a failure
            self.proc = await asyncio.create_subprocess_exec(
                "baresip",
                "-s",
                "-f",
                str(self.conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        proc = self.proc

        def ready() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"baresip exited ({proc.returncode})")
            return "baresip is ready" in self.log()

        try:
            await until(ready, 20, "baresip ready")
        except AssertionError as exc:  # its log, once, whether it exited or never got ready
            raise AssertionError(f"{exc}:\n{self.log()[-2000:]}") from None
        self._ctrl = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
        self._reader = asyncio.ensure_future(self._read())

    def log(self) -> str:
        return (self.conf / "baresip.log").read_text(errors="replace")

    async def _read(self) -> None:
        """Keep its replies and events (netstrings: ``<length>:<json>,``)."""
        assert self._ctrl is not None
        reader = self._ctrl[0]
        try:
            while True:
                size = int((await reader.readuntil(b":"))[:-1])
                self.events.append(json.loads((await reader.readexactly(size + 1))[:-1]))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return

    async def command(self, command: str, params: str = "") -> None:
        """Run one command (``dial``, ``hangup``, ``sndcode`` …) through ``ctrl_tcp``."""
        assert self._ctrl is not None
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._ctrl[1].write(b"%d:%s," % (len(body), body))
        await self._ctrl[1].drain()

    def dump_bytes(self) -> int:
        """Bytes of decoded audio in baresip's dump so far (0 before it opens one)."""
        paths = list(self.conf.glob("dump-*-dec.wav"))
        return paths[0].stat().st_size if paths else 0

    def heard(self, seconds: float) -> tuple[np.ndarray, int]:
        """The last ``seconds`` of what baresip decoded (its ``sndfile`` dump), channel 0."""
        path = next(self.conf.glob("dump-*-dec.wav"))
        raw = path.read_bytes()
        fmt = raw.index(b"fmt ") + 8
        channels = int.from_bytes(raw[fmt + 2 : fmt + 4], "little")
        rate = int.from_bytes(raw[fmt + 4 : fmt + 8], "little")
        data = raw[raw.index(b"data") + 8 :]
        frames = len(data) // (2 * channels)
        pcm = np.frombuffer(data[: frames * 2 * channels], dtype="<i2").reshape(-1, channels)
        return pcm[-int(rate * seconds) :, 0].astype(np.float64), rate

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ctrl is not None:
            self._ctrl[1].close()
        await stop_process(self.proc)
