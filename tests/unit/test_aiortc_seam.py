"""The one seam for aiortc's and aioice's internals (bridge/rtc/aiortc_seam.py): every private
name the bridge touches is checked at import, and a missing one fails clearly."""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from pathlib import Path

import aioice.ice
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from bridge.rtc import aiortc_seam, hooks

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_aiortc_has_everything() -> None:
    assert aiortc_seam.missing() == []
    aiortc_seam.verify()


@pytest.mark.parametrize(
    ("owner", "name", "replacement", "named"),
    [
        (RTCDtlsTransport, "_set_state", None, "RTCDtlsTransport._set_state"),
        (aioice.ice.Connection, "_nominated", None, None),  # an instance attribute: see below
        (RTCDtlsTransport, "__init__", lambda self: None, "RTCDtlsTransport.__init__: _tx_srtp"),
        (
            aioice.ice.Connection,
            "data_received",
            lambda self, data, component: None,
            "Connection.data_received: _queue",
        ),
    ],
)
def test_a_missing_name_fails_clearly_with_the_supported_versions(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, replacement: object, named: str | None
) -> None:
    if named is None:  # set in __init__: gone when __init__ no longer names it
        monkeypatch.setattr(owner, "__init__", lambda self: None)
        named = "Connection.__init__: _nominated"
    elif replacement is None:
        monkeypatch.delattr(owner, name)
    else:
        monkeypatch.setattr(owner, name, replacement)
    with pytest.raises(aiortc_seam.SeamError) as caught:
        aiortc_seam.verify()
    message = str(caught.value)
    assert named in message
    assert "aiortc>=1.16,<1.17" in message and "aiortc_seam.py" in message
    assert re.search(r"aiortc \d+\.\d+", message)  # the version found


def test_the_supported_versions_are_the_pins_of_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package, spec in aiortc_seam.SUPPORTED.items():
        assert any(d.replace(" ", "") == package + spec for d in deps), (package, deps)


def test_no_other_module_touches_aiortc_or_aioice_privates() -> None:
    """Outside the seam, no ``obj._name`` on an aiortc/aioice object and no name-mangled
    attribute: an aiortc upgrade is a one-file change."""
    offenders = []
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        if path.name == "aiortc_seam.py":
            continue
        text = path.read_text()
        if "_RTCRtp" in text or "_RTCDtls" in text:
            offenders.append(f"{path.name}: a name-mangled aiortc attribute")
        if "aiortc" not in text and "aioice" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__") or node.attr.startswith("_bridge_"):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "os", "sys"):
                continue
            if isinstance(base, ast.Attribute) and base.attr == "ORIGINAL":
                continue
            if isinstance(base, ast.Name) and base.id in ("dtls", "sender", "receiver", "ice"):
                offenders.append(f"{path.name}:{node.lineno}: {base.id}.{node.attr}")
            elif isinstance(base, ast.Name) and base.id in ("aioice", "aiortc"):
                offenders.append(f"{path.name}:{node.lineno}: {base.id}.{node.attr}")
    assert offenders == []


REQUIRED_CAP = 13
"""Private aiortc/aioice functions and attributes the bridge relies on (issue 47: 36 when
counted; 34 since the receive statistics are the bridge's own, audio/reception.py; 19 since
every leg's RTP session is the bridge's own, rtc/rtp_session.py, and aiortc's sender and
receiver never start; 12 since DTLS's failure reasons come from one hook on its state and
aiortc's DTLS receive loop sees DTLS records only: ICE, DTLS and the SRTP keys; 13 with the
consent checks' sleep on the worker clock, issue 61: an idle leg's last timer of its own,
through the ``asyncio`` the seam already gives aioice.ice). Lower it as the seam shrinks;
never raise it without a reason in the commit."""
PATCHES_CAP = 7


def test_the_seam_does_not_grow() -> None:
    assert len(aiortc_seam.REQUIRED) <= REQUIRED_CAP
    assert len(aiortc_seam.patches(hooks.HOOKS)) <= PATCHES_CAP
    patched = {(owner, name) for owner, name, _ in aiortc_seam.patches(hooks.HOOKS)}
    required = {(owner, name) for owner, name, _ in aiortc_seam.REQUIRED}
    # A module global the seam replaces is checked as a name its functions' code uses.
    required |= {
        (inspect.getmodule(owner), used)
        for owner, _, names in aiortc_seam.REQUIRED
        for used in names
    }
    assert patched <= required  # everything patched is checked at import
