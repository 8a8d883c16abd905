"""Who may send us SIP (``bridge.sip.trust``): networks, certificate names, Via stamping."""

from __future__ import annotations

import ipaddress

from bridge.config import SipSettings
from bridge.sip import PeerPolicy, parse
from bridge.sip.transport import FIRST_MESSAGE_TIMEOUT, MAX_PER_SOURCE
from bridge.sip.trust import Share, cert_names, name_matches, source_address, source_key, stamp_via

META = "client.sip.fbclientcerts.com"


def test_certificate_names_and_wildcards():
    assert name_matches(META, META.upper() + ".")
    assert name_matches("*.sip.fbclientcerts.com", META)
    assert not name_matches("*.fbclientcerts.com", META)  # one label only (RFC 6125 §6.4.3)
    assert not name_matches("client.sip.fbclientcerts.com.evil", META)
    cert = {"subject": ((("commonName", "cn.example"),),), "subjectAltName": (("DNS", META),)}
    assert cert_names(cert) == [META]
    assert cert_names({"subject": ((("commonName", "cn.example"),),)}) == ["cn.example"]
    assert cert_names(None) == [] and cert_names({}) == []


def test_policy_networks_and_names():
    nets = (ipaddress.ip_network("31.13.24.0/21"), ipaddress.ip_network("2a03:2880::/32"))
    policy = PeerPolicy(nets)
    assert policy.refusal("31.13.31.1", None) == ""
    assert policy.refusal("::ffff:31.13.24.9", None) == ""  # a dual-stack listener's view
    assert policy.refusal("2a03:2880:f0ff::1", None) == ""
    assert "not in BRIDGE_SIP_TRUSTED_NETWORKS" in policy.refusal("192.0.2.1", None)
    assert "not in" in policy.refusal("?", None)  # no address: refused, not a crash
    assert source_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    named = PeerPolicy(client_name=META)
    assert named.refusal("1.2.3.4", {"subjectAltName": (("DNS", META),)}) == ""
    assert "no client certificate" in named.refusal("1.2.3.4", None)
    other = named.refusal("1.2.3.4", {"subjectAltName": (("DNS", "x.example"),)})
    assert "names x.example, not " + META in other
    assert PeerPolicy().refusal("192.0.2.1", None) == ""  # nothing configured: anyone


def test_a_source_is_its_address_and_an_ipv6_one_its_64():
    """What the listener counts per source: one host given a /64 (RFC 7421) is one source,
    however many of its addresses it connects from."""
    assert source_key("::ffff:192.0.2.7") == source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("2001:db8:0:1::1") != source_key("2001:db8::1")
    assert source_key("?") == "?"


def test_the_share_of_a_source():
    assert PeerPolicy().share("192.0.2.1") is Share.ANY  # no networks: every source capped
    policy = PeerPolicy((ipaddress.ip_network("31.13.24.0/21"),))
    assert policy.share("31.13.24.1") is Share.TRUSTED
    assert policy.share("192.0.2.1") is Share.UNTRUSTED
    # The listener's defaults are the settings' (a listener made without settings: tests).
    sip = SipSettings()
    assert sip.sip_max_connections_per_source == MAX_PER_SOURCE == PeerPolicy().per_source
    assert sip.sip_first_message_timeout == FIRST_MESSAGE_TIMEOUT


def test_via_stamping_ipv6_and_absent_via():
    msg = parse(
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKa;rport\r\n"
        b"f: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    stamp_via(msg, ("2001:db8::1", 5062))
    assert msg.get("Via").endswith(";rport=5062;received=2001:db8::1")
    msg.remove("Via")
    stamp_via(msg, ("192.0.2.1", 1))  # nothing to stamp: no error
    assert msg.get("Via") == ""
