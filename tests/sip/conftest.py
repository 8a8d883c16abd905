"""Fixtures of the SIP tests: a test CA with the bridge's and the fake Meta's certificates, a
bridge on Meta's SIP road, and SIPp behind its TLS hops (``tests/support/sipp.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.api.keys import ENGINE, MANAGER
from bridge.resources import CALL_EVENTS

from ..support.baresip_phone import BaresipPhone
from ..support.requires import require
from ..support.sipp import Sipp, TlsHops, tools_missing
from ..support.tls import CertPair, TestCA

NUMBER = "15550009999"
PASSWORD = "s3cret-from-meta"


@dataclass
class SipRig:
    """A bridge on the SIP road, its certificates, SIPp's TLS hops, and every call event."""

    dir: Path
    ca: TestCA
    bridge_cert: CertPair
    meta_cert: CertPair
    hops: TlsHops
    client: Any = None
    events: list[Any] = field(default_factory=list)
    sipps: list[Sipp] = field(default_factory=list)

    @property
    def engine(self) -> Any:
        return self.client.app[ENGINE]

    def sipp(self, scenario: str, **subst: str) -> Sipp:
        run = Sipp(self.dir, scenario, subst)
        self.sipps.append(run)
        return run

    def ended(self, call_id: str) -> Any:
        for event in self.events:
            if event.type == "call.ended" and event.call["callID"] == call_id:
                return event
        return None


@pytest.fixture
async def sip_rig(make_client: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Any]:
    """``await sip_rig(**settings)``: the rig, its bridge started (SIPp not yet)."""
    why = tools_missing()
    require(not why, why, "make system-deps (Debian sip-tester and socat)")
    ca = TestCA(tmp_path)
    rig = SipRig(
        tmp_path,
        ca,
        ca.issue("bridge", "localhost", "127.0.0.1"),
        ca.issue("meta", "127.0.0.1", "localhost"),
        None,  # type: ignore[arg-type]
    )
    rig.hops = TlsHops(ca, rig.meta_cert, tmp_path)

    async def start(**overrides: Any) -> SipRig:
        settings = {
            "engine": "cloudapi",
            "cloudapi_signalling": "sip",
            "sip_listen": "127.0.0.1:0",
            "sip_hostname": "localhost",
            "sip_cert": str(rig.bridge_cert.cert),
            "sip_key": str(rig.bridge_cert.key),
            "sip_number": NUMBER,
            "sip_password": PASSWORD,
            "sip_meta_uri": f"sip:127.0.0.1:{rig.hops.from_bridge};transport=tls",
            "sip_ca": str(ca.path),
            **overrides,
        }
        rig.client = await make_client(**settings)
        rig.client.app[MANAGER].events.observe(lambda event, call: rig.events.append(event))
        return rig

    yield start
    for run in rig.sipps:
        await run.stop()
    await rig.hops.stop()


# -- SIP trunks (issue 48): a bridge with a trunk listener, and baresip phones behind a PBX
@pytest.fixture
async def bridge(make_client, tmp_path):
    """A bridge on the sim network (its peer a 440 Hz tone) with a trunk listener; its events
    in ``client.events``."""
    client = await make_client(
        sim_peer="tone",
        sim_tone_hz=440,
        data_dir=str(tmp_path),
        sip_trunk_listen="127.0.0.1:0",
    )
    events: list[Any] = []
    client.app[CALL_EVENTS].observe(lambda event, call: events.append(event))
    client.events = events
    return client


@pytest.fixture
async def phone(tmp_path):
    """Starts baresip phones (``sip:1001@127.0.0.1`` over UDP, a 660 Hz tone)."""
    conf = tmp_path / "phone"
    conf.mkdir()
    made: list[BaresipPhone] = []

    async def start(codec: str = "PCMU", srtp: bool = False) -> BaresipPhone:
        p = BaresipPhone(conf, "1001", 660, codec)
        await p.start_phone(srtp=srtp)
        made.append(p)
        return p

    yield start
    for p in made:
        await p.stop()
