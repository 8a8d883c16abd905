"""Meta's SIP road over TLS, as SIPp reaches it: hundreds of OPTIONS, each on a TLS connection
of its own (SIPp's one socket per call behind the socat hop, tests/support/sipp.py), twenty
at a time, into a bridge on the SIP road. Every one is answered within 3 s (a handshake that
stalled waited out the listener's 10 s; tests/sip/test_tls_handshakes.py has the cause), so a
single stall fails the run. On uvloop, which the bridge runs on, the listener before that fix
failed this at once (dozens of the 300 timed out); on asyncio it passed."""

from __future__ import annotations

import re

from ..support.loops import event_loop_policy  # noqa: F401  (both loops)
from .conftest import NUMBER

CONNECTIONS = 300


async def test_every_tls_connection_sipp_opens_is_answered_at_once(sip_rig):
    # Every SIPp connection reaches the bridge from the socat hop's one address, standing for
    # many of Meta's hosts: 20 at once, up to SIPp's 100 sockets (-max_socket) while closed ones
    # wind down. The per-source cap (32) is for one host, not this crowd.
    rig = await sip_rig(sip_max_connections_per_source=100)
    sipp = rig.sipp("options_ping.xml")
    await rig.hops.start(rig.engine.ua.port, sipp.port)
    await sipp.start(
        remote=rig.hops.to_bridge,
        keys={"business": NUMBER, "bridge_host": "localhost"},
        transport="tn",
        calls=CONNECTIONS,
        extra=("-r", "100", "-l", "20", "-max_socket", "100"),  # 100 a second, 20 open at once
    )
    code = await sipp.finish(timeout=60)
    assert code == 0, f"SIPp: {code}{sipp.report()}"
    trace = sipp.sent_and_received()
    answered = re.findall(r"^SIP/2\.0 200 OK", trace, re.M)
    assert len(answered) == CONNECTIONS, sipp.report()
    # One TLS connection per OPTIONS: as many connections as the bridge's listener accepted.
    assert len(set(re.findall(r"^Call-ID: (\S+)", trace, re.M))) == CONNECTIONS
