"""SIP messages, URIs, addresses and Via (RFC 3261 §7, §19, §20) and digest (RFC 2617;
SHA-256 and the choice among challenges: ``test_sip_digest.py``)."""

from __future__ import annotations

import pytest

from bridge.sip import Address, DigestServer, Uri, Verdict, Via, authorize, parse
from bridge.sip.digest import parse_params, response_for
from bridge.sip.message import MAX_HEAD, Request, SipParseError, split_list

INVITE = (
    b"INVITE sip:+15550009999@bridge.example.com;transport=tls SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKabc;rport\r\n"
    b"Via: SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKdef\r\n"
    b"Record-Route: <sip:proxy1.wa.meta.vc:5061;transport=tls;lr>,\r\n"
    b" <sip:proxy2.wa.meta.vc;transport=tls;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'f: "Ana" <sip:+15550001111@wa.meta.vc>;tag=meta1\r\n'
    b"t: <sip:+15550009999@bridge.example.com>\r\n"
    b"i: outgoing:wacid.HBgLMTU1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"m: <sip:+15550001111@wa.meta.vc;transport=tls;ob>\r\n"
    b"x-wa-meta-wacid: wacid.HBgLMTU1\r\n"
    b"c: application/sdp\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def test_parse_invite_expands_compact_forms_unfolds_and_splits_lists():
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:+15550009999@bridge.example.com;transport=tls")
    assert msg.call_id == "outgoing:wacid.HBgLMTU1"
    assert msg.cseq == (1, "INVITE")
    assert msg.get("x-wa-meta-wacid") == "wacid.HBgLMTU1"
    assert msg.get("Content-Type") == "application/sdp"
    assert msg.values("Record-Route") == [
        "<sip:proxy1.wa.meta.vc:5061;transport=tls;lr>",
        "<sip:proxy2.wa.meta.vc;transport=tls;lr>",
    ]
    assert len(msg.values("Via")) == 2
    assert msg.body == b"v=0\r\n"
    again = parse(msg.to_bytes())
    assert again.headers == msg.headers and again.body == msg.body


def test_addresses_uris_and_via():
    frm = Address.parse('"Ana" <sip:+15550001111@wa.meta.vc>;tag=meta1')
    assert (frm.display, frm.uri.user, frm.uri.host, frm.tag) == (
        '"Ana"',
        "+15550001111",
        "wa.meta.vc",
        "meta1",
    )
    bare = Address.parse("sip:alice@example.com;tag=x")  # addr-spec: ;tag is the header's
    assert bare.tag == "x" and bare.uri.params == {}
    uri = Uri.parse("sip:proxy1.wa.meta.vc:5070;transport=tls;lr")
    assert uri.loose and uri.destination() == ("proxy1.wa.meta.vc", 5070)
    assert Uri.parse("sip:wa.meta.vc;transport=tls").destination() == ("wa.meta.vc", 5061)
    assert Uri.parse("sip:[::1]:5061").destination() == ("::1", 5061)
    via = Via.parse("SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKabc;rport")
    assert (via.transport, via.host, via.port, via.branch) == (
        "TLS",
        "10.0.0.1",
        5061,
        "z9hG4bKabc",
    )
    assert split_list('"a,b" <sip:x@y>, <sip:z@w;p=1,2>') == ['"a,b" <sip:x@y>', "<sip:z@w;p=1,2>"]


@pytest.mark.parametrize(
    "data, why",
    [
        (b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n", "blank line"),
        (b"HELLO\r\n\r\n", "start line"),
        (b"INVITE http://x SIP/2.0\r\n\r\n", "Request-URI"),
        (b"INVITE sip:x@y SIP/2.0\r\nBad Header\r\n\r\n", "header line"),
        (b"INVITE sip:x@y SIP/2.0\r\n folded: first\r\n\r\n", "continuation"),
        (b"INVITE sip:x@y SIP/2.0\r\nCall-ID: a\r\n\r\n", "missing"),
        (
            b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>"
            b";tag=1\r\nTo: <sip:c@d>\r\nCall-ID: a\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            "CSeq method",
        ),
        (b"INVITE sip:x@y SIP/2.0\r\nContent-Length: 99999999\r\n\r\n", "body too large"),
        (b"INVITE sip:x@y SIP/2.0\r\nX: \xff\xfe\r\n\r\n", "UTF-8"),
        (b"INVITE sip:x@y SIP/2.0\r\nX: a\x00b\r\n\r\n", "control"),
        (b"INVITE sip:x@y SIP/2.0\r\n" + b"X: y\r\n" * 200 + b"\r\n", "too many"),
        (b"INVITE sip:x@y SIP/2.0\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n", "too large"),
    ],
)
def test_malformed_messages_say_why(data, why):
    with pytest.raises(SipParseError, match=why):
        parse(data)


def test_header_values_cannot_smuggle_lines():
    msg = parse(INVITE)
    with pytest.raises(ValueError):
        msg.set("Subject", "x\r\nInjected: yes")


def test_digest_matches_rfc_2617_example():
    # RFC 2617 §3.5's worked example (qop=auth).
    resp = response_for(
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "00000001",
        "0a4f113b",
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _answer(server: DigestServer, password: str, nc: int = 1, uri: str = "sip:x@y") -> str:
    challenge = server.challenge()
    return authorize(challenge, "INVITE", uri, server.username, password, nc=nc)


def test_digest_server_accepts_once_and_challenges_stale_or_replayed_nonces():
    clock = Clock()
    server = DigestServer("wa.meta.vc", "15550009999", "s3cret", lifetime=30, clock=clock)
    assert server.verify("INVITE", []) is Verdict.MISSING
    good = _answer(server, "s3cret")
    assert parse_params(good)["username"] == "15550009999"
    assert server.verify("INVITE", [good]) is Verdict.OK
    assert server.verify("INVITE", [good]) is Verdict.STALE  # the same nc again: a replay
    assert server.verify("INVITE", [_answer(server, "wrong")]) is Verdict.WRONG
    late = _answer(server, "s3cret")
    clock.now += 31
    assert server.verify("INVITE", [late]) is Verdict.STALE  # expired
    assert "stale=true" in server.challenge(stale=True)
    # A nonce another server issued (or a forged one) is not ours: challenge again.
    other = DigestServer("wa.meta.vc", "15550009999", "s3cret", clock=clock)
    assert server.verify("INVITE", [_answer(other, "s3cret")]) is Verdict.MISSING
    # Credentials for another realm are not ours either.
    foreign = good.replace('realm="wa.meta.vc"', 'realm="elsewhere"')
    assert server.verify("INVITE", [foreign]) is Verdict.MISSING
    # The wrong method (a response computed for another request) does not pass.
    bye = authorize(server.challenge(), "BYE", "sip:x@y", "15550009999", "s3cret")
    assert server.verify("INVITE", [bye]) is Verdict.WRONG


def test_digest_client_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError):
        authorize('Digest realm="r", nonce="n", algorithm=SHA-512', "INVITE", "sip:x", "u", "p")
    with pytest.raises(ValueError):
        authorize('Basic realm="r"', "INVITE", "sip:x", "u", "p")
    assert parse_params('Digest realm="a\\"b", nonce=xyz') == {"realm": 'a"b', "nonce": "xyz"}
    assert parse_params('Digest realm="unterminated') == {}


@pytest.mark.parametrize(
    ("call_id", "header", "key"),
    [
        ("outgoing:wacid.HBgLMTU1", "wacid.HBgLMTU1", "wacid.HBgLMTU1"),
        ("outgoing:wacid.HBgLMTU1", "", "wacid.HBgLMTU1"),  # the header left out
        ("a84b4c76e66710@pc33", "", "a84b4c76e66710@pc33"),  # not Meta's shape: kept whole
        ("outgoing:other", "", "outgoing:other"),
    ],
)
def test_metas_invite_is_keyed_by_its_wacid_with_or_without_the_header(
    call_id: str, header: str, key: str
) -> None:
    """The wacid keys a call on both roads, so the number's ``calls`` webhooks beside SIP
    find it: from ``x-wa-meta-wacid``, else from the Call-ID Meta makes of it
    (``outgoing:<wacid>``); it was the whole Call-ID, which no webhook names."""
    from bridge.engines.cloudapi.sip_calls import engine_call_id

    raw = INVITE.replace(b"i: outgoing:wacid.HBgLMTU1", b"i: " + call_id.encode())
    raw = raw.replace(
        b"x-wa-meta-wacid: wacid.HBgLMTU1\r\n",
        b"x-wa-meta-wacid: %s\r\n" % header.encode() if header else b"",
    )
    msg = parse(raw)
    assert isinstance(msg, Request)
    assert engine_call_id(msg) == key


@pytest.mark.parametrize(
    ("from_user", "duration", "peer", "seconds"),
    [
        ("+15550001111", "12", "15550001111", 12),
        ("+\u00b9\u00b2\u00b3", "\u00b2", "", None),  # superscripts: str.isdigit, not int
        ("+\u0661\u0662\u0663", "\u0661\u0662", "", None),  # Arabic-Indic: not a phone
    ],
)
def test_metas_numbers_are_ascii_digits(
    from_user: str, duration: str, peer: str, seconds: int | None
) -> None:
    """The caller's number and Meta's call duration are ASCII digits (a BYE whose duration was
    ``²`` raised in the engine's BYE handler after the call was dropped: its end was never
    reported, so the bridge kept the call up)."""
    from bridge.engines.cloudapi.sip_calls import call_duration, peer_number

    raw = INVITE.replace(b"+15550001111@wa.meta.vc>;tag", f"{from_user}@wa.meta.vc>;tag".encode())
    raw = raw.replace(b"CSeq:", f"x-wa-meta-call-duration: {duration}\r\nCSeq:".encode())
    msg = parse(raw)
    assert isinstance(msg, Request)
    assert (peer_number(msg), call_duration(msg)) == (peer, seconds)
