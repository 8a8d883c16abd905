"""SIPp (Debian's ``sip-tester``) playing Meta's SIP side, over TLS.

Debian builds SIPp without TLS (its ``-t`` takes UDP, TCP and SCTP only), so the tests put a
TLS hop in front of its TCP, made by ``socat`` (OpenSSL) — a stack nobody here wrote either:

* Meta → bridge: SIPp (TCP client) → ``socat TCP-LISTEN … OPENSSL:`` (TLS client, verifies
  the bridge's certificate against the test CA and its name) → the bridge's TLS listener;
* bridge → Meta: the bridge's TLS client → ``socat OPENSSL-LISTEN …`` (TLS server with the
  fake Meta's certificate) → SIPp's TCP listener.

Every process is started here on 127.0.0.1 in a session of its own and stopped by its process
group (socat forks one child per connection).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from pathlib import Path

from .ports import free_port, free_ports, held
from .tls import CertPair, TestCA
from .waits import until, wait_port

SCENARIOS = Path(__file__).resolve().parents[1] / "sip" / "scenarios"


def tools_missing() -> str:
    """Why the SIPp tests cannot run here ('' when they can)."""
    missing = [t for t in ("sipp", "socat") if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (Debian sip-tester, socat)" if missing else ""


async def _spawn(*args: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


async def stop_group(proc: asyncio.subprocess.Process | None) -> None:
    """Stop a process this module started and the children in its session, by its pid."""
    if proc is None or proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


class TlsHops:
    """The two socat hops (see the module docstring) for one SIPp."""

    def __init__(self, ca: TestCA, meta: CertPair, directory: Path) -> None:
        self.ca, self.meta, self.dir = ca, meta, directory
        self.to_bridge = free_port()
        """SIPp sends here (TCP); it reaches the bridge over TLS."""
        self.from_bridge = free_port()
        """The bridge's TLS connections to 'Meta' arrive here; they reach SIPp's TCP port."""
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, bridge_port: int, sipp_port: int) -> None:
        log = self.dir / "socat.log"
        self.procs.append(
            await _spawn(
                "socat",
                f"TCP-LISTEN:{self.to_bridge},bind=127.0.0.1,reuseaddr,fork",
                f"OPENSSL:127.0.0.1:{bridge_port},cafile={self.ca.path},verify=1,"
                "commonname=localhost",
                log=log,
            )
        )
        self.procs.append(
            await _spawn(
                "socat",
                f"OPENSSL-LISTEN:{self.from_bridge},bind=127.0.0.1,reuseaddr,fork,"
                f"cert={self.meta.cert},key={self.meta.key},verify=0",
                f"TCP:127.0.0.1:{sipp_port}",
                log=log,
            )
        )
        await wait_port(self.to_bridge)
        await wait_port(self.from_bridge)

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            await stop_group(proc)
        self.procs.clear()


class Sipp:
    """One SIPp run of a scenario from ``tests/sip/scenarios`` (see :meth:`start`)."""

    def __init__(self, directory: Path, scenario: str, subst: dict[str, str] | None = None) -> None:
        """``subst``: ``@NAME@`` placeholders written into a copy of the scenario (what SIPp
        reads at load time, such as a response code, cannot be a ``-key``)."""
        self.dir = directory
        self.scenario = SCENARIOS / scenario
        if subst:
            text = self.scenario.read_text()
            for name, value in subst.items():
                text = text.replace(f"@{name}@", value)
            self.scenario = directory / scenario
            self.scenario.write_text(text)
        self.port = free_port()
        self.log = directory / f"{scenario}.log"
        self.errors = directory / f"{scenario}.err"
        self.messages = directory / f"{scenario}.msg"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(
        self,
        *,
        remote: int | None,
        keys: dict[str, str],
        pause_ms: int = 0,
        server: bool = False,
        transport: str = "t1",
        calls: int = 1,
        extra: tuple[str, ...] = (),
    ) -> None:
        """``remote``: the port SIPp sends to (as UAC); ``server``: SIPp waits for an INVITE;
        ``transport``: ``t1`` (TCP, behind the TLS hop), ``tn`` (a TCP connection per call,
        so a TLS handshake per call) or ``u1`` (UDP, a trunk's); ``calls``: how many runs of
        the scenario before SIPp exits."""
        args = ["sipp", "-sf", str(self.scenario), "-t", transport, "-i", "127.0.0.1"]
        args += ["-p", str(self.port), "-m", str(calls), "-nostdin", "-timeout", "30s"]
        # Its media ports (RTP echo and RTP, 2 above) and its control port from our leases:
        # left alone, SIPp takes 6000/6002 and 8888, and the next ones up if they are taken,
        # ports other tests' processes were given (ports.py).
        args += ["-mp", str(free_ports(3)), "-cp", str(free_port())]
        args += ["-cid_str", "outgoing:wacid.%u-%p@%s"]  # Meta's Call-IDs start so
        args += ["-trace_logs", "-log_file", str(self.log), "-trace_err"]
        args += ["-error_file", str(self.errors), "-trace_msg", "-message_file", str(self.messages)]
        if pause_ms:
            args += ["-d", str(pause_ms)]
        args += list(extra)
        for key, value in keys.items():
            if key == "username":
                args += ["-au", value]  # [authentication] takes its credentials from -au/-ap
            elif key == "password":
                args += ["-ap", value]
            else:
                args += ["-key", key, value]
        if not server:
            args.append(f"127.0.0.1:{remote}")
        self.proc = await _spawn(*args, log=self.dir / "sipp.out")
        if server and transport == "u1":
            proc = self.proc

            def bound() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"SIPp ended ({proc.returncode}): {self.report()}")
                return held(self.port)

            await until(bound, 10, "SIPp's UDP port")
        elif server:
            await wait_port(self.port)

    def logged(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of ``pattern`` in SIPp's log (its ``<log>`` actions)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            m = re.search(pattern, self.logged(), re.S)
            if m:
                return m
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"SIPp ended ({self.proc.returncode}): {self.report()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"SIPp never logged {pattern!r}: {self.report()}")
            await asyncio.sleep(0.02)

    async def finish(self, timeout: float = 15.0) -> int:
        """Wait for SIPp's exit; its code (0: the call passed the whole scenario)."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await stop_group(self.proc)
            raise AssertionError(f"SIPp did not finish: {self.report()}") from None

    def report(self) -> str:
        err = self.errors.read_text(errors="replace")[-1500:] if self.errors.exists() else ""
        msgs = self.messages.read_text(errors="replace")[-3000:] if self.messages.exists() else ""
        return f"\n--- errors:\n{err}\n--- messages:\n{msgs}"

    def sent_and_received(self) -> str:
        return self.messages.read_text(errors="replace") if self.messages.exists() else ""

    async def stop(self) -> None:
        await stop_group(self.proc)
