"""An encrypted private key on Meta's SIP road (``BRIDGE_SIP_KEY`` with a passphrase): opened
with ``BRIDGE_SIP_KEY_PASSWORD``, reloaded with it, and without it a start that stops with one
line naming the file and the setting — never OpenSSL's prompt on the terminal, which held a
start from a terminal (and a supervisor's, where nobody types) for good."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import ssl
import sys
import termios
from pathlib import Path

from bridge.api.keys import ENGINE
from bridge.sip import transport as sip_transport

from ..support.ports import free_port
from ..support.processes import ROOT, stop_process
from ..support.tls import TestCA, encrypted, peer_names
from ..support.waits import until
from .conftest import NUMBER

PASSPHRASE = "open sesame"


def _from_a_terminal() -> None:
    """In the child: its own session, with its stdin (a pty) as its controlling terminal,
    as a bridge started from a shell has: OpenSSL's prompt reads ``/dev/tty``."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_an_encrypted_key_without_its_passphrase_stops_the_start_never_prompts(
    tmp_path: Path,
) -> None:
    pair = TestCA(tmp_path).issue("bridge", "localhost")
    key = encrypted(pair.key, tmp_path / "locked.key", PASSPHRASE)
    env = {
        **os.environ,
        "BRIDGE_DATA_DIR": str(tmp_path),
        "BRIDGE_LOG_LEVEL": "error",
        "BRIDGE_ENGINE": "cloudapi",
        "BRIDGE_CLOUDAPI_SIGNALLING": "sip",
        "BRIDGE_SIP_HOSTNAME": "localhost",
        "BRIDGE_SIP_NUMBER": NUMBER,
        "BRIDGE_SIP_CERT": str(pair.cert),
        "BRIDGE_SIP_KEY": str(key),
        "BRIDGE_SIP_LISTEN": "127.0.0.1:0",
    }
    env.pop("BRIDGE_SIP_KEY_PASSWORD", None)
    terminal, tty = os.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "--port", str(free_port())),
        env=env,
        cwd=ROOT,
        stdin=tty,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_from_a_terminal,
    )
    os.close(tty)
    try:
        # A bound against the hang it was (OpenSSL waiting on the terminal for a typist).
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await stop_process(proc, grace=1.0)
        os.set_blocking(terminal, False)
        try:
            shown = os.read(terminal, 4096)
        except OSError:  # nothing written (EAGAIN), or the terminal gone with it (EIO)
            shown = b""
        os.close(terminal)
    assert b"pass phrase" not in shown.lower(), shown
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1 and "BRIDGE_SIP_KEY_PASSWORD" in lines[0], lines
    assert str(key) in lines[0] and "is not set" in lines[0], lines


async def test_an_encrypted_key_opens_with_its_passphrase_and_reloads_with_it(
    make_client, tmp_path: Path, monkeypatch
) -> None:
    """The listener serves the certificate of an encrypted key opened with
    ``BRIDGE_SIP_KEY_PASSWORD``, and a renewed pair, its key encrypted too, is loaded with it
    (the reload, on the event loop, prompted as well)."""
    monkeypatch.setattr(sip_transport, "RELOAD_EVERY", 0.05)
    ca = TestCA(tmp_path)
    pair = ca.issue("bridge", "localhost", "127.0.0.1")
    key = encrypted(pair.key, tmp_path / "locked.key", PASSPHRASE)
    client = await make_client(
        engine="cloudapi",
        cloudapi_signalling="sip",
        sip_listen="127.0.0.1:0",
        sip_hostname="localhost",
        sip_cert=str(pair.cert),
        sip_key=str(key),
        sip_key_password=PASSPHRASE,
        sip_number=NUMBER,
        sip_meta_uri="sip:127.0.0.1:5999;transport=tls",
        sip_ca=str(ca.path),
    )
    ua = client.app[ENGINE].ua
    ctx = ssl.create_default_context(cafile=str(ca.path))

    async def served() -> bytes:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", ua.port, ssl=ctx, server_hostname="localhost"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    def der(path: Path) -> bytes:
        return ssl.PEM_cert_to_DER_cert(path.read_text())

    assert await served() == der(pair.cert)
    renewed = ca.issue("renewed", "localhost", "127.0.0.1")
    pair.cert.write_bytes(renewed.cert.read_bytes())
    encrypted(renewed.key, key, PASSPHRASE)
    await until(lambda: ua.transport.certs.reloads == 1, 3, "the renewed pair loaded")
    assert await served() == der(renewed.cert)


async def test_a_numbers_own_encrypted_key_opens_with_the_same_passphrase(
    make_client, meta, tmp_path: Path
) -> None:
    """A number with its own certificate (``cloudapi.sipCert``/``sipKey``) is loaded by the
    same loader: its encrypted key refused with a 400 naming the file and the setting while
    the passphrase is not set (it was OpenSSL's prompt, or its bare "PEM lib"), and served
    by name (SNI) beside the deployment's pair once it is."""
    ca = TestCA(tmp_path)
    pair, own = ca.issue("bridge", "localhost"), ca.issue("own", "sip.customer.example")
    meta.add_number("2098765432", "second-token")
    body = {
        "phone": "+15550004444",
        "engine": "cloudapi",
        "cloudapi": {
            **meta.number_fields("2098765432"),
            "signalling": "sip",
            "sipHostname": "sip.customer.example",
            "sipCert": str(own.cert),
            "sipKey": str(encrypted(own.key, tmp_path / "own.key", PASSPHRASE)),
        },
    }
    admin = {"Authorization": "Bearer admin-token"}
    port = free_port()
    settings = {
        **meta.bridge_settings(),
        "api_tokens": ("admin-token",),
        "sip_listen": f"127.0.0.1:{port}",
        "sip_hostname": "localhost",
        "sip_cert": str(pair.cert),
        "sip_key": str(pair.key),  # the deployment's own: not encrypted
        "sip_number": NUMBER,
        "cloudapi_signalling": "sip",
    }
    locked = await make_client(**settings, data_dir=str(tmp_path / "a"))
    resp = await locked.post("/numbers", json=body, headers=admin)
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["code"] == "sip_not_configured", error
    assert "BRIDGE_SIP_KEY_PASSWORD" in error["message"], error
    assert str(tmp_path / "own.key") in error["message"], error
    await locked.close()

    opened = await make_client(
        **settings, data_dir=str(tmp_path / "b"), sip_key_password=PASSPHRASE
    )
    resp = await opened.post("/numbers", json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    ctx = ssl.create_default_context(cafile=str(ca.path))

    async def shown(name: str) -> bytes:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    want = ssl.PEM_cert_to_DER_cert(own.cert.read_text())

    async def serves_its_own() -> bool:
        return await shown("sip.customer.example") == want

    await until(serves_its_own, 5, "the number's own pair served by its name")
    assert await shown("localhost") == ssl.PEM_cert_to_DER_cert(pair.cert.read_text())


async def test_a_numbers_own_key_opens_with_its_own_passphrase(
    make_client, meta, tmp_path: Path
) -> None:
    """A platform's customers bring their own certificate: a number's encrypted ``sipKey``
    opens with its own ``cloudapi.sipKeyPassword`` (write-only, like every secret), not the
    deployment's; a wrong one is a 400 naming that field; the field needs the key it opens."""
    ca = TestCA(tmp_path)
    pair, own = ca.issue("bridge", "localhost"), ca.issue("own", "sip.customer.example")
    deployment_key = encrypted(pair.key, tmp_path / "deployment.key", PASSPHRASE)
    meta.add_number("2098765432", "second-token")
    block = {
        **meta.number_fields("2098765432"),
        "signalling": "sip",
        "sipHostname": "sip.customer.example",
        "sipCert": str(own.cert),
        "sipKey": str(encrypted(own.key, tmp_path / "own.key", "the customer's")),
    }
    admin = {"Authorization": "Bearer admin-token"}
    port = free_port()
    client = await make_client(
        **meta.bridge_settings(),
        api_tokens=("admin-token",),
        sip_listen=f"127.0.0.1:{port}",
        sip_hostname="localhost",
        sip_cert=str(pair.cert),
        sip_key=str(deployment_key),
        sip_key_password=PASSPHRASE,
        sip_number=NUMBER,
        cloudapi_signalling="sip",
        data_dir=str(tmp_path / "data"),
    )

    async def made(cloudapi: dict, status: int) -> dict:
        body = {"phone": "+15550004444", "engine": "cloudapi", "cloudapi": cloudapi}
        resp = await client.post("/numbers", json=body, headers=admin)
        assert resp.status == status, await resp.text()
        return await resp.json()

    # The deployment's passphrase is not the customer's key's.
    error = (await made(block, 400))["error"]
    assert error["code"] == "sip_not_configured", error
    assert "BRIDGE_SIP_KEY_PASSWORD" in error["message"], error
    error = (await made({**block, "sipKeyPassword": "a wrong one"}, 400))["error"]
    assert error["code"] == "sip_not_configured", error
    assert "'cloudapi.sipKeyPassword' is not its passphrase" in error["message"], error
    alone = {k: v for k, v in block.items() if k not in ("sipCert", "sipKey", "sipHostname")}
    error = (await made({**alone, "sipKeyPassword": "the customer's"}, 400))["error"]
    assert error["code"] == "invalid_engine" and "sipKeyPassword" in error["message"], error

    view = await made({**block, "sipKeyPassword": "the customer's"}, 201)
    assert view["cloudapi"]["sipKeyPasswordSet"] is True, view
    assert "the customer's" not in json.dumps(view)
    listed = await client.get(f"/numbers/{view['numberID']}", headers=admin)
    assert "the customer's" not in await listed.text()

    async def serves_its_own() -> bool:
        return await peer_names(port, str(ca.path), "sip.customer.example") == [
            "sip.customer.example"
        ]

    await until(serves_its_own, 5, "the number's own pair served by its name")
    assert "localhost" in await peer_names(port, str(ca.path), "localhost")

    # Back to the deployment's pair: the number's own key and its passphrase both go (an
    # optional secret is removed with null, as an optional field is).
    gone = {"sipCert": None, "sipKey": None, "sipKeyPassword": None, "sipHostname": None}
    resp = await client.patch(
        f"/numbers/{view['numberID']}", json={"cloudapi": gone}, headers=admin
    )
    assert resp.status == 200, await resp.text()
    assert "sipKeyPasswordSet" not in (await resp.json())["cloudapi"]
