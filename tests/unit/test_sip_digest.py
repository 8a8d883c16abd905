"""Digest for SIP with SHA-256 and MD5 (RFC 7616, RFC 8760): the RFC's own worked example,
the choice among a 407's challenges as Meta's edge sends them (SHA-256 first, MD5 second,
each with its own nonce and opaque), the reasons given when none can be answered, and a
server that offers and checks both."""

from __future__ import annotations

import hashlib

import pytest

from bridge.sip import DigestServer, Verdict, authorize
from bridge.sip.digest import Challenge, DigestError, choose, parse_params, response_for

META_SHA256 = (
    'Digest realm="wa.meta.vc", nonce="n-sha", opaque="o-sha", algorithm=SHA-256, qop="auth"'
)
META_MD5 = 'Digest realm="wa.meta.vc", nonce="n-md5", opaque="o-md5", algorithm=MD5, qop="auth"'


def _h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


def test_rfc_7616_sha256_and_md5_example():
    # RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    args = (
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert (
        response_for(*args, algorithm="SHA-256")
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert response_for(*args, algorithm="MD5") == "8ca523f5e9506fed4657c9700eebdbec"


def _fields(header: str) -> dict[str, str]:
    return parse_params(header)


def _expected(fields: dict[str, str], name: str, password: str, method: str = "INVITE") -> str:
    ha1 = _h(name, f"{fields['username']}:{fields['realm']}:{password}")
    ha2 = _h(name, f"{method}:{fields['uri']}")
    return _h(name, f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")


@pytest.mark.parametrize("order", ["sha-first", "md5-first"])
def test_meta_two_challenges_are_answered_with_sha256(order):
    challenges = [META_SHA256, META_MD5] if order == "sha-first" else [META_MD5, META_SHA256]
    uri = "sip:+5521999999999@wa.meta.vc;transport=tls"
    header = authorize(challenges, "INVITE", uri, "15550009999", "pw")
    fields = _fields(header)
    # SHA-256's own nonce and opaque, never the MD5 challenge's.
    assert fields["algorithm"] == "SHA-256"
    assert fields["nonce"] == "n-sha" and fields["opaque"] == "o-sha"
    assert fields["uri"] == uri and fields["qop"] == "auth" and fields["nc"] == "00000001"
    assert fields["response"] == _expected(fields, "sha256", "pw")


def test_falls_back_to_md5_when_sha256_is_not_offered_or_not_answerable():
    sha512 = META_SHA256.replace("SHA-256", "SHA-512")  # not a digest algorithm of RFC 7616
    fields = _fields(authorize([sha512, META_MD5], "INVITE", "sip:x@y", "u", "pw"))
    assert fields["algorithm"] == "MD5" and fields["nonce"] == "n-md5"
    assert fields["response"] == _expected(fields, "md5", "pw")
    int_only = META_SHA256.replace('qop="auth"', 'qop="auth-int"')
    assert choose([int_only, META_MD5]).algorithm == "MD5"


def test_none_answerable_names_each_challenge_and_why():
    with pytest.raises(DigestError) as err:
        choose(
            [
                META_SHA256.replace("SHA-256", "SHA-512"),
                META_MD5.replace('qop="auth"', 'qop="auth-int"'),
                'Basic realm="x"',
            ]
        )
    text = str(err.value)
    assert "challenge 1 of 3: algorithm=SHA-512 is not one we support" in text
    assert "challenge 2 of 3: algorithm=MD5: qop=auth-int (we do auth)" in text
    assert "challenge 3 of 3: scheme 'Basic' is not Digest" in text
    with pytest.raises(DigestError, match="carries no challenge"):
        choose([])
    with pytest.raises(DigestError, match="no realm or nonce"):
        choose(['Digest algorithm=MD5, qop="auth"'])


def test_sess_and_no_qop_variants():
    ch = Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth"')
    fields = _fields(ch.answer("INVITE", "sip:a@b", "u", "pw"))
    ha1 = _h("sha256", f"{_h('sha256', 'u:r:pw')}:n:{fields['cnonce']}")
    ha2 = _h("sha256", "INVITE:sip:a@b")
    assert fields["response"] == _h("sha256", f"{ha1}:n:00000001:{fields['cnonce']}:auth:{ha2}")
    # RFC 2069 (no qop): no nc or cnonce is sent.
    plain = _fields(authorize('Digest realm="r", nonce="n"', "INVITE", "sip:a@b", "u", "pw"))
    assert "nc" not in plain and "cnonce" not in plain and plain["algorithm"] == "MD5"
    ha1, ha2 = _h("md5", "u:r:pw"), _h("md5", "INVITE:sip:a@b")
    assert plain["response"] == _h("md5", f"{ha1}:n:{ha2}")


def test_quotes_in_names_are_escaped_and_read_back():
    header = authorize(META_MD5, "INVITE", "sip:x@y", 'we"ird\\', "pw")
    assert _fields(header)["username"] == 'we"ird\\'


def test_server_offers_sha256_and_md5_each_with_its_own_nonce_and_checks_both():
    server = DigestServer("wa.meta.vc", "15550009999", "s3cret", algorithms=("SHA-256", "MD5"))
    offered = server.challenges()
    assert [_fields(v)["algorithm"] for v in offered] == ["SHA-256", "MD5"]
    assert _fields(offered[0])["nonce"] != _fields(offered[1])["nonce"]
    assert _fields(offered[0])["opaque"] != _fields(offered[1])["opaque"]
    sha = authorize(offered, "INVITE", "sip:x@y", "15550009999", "s3cret")
    assert _fields(sha)["algorithm"] == "SHA-256"
    assert server.verify("INVITE", [sha]) is Verdict.OK
    md5 = Challenge.parse(offered[1]).answer("INVITE", "sip:x@y", "15550009999", "s3cret")
    assert server.verify("INVITE", [md5]) is Verdict.OK
    wrong = authorize(server.challenges(), "INVITE", "sip:x@y", "15550009999", "nope")
    assert server.verify("INVITE", [wrong]) is Verdict.WRONG
    assert all("stale=true" in v for v in server.challenges(stale=True))


def test_server_refuses_an_algorithm_it_did_not_offer_and_odd_input():
    md5_only = DigestServer("wa.meta.vc", "u", "pw")
    ours = META_SHA256.replace("n-sha", md5_only.new_nonce())
    sha = authorize(ours, "INVITE", "sip:x", "u", "pw")
    assert md5_only.verify("INVITE", [sha]) is Verdict.MISSING  # asked again, as offered
    good = authorize(md5_only.challenge(), "INVITE", "sip:x", "u", "pw")
    mangled = good.replace(_fields(good)["response"], "ü" * 32)
    assert md5_only.verify("INVITE", [mangled]) is Verdict.WRONG  # not a crash
    with pytest.raises(KeyError):
        DigestServer("r", "u", "p", algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestServer("r", "u", "p", algorithms=("MD5-sess",))


def test_uac_answers_a_stale_second_407_once_more_and_no_more():
    from types import SimpleNamespace

    from bridge.sip import InviteClient, Response

    ua = SimpleNamespace(number="15550009999", hostname="sip.example.com")
    uac = InviteClient(
        ua,  # type: ignore[arg-type]
        meta_uri="sip:wa.meta.vc;transport=tls",
        callee="5521999999999",
        sdp=b"v=0\r\n",
        username="15550009999",
        password="pw",
        call_id="c1",
    )
    assert uac.digest_uri == "sip:+5521999999999@wa.meta.vc;transport=tls"

    def challenge(stale: bool) -> Response:
        resp = Response(status=407, reason="Proxy Authentication Required")
        for value in (META_SHA256, META_MD5):
            resp.add("Proxy-Authenticate", value + (", stale=true" if stale else ""))
        return resp

    header, answer = uac._authorization(challenge(False), 0) or ("", "")
    assert header == "Proxy-Authorization" and parse_params(answer)["algorithm"] == "SHA-256"
    assert uac._authorization(challenge(True), 1) and uac.auth_failure == ""  # a fresh nonce
    assert uac._authorization(challenge(True), 2) is None  # stale again: give up, and say so
    assert "Meta refused our SHA-256 digest answer" in uac.auth_failure
    uac.auth_failure = ""
    assert uac._authorization(challenge(False), 1) is None  # not stale: our answer was refused
    assert "Meta refused our SHA-256 digest answer" in uac.auth_failure
    assert "uri sip:+5521999999999@wa.meta.vc;transport=tls" in uac.auth_failure
