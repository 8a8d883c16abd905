"""Kamailio (Debian's ``kamailio``) as the PBX's proxy and registrar on loopback (UDP and TCP,
and TLS with the ``kamailio-tls-modules`` package when given a certificate): phones
and the bridge REGISTER with a digest (``pv_www_authenticate`` against one password per user),
an INVITE to a registered user is relayed to its Contact with Record-Route, OPTIONS are
answered. Started in the foreground (``-DD -E``), stopped by its pid; started once it answers an
OPTIONS on its UDP port."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

from .ports import free_port
from .processes import stop_process
from .waits import until

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
{tls_listen}alias="127.0.0.1:{port}"
mpath="{modules}"
{tls_module}
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
modparam("registrar", "max_expires", {max_expires})
modparam("registrar", "min_expires", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route() || is_method("ACK")) {{ t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$td", "{password}", "0")) {{
            www_challenge("$td", "0"); exit;
        }}
        if (!save("location")) sl_reply_error();
        xlog("L_NOTICE", "REGISTERED $tU from $si:$sp over $pr\\n");
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
        xlog("L_NOTICE", "RELAY INVITE $rU to $ru\\n");
        t_relay(); exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


TLS_CONFIG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""
"""Kamailio's TLS module (Debian ``kamailio-tls-modules``): our certificate, no client's asked."""


def missing() -> str:
    return "" if shutil.which("kamailio") else "kamailio is not installed (make system-deps)"


class Kamailio:
    """One Kamailio on ``127.0.0.1:<port>``, every user's password the same."""

    def __init__(
        self, directory: Path, password: str, max_expires: int = 3600, tls: Any = None
    ) -> None:
        self.dir = directory
        self.password = password
        self.port = free_port()
        self.tls = tls
        """A ``CertPair`` (``support/tls.py``): also listen on TLS (its own port), with it."""
        self.tls_port = free_port() if tls is not None else 0
        self.max_expires = max_expires
        self.proc: asyncio.subprocess.Process | None = None
        self.log = directory / "kamailio.log"

    async def start(self) -> None:
        cfg = self.dir / "kamailio.cfg"
        tls_listen = tls_module = ""
        if self.tls is not None:
            tls_cfg = self.dir / "tls.cfg"
            tls_cfg.write_text(TLS_CONFIG.format(cert=self.tls.cert, key=self.tls.key))
            tls_listen = f"enable_tls=yes\nlisten=tls:127.0.0.1:{self.tls_port}\n"
            tls_module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")'
        cfg.write_text(
            CONFIG.format(
                tls_listen=tls_listen,
                tls_module=tls_module,
                port=self.port,
                modules=MODULES,
                password=self.password,
                max_expires=self.max_expires,
            )
        )
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                "kamailio",
                "-f",
                str(cfg),
                "-DD",
                "-E",
                "-m",
                "32",
                "-M",
                "8",
                "-P",
                str(self.dir / "kamailio.pid"),
                "-Y",
                str(self.dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            await self._answering()
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.logged()[-2000:]}") from None
        if self.ended():
            raise AssertionError(f"kamailio did not start:\n{self.logged()[-2000:]}")
        if self.tls is not None:  # its TLS listener opens after the first log lines
            await until(self._tls_open, 5, "kamailio's TLS listener")

    async def _answering(self) -> None:
        """Until Kamailio answers an OPTIONS on its UDP port, or exits. Not its first log
        lines: those come before it has read its modules and bound its sockets, and a phone's
        REGISTER sent then is refused by the kernel (ICMP port unreachable): Twinkle tries
        again only 30 s later."""
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Answers(answered), local_addr=("127.0.0.1", 0)
        )
        options = options_request(self.port, transport.get_extra_info("sockname")[1])

        async def asked() -> bool:
            transport.sendto(options, ("127.0.0.1", self.port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), 0.1)
            return answered.is_set() or self.ended()

        try:
            await until(asked, 10, "kamailio answering OPTIONS")
        finally:
            transport.close()

    async def _tls_open(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.tls_port)
        except OSError:
            return False
        writer.close()
        return True

    def ended(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    def logged(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> None:
        await stop_process(self.proc)


class _Answers(asyncio.DatagramProtocol):
    """Sets ``answered`` on a ``200`` (Kamailio's answer to :func:`options_request`)."""

    def __init__(self, answered: asyncio.Event) -> None:
        self.answered = answered

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data.startswith(b"SIP/2.0 200 "):
            self.answered.set()


def options_request(port: int, ours: int) -> bytes:
    """An OPTIONS to Kamailio on ``port`` from ``127.0.0.1:ours`` (answered ``200``: CONFIG)."""
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{ours};branch=z9hG4bK-ready-{ours};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:ready@127.0.0.1>;tag=ready\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: ready-{ours}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
