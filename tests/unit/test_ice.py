"""The host-candidate hook: BRIDGE_ICE_ADDRESSES decides where aioice gathers."""

from __future__ import annotations

import aioice
import aioice.ice

from bridge.config import settings_for_tests
from bridge.rtc import restrict_host_addresses, server_rtc_configuration


async def test_gathers_only_on_configured_addresses() -> None:
    restrict_host_addresses(["127.0.0.1"])
    try:
        conn = aioice.Connection(ice_controlling=True)
        await conn.gather_candidates()
        hosts = {(c.host, c.type) for c in conn.local_candidates}
        assert hosts == {("127.0.0.1", "host")}
        await conn.close()
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        restrict_host_addresses(["::1", "127.0.0.1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(False, True) == ["::1"]
    finally:
        restrict_host_addresses([])
    # Empty restores aioice's own lookup, which never offers loopback.
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)
    restrict_host_addresses(["127.0.0.1"])


def test_server_configuration_never_falls_back_to_google() -> None:
    assert server_rtc_configuration(settings_for_tests().ice).iceServers == []
    conf = server_rtc_configuration(
        settings_for_tests(server_stun_urls=("stun:a.example:3478", "stun:b.example:3478")).ice
    )
    assert [s.urls for s in conf.iceServers] == ["stun:a.example:3478"]


def test_open_candidates_only_when_the_offer_has_none() -> None:
    from bridge.rtc.browser_sdp import open_candidates

    bare = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=end-of-candidates\r\na=mid:0\r\n"
    assert open_candidates(bare) == "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    full = bare.replace("a=mid:0", "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert open_candidates(full) == full
    trickle = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    assert open_candidates(trickle) == trickle
    host = "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"
    mdns = "a=candidate:2 1 udp 2130706431 3f1c-9a.local 5001 typ host\r\n"
    head, tail = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a=end-of-candidates\r\na=mid:0\r\n"
    # An mDNS name cannot be resolved off the browser's network: dropped, then none is left.
    assert open_candidates(head + mdns + tail) == open_candidates(bare)
    assert open_candidates(head + host + mdns + tail) == head + host + tail
